"""A torch model behind the engine contract: `infer(dict[str, ndarray]) -> dict[str, ndarray]`.

Evaluation, the export gate and parity checks drive torch models and exported engines through
the same call (docs/CONTRACTS.md section 3).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TorchEngine:
    """Runs `model` in eval mode without gradients; the model takes one input tensor and returns a dict."""

    def __init__(self, model: nn.Module, device: str | torch.device | None = "cpu", input_name: str | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.input_name = input_name

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(inputs) != 1:
            raise ValueError(f"a torch model takes exactly one input, got {sorted(inputs)}")
        name, array = next(iter(inputs.items()))
        if self.input_name is not None and name != self.input_name:
            raise ValueError(f"expected input '{self.input_name}', got '{name}'")
        array = np.asarray(array)
        if array.dtype != np.float32 or array.ndim != 4:
            raise ValueError(f"input '{name}' must be float32 NCHW, got {array.dtype} {array.shape}")
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(array)).to(self.device))
        if isinstance(out, torch.Tensor):
            out = {"output": out}
        return {k: v.detach().float().cpu().numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}
