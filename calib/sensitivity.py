"""Which quantised nodes hurt most: per-node error of the INT8 graph against the fp32 graph.

Both graphs expose every intermediate tensor; for each quantisable node we take the relative L2
error of its output on calibration inputs and subtract the largest error already present on its
inputs, so a node is blamed for the error it adds, not for what flows into it. The most sensitive
nodes are then kept in fp32 (`nodes_to_exclude`) until the accuracy gate holds
(`exclude_until`); the manifest records which.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from finprint.calib.quantize import QUANT_OPS, preprocess_for_quantization

log = logging.getLogger(__name__)


@dataclass
class NodeSensitivity:
    name: str
    op_type: str
    output_error: float  # relative L2 error of the node's output, int8 vs fp32
    added_error: float  # output_error minus the worst error on its inputs

    def __str__(self) -> str:
        return f"{self.name} ({self.op_type}): +{self.added_error:.4f} (out {self.output_error:.4f})"


def _expose_all(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return model


def _run_all(model: onnx.ModelProto, inputs: np.ndarray, threads: int) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor observable
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    input_name = sess.get_inputs()[0].name
    collected: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(len(inputs)):
        for n, v in zip(names, sess.run(names, {input_name: inputs[i : i + 1].astype(np.float32)}), strict=True):
            collected[n].append(np.asarray(v))
    return {n: np.concatenate(v) if v and v[0].ndim else np.stack(v) for n, v in collected.items()}


FOLDED_ACTIVATIONS = ("Relu", "Clip")  # removed by ORT's QDQ quantiser when they follow a quantised op


def node_sensitivity(
    fp32_path: str | Path, int8_path: str | Path, inputs: np.ndarray, threads: int = 2
) -> list[NodeSensitivity]:
    """Quantisable nodes of `int8_path`, most sensitive first."""
    with tempfile.TemporaryDirectory(prefix="finprint-sens-") as tmp:
        prepared = onnx.load(str(preprocess_for_quantization(fp32_path, Path(tmp) / "prepared.onnx")))
    quant = onnx.load(str(int8_path))
    quant_tensors = {o for n in quant.graph.node for o in n.output}
    float_nodes = [n for n in prepared.graph.node if n.output and n.output[0] in quant_tensors]
    watched = [n.output[0] for n in float_nodes]
    ref = _run_all(_expose_all(prepared, watched), inputs, threads)
    got = _run_all(_expose_all(quant, watched), inputs, threads)
    error: dict[str, float] = {}
    for name in watched:
        a, b = ref.get(name), got.get(name)
        if a is None or b is None or a.dtype.kind != "f" or a.shape != b.shape:
            continue
        error[name] = float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))
    producer = {o: n for n in prepared.graph.node for o in n.output}
    result = []
    for node in float_nodes:
        if node.op_type not in QUANT_OPS or node.output[0] not in error:
            continue
        out = error[node.output[0]]
        blamed = node
        if node.op_type in FOLDED_ACTIVATIONS and node.input[0] not in quant_tensors and node.input[0] in producer:
            # The quantiser folded this activation into the conv before it: the pair's error is the
            # conv's, and keeping the conv in fp32 is what helps.
            blamed = producer[node.input[0]]
        upstream = max((error.get(i, 0.0) for i in blamed.input), default=0.0)
        result.append(NodeSensitivity(blamed.name, blamed.op_type, out, out - upstream))
    result.sort(key=lambda s: s.added_error, reverse=True)
    return result


def exclude_until(
    ranking: Sequence[NodeSensitivity],
    try_excluding: Callable[[list[str]], bool],
    max_nodes: int = 16,
) -> tuple[list[str], bool]:
    """Keep the top 1, 2, 4, ... most sensitive nodes in fp32 until `try_excluding(nodes)` (which
    re-quantises and runs the gate) returns True. Returns (nodes kept in fp32, whether it held)."""
    k = 1
    tried: list[str] = []
    while k <= min(max_nodes, len(ranking)):
        tried = [s.name for s in ranking[:k]]
        log.info("sensitivity: keeping %d node(s) in fp32: %s", k, tried)
        if try_excluding(tried):
            return tried, True
        if k == min(max_nodes, len(ranking)):
            break
        k = min(2 * k, max_nodes, len(ranking))
    return tried, False
