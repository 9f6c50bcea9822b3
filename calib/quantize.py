"""ONNX Runtime static INT8 quantisation to QDQ (QuantizeLinear/DequantizeLinear pairs).

Weights S8 per channel (symmetric), activations U8 (asymmetric): on x86 CPUs ONNX Runtime runs that
layout about 2x faster than fp32, while S8/S8 is barely faster. TensorRT reads the same QDQ graph.

Activation ranges are computed here with ORT's calibrators and passed to `quantize_static` through
its range cache: `quantize_static(calibrate_method=Entropy)` alone builds 128-bin histograms
(which makes it equal MinMax); real entropy calibration needs 2048 bins. The cache also lets the
sensitivity search re-quantise with other excluded nodes without calibrating again.

CPUs without VNNI (AVX2 only) can saturate U8 x S8 products; `reduce_range=True` (7-bit weights)
avoids that at a small cost in resolution.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from finprint.calib.calibset import CalibSet
from finprint.errors import FinprintError

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
QUANT_OPS = ("Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", "Resize", "Sigmoid", "Relu", "Clip", "MaxPool", "GlobalAveragePool")
COMPUTE_OPS = ("Conv", "MatMul", "Gemm")


def unquantized_ends(graph: onnx.GraphProto) -> list[str]:
    """Non-compute nodes before the first or after the last Conv/MatMul/Gemm, kept in fp32.

    After the last compute op sit the heads' decode arithmetic (anchor point +- distance, stride
    scaling, concatenation into the outputs) and the embedding's normalisation: quantising them
    saves nothing but puts the outputs on a 256-step grid, where box corners in input pixels move
    by up to half a pixel (that cost the farm's student 1.2 points of box mAP50-95, mAP50 unchanged).
    Before the first one sits input plumbing (the embedder's crop + mirror concatenation), whose own
    quantisation would clip the input twice. TensorRT runs both ends in float either way.
    """
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def reaches(node: onnx.NodeProto, step, memo: dict[str, bool]) -> bool:
        """Is a compute op reachable from `node` following `step` (iterative: graphs can be deep)?"""
        key = node.name or node.output[0]
        if key in memo:
            return memo[key]
        seen, stack, found = {key}, [node], False
        while stack and not found:
            for nxt in step(stack.pop()):
                if nxt.op_type in COMPUTE_OPS:
                    found = True
                    break
                k = nxt.name or nxt.output[0]
                if k not in seen:
                    seen.add(k)
                    stack.append(nxt)
        memo[key] = found
        return found

    def downstream(node: onnx.NodeProto):
        return [c for out in node.output for c in consumers.get(out, ())]

    def upstream(node: onnx.NodeProto):
        return [producer[i] for i in node.input if i in producer]

    down: dict[str, bool] = {}
    up: dict[str, bool] = {}
    return [
        n.name for n in graph.node
        if n.op_type in QUANT_OPS and n.op_type not in COMPUTE_OPS
        and (not reaches(n, downstream, down) or not reaches(n, upstream, up))
    ]


def softmax_feeders(graph: onnx.GraphProto) -> list[str]:
    """Compute ops whose output goes straight into a Softmax, kept in fp32: the embedder's colour bag turns a
    1x1 conv's logits (a range of hundreds) into soft bin assignments, and an 8-bit grid over that range moves
    each logit by about a unit, which reshuffles the histogram."""
    producer = {out: node for node in graph.node for out in node.output}
    feeders = []
    for softmax in (n for n in graph.node if n.op_type == "Softmax"):
        node = producer.get(softmax.input[0])
        while node is not None and node.op_type in ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze"):
            node = producer.get(node.input[0])  # layout only: the values are the compute op's
        if node is not None and node.op_type in COMPUTE_OPS:
            feeders.append(node.name)
    return feeders


def softmax_consumers(graph: onnx.GraphProto) -> list[str]:
    """Compute ops fed by a Softmax through layout ops and products, kept in fp32: the colour bag's histogram MatMul
    multiplies soft assignments whose useful values run from 1e-4 to 1, below an 8-bit grid's first step."""
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    found: list[str] = []
    todo = [n for n in graph.node if n.op_type == "Softmax"]
    seen: set[str] = set()
    while todo:
        node = todo.pop()
        for out in node.output:
            for user in users.get(out, []):
                if user.name in seen:
                    continue
                seen.add(user.name)
                if user.op_type in COMPUTE_OPS:
                    found.append(user.name)
                elif user.op_type in ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Mul"):
                    todo.append(user)
    return found


def softmax_neighbours(graph: onnx.GraphProto) -> list[str]:
    """The compute ops on either side of every Softmax (the colour bag's assignment and histogram): kept fp32 by every
    reduced-precision export, INT8 here and fp16 (export/fp16.py)."""
    return softmax_feeders(graph) + softmax_consumers(graph)


class _TensorReader:
    """CalibrationDataReader over the calibration tensors, one image per call."""

    def __init__(self, input_name: str, tensors: np.ndarray) -> None:
        self.input_name = input_name
        self.tensors = tensors
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.tensors):
            return None
        batch = self.tensors[self.pos : self.pos + 1]
        self.pos += 1
        return {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:
        self.pos = 0

    def __len__(self) -> int:
        return len(self.tensors)

    def set_range(self, start_index: int, end_index: int) -> None:  # used by ORT's strided calibration
        self.pos = start_index


def _method_enum(method: str):
    from onnxruntime.quantization import CalibrationMethod

    if method not in METHODS:
        raise FinprintError(f"unknown calibration method '{method}'; choose one of {', '.join(METHODS)}")
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method]


def preprocess_for_quantization(fp32_path: str | Path, out_path: str | Path) -> Path:
    """ORT's recommended pre-pass: graph optimisation (constant folding, Identity removal so biases
    are initializers) and shape inference. Calibration, quantisation and sensitivity all work on
    this graph so node and tensor names agree between them."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    return Path(out_path)


def compute_ranges(fp32_path: str | Path, calib: CalibSet, method: str, cache_path: str | Path, percentile: float = 99.999) -> Path:
    """Calibrate activation ranges of `fp32_path` on `calib` and write them to `cache_path`."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    if len(calib) == 0:
        raise FinprintError(f"{calib.root}: the calibration set is empty")
    model = onnx.load(str(fp32_path))
    input_name = model.graph.input[0].name
    options: dict = {}
    if method == "entropy":
        options = {"num_bins": 2048, "num_quantized_bins": 128}
    elif method == "percentile":
        options = {"num_bins": 2048, "percentile": percentile}
    with tempfile.TemporaryDirectory(prefix="finprint-calib-") as tmp:
        calibrator = create_calibrator(
            Path(fp32_path),
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_method_enum(method),
            extra_options=options,
        )
        calibrator.collect_data(_TensorReader(input_name, calib.tensors))
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, cache_path)
    return Path(cache_path)


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calib: CalibSet,
    method: str = "minmax",
    nodes_to_exclude: Sequence[str] = (),
    per_channel: bool = True,
    reduce_range: bool = False,
    ranges_cache: str | Path | None = None,
) -> Path:
    """Write a QDQ INT8 model (U8 activations, S8 per-channel weights) to `out_path`.

    `ranges_cache` (default: `<out>.ranges.<method>.json`) holds the calibrated activation ranges;
    it is reused when present, so several quantisations of one model calibrate once.
    """
    out_path = Path(out_path)
    cache = Path(ranges_cache) if ranges_cache else out_path.with_name(f"{out_path.stem}.ranges.{method}.json")
    with tempfile.TemporaryDirectory(prefix="finprint-quant-") as tmp:
        prepared = preprocess_for_quantization(fp32_path, Path(tmp) / "prepared.onnx")
        if not cache.is_file():
            compute_ranges(prepared, calib, method, cache)
        _quantize_prepared(prepared, out_path, method, cache, nodes_to_exclude, per_channel, reduce_range)
    log.info("int8 (%s, %d nodes kept fp32): %s", method, len(nodes_to_exclude), out_path)
    return out_path


def _quantize_prepared(
    prepared: Path, out_path: Path, method: str, cache: Path, nodes_to_exclude: Sequence[str], per_channel: bool, reduce_range: bool
) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    graph = onnx.load(str(prepared)).graph
    model_ops = {n.op_type for n in graph.node}
    tail = unquantized_ends(graph) + softmax_neighbours(graph)
    log.debug("kept fp32 (before the first / after the last compute op): %s", tail)
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # ORT logs every rescaled weight at INFO on the root logger
    try:
        quantize_static(
            str(prepared),
            str(out_path),
            calibration_data_reader=None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=[op for op in QUANT_OPS if op in model_ops],
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(dict.fromkeys([*nodes_to_exclude, *tail])),
            calibrate_method=_method_enum(method),
            calibration_cache_path=str(cache),
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    finally:
        root.setLevel(level)


def qdq_node_counts(path: str | Path) -> dict[str, int]:
    """How many QuantizeLinear / DequantizeLinear nodes a graph holds (0 = not quantised)."""
    graph = onnx.load(str(path)).graph
    return {
        op: sum(1 for n in graph.node if n.op_type == op) for op in ("QuantizeLinear", "DequantizeLinear")
    }
