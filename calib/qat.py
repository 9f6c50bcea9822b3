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


def float_twin(model: nn.Module) -> nn.Module:
    """A copy of a QAT model with fake quantisation off: the fp32 reference its INT8 export is gated against."""
    import copy

    from torch.ao.quantization import disable_fake_quant

    twin = copy.deepcopy(model)
    twin.apply(disable_fake_quant)
    return twin.eval()


@torch.no_grad()
def fold_batchnorms(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a fake-quantised conv in an nn.Sequential into that conv (in
    place, eval mode; returns how many). Without it the INT8 export keeps each BatchNorm as a float op between
    QLinearConvs (the QAT embedder ran 1.4x slower than its PTQ twin, whose graph ORT folds before quantising).

    Exact up to rounding: BN scales each output channel by f = gamma / sqrt(var + eps), and with per-channel symmetric
    weight quantisation the folded weight W f quantised at scale s |f| gives the same integers (sign flipped where
    f < 0) as W at scale s; only a weight at -128 in a channel with f < 0 clips to 127. The input quantiser stays put.
    """
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if not (isinstance(conv, QATConv2d) and isinstance(bn, nn.BatchNorm2d)) or bn.training:
                continue
            f = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.mul_(f.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter((bias - bn.running_mean) * f + bn.bias)
            conv.weight_fq.scale.mul_(f.abs())
            seq[i + 1] = nn.Identity()
            folded += 1
    if folded:
        log.info("QAT export: %d BatchNorms folded into their convs", folded)
    return folded


def fold_weight_quantizers(onnx_path) -> None:
    """Store QAT weights as int8 initializers (in place): a QuantizeLinear of a constant float weight
    is computed once, leaving only its DequantizeLinear. The TorchScript exporter keeps the float
    weight and the QuantizeLinear, which makes the file as big as fp32."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    # The exporter reaches some weights through Identity nodes: point their consumers at the weight.
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}
    if alias:
        kept = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
        for node in kept:
            node.input[:] = [alias.get(name, name) for name in node.input]
        del graph.node[:]
        graph.node.extend(kept)
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    keep_nodes, folded = [], 0
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and all(n in inits for n in node.input[:3]) and len(node.input) >= 3:
            x = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            zero = numpy_helper.to_array(inits[node.input[2]])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and scale.size > 1:
                shape = [1] * x.ndim
                shape[axis] = -1
                scale, zp = scale.reshape(shape), zero.astype(np.int32).reshape(shape)
            else:
                zp = zero.astype(np.int32)
            info = np.iinfo(zero.dtype)
            q = np.clip(np.round(x / scale) + zp, info.min, info.max).astype(zero.dtype)  # round half to even, as ONNX
            graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
            consumers[node.input[0]] -= 1
            folded += 1
            continue
        keep_nodes.append(node)
    del graph.node[:]
    graph.node.extend(keep_nodes)
    unused = [i for i in graph.initializer if consumers.get(i.name, 0) == 0 and not any(i.name == n for node in keep_nodes for n in node.input)]
    for init in unused:
        graph.initializer.remove(init)
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
    log.info("QAT export: %d weight quantisers folded into int8 initializers", folded)
