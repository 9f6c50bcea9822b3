"""Quantisation-aware fine-tuning: fake quantisation in the torch model, QDQ in its ONNX export.

`prepare_qat(model)` turns every Conv2d / Linear into a subclass that fake-quantises its input
(U8, per tensor, asymmetric: the activation layout ONNX Runtime runs fastest on x86) and its weight
(S8, per output channel, symmetric) with torch.ao FakeQuantize modules; the same layout as the
post-training path in finprint.calib.quantize. Parameter names stay the same (only fake-quant
buffers are added), so the optimiser, EMA and KD adapters need no change.

Observers learn ranges only in train mode; `model.eval()` freezes them, so validation and export
see fixed scales. `export_onnx(..., dynamo=False)` writes each FakeQuantize as a
QuantizeLinear/DequantizeLinear pair.

A QAT checkpoint has the fake-quant buffers in its state dict: rebuild with
`prepare_qat(registry.build(name))` before `load_state_dict` (see `load_qat_state`).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.ao.quantization import (
    FakeQuantize,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
)

log = logging.getLogger(__name__)


class _FakeQuant(FakeQuantize):
    """FakeQuantize whose observer follows train/eval mode (frozen ranges outside training)."""

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            self.enable_observer()
        else:
            self.disable_observer()
        return self


def _activation_fq() -> _FakeQuant:
    return _FakeQuant(
        observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8, qscheme=torch.per_tensor_affine
    )


def _weight_fq() -> _FakeQuant:
    return _FakeQuant(
        observer=MovingAveragePerChannelMinMaxObserver,
        quant_min=-128,
        quant_max=127,
        dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
    )


class QATConv2d(nn.Conv2d):
    input_fq: _FakeQuant
    weight_fq: _FakeQuant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.input_fq(x), self.weight_fq(self.weight), self.bias)


class QATLinear(nn.Linear):
    input_fq: _FakeQuant
    weight_fq: _FakeQuant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.input_fq(x), self.weight_fq(self.weight), self.bias)


_SWAPS: dict[type, type] = {nn.Conv2d: QATConv2d, nn.Linear: QATLinear}


def prepare_qat(model: nn.Module, skip: tuple[str, ...] = ()) -> nn.Module:
    """Add fake quantisation to every Conv2d/Linear of `model` (in place; returns it).

    `skip`: module names kept in float (e.g. the layers sensitivity analysis kept in fp32).
    Call it before building the optimiser; on an already prepared model it does nothing more.
    """
    swapped = 0
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for name, module in model.named_modules():
        target = _SWAPS.get(type(module))
        if target is None or name in skip:
            continue
        module.__class__ = target  # same parameters, same state-dict keys; only a new forward
        module.input_fq = _activation_fq().to(device)
        module.weight_fq = _weight_fq().to(device)
        module.input_fq.train(module.training)
        module.weight_fq.train(module.training)
        swapped += 1
    log.info("QAT: fake quantisation on %d layers", swapped)
    model.finprint_qat = True  # so loaders and export can tell
    return model


def is_qat(model: nn.Module) -> bool:
    return any(isinstance(m, (QATConv2d, QATLinear)) for m in model.modules())


def load_qat_state(model: nn.Module, state_dict: dict) -> nn.Module:
    """Load a checkpoint: prepares `model` for QAT first when the checkpoint holds fake-quant buffers."""
    if any(".input_fq." in k or ".weight_fq." in k for k in state_dict) and not is_qat(model):
        prepare_qat(model)
    model.load_state_dict(state_dict)
    return model
