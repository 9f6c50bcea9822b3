"""fp32 ONNX -> fp16 weights and compute, fp32 inputs/outputs kept (Cast nodes at the boundaries).

TensorRT 10/11 builds strongly typed networks, so precision must live in the ONNX itself. The
conversion is ONNX Runtime's own (onnxruntime.transformers.float16, shipped with onnxruntime): it
keeps ops without fp16 kernels (e.g. Resize's scales) in fp32 with Casts around them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

from finprint.errors import FinprintError

log = logging.getLogger(__name__)


def convert_to_fp16(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Write an fp16 copy of `fp32_path` whose inputs and outputs stay float32."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise FinprintError("fp16 export needs onnxruntime's transformers tools: pip install 'finprint[runtime]'") from exc
    from finprint.calib.quantize import softmax_neighbours

    out_path = Path(out_path)
    model = onnx.load(str(fp32_path))
    # The colour bag (1x1 convs into Softmaxes, and the histogram's MatMul) stays fp32, as in INT8: its logits run to
    # thousands, where fp16's step is a few units and a softmax that sharp turns that into a different histogram.
    keep = softmax_neighbours(model.graph) + [n.name for n in model.graph.node if n.op_type == "Softmax"]
    fp16 = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False, node_block_list=keep or None)
    _topological_sort(fp16.graph)  # the converter appends its boundary Casts at the end
    onnx.checker.check_model(fp16)
    onnx.save(fp16, str(out_path))
    log.info("fp16: %s -> %s", fp32_path, out_path)
    return out_path


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder `graph.node` so every node comes after the producers of its inputs (ONNX requires it)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            names = [n.name or n.op_type for n in pending[:5]]
            raise FinprintError(f"fp16 conversion produced a graph with a cycle or a missing input near {names}")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [onnx.NodeProto() for _ in ordered]
    for dst, src in zip(copies, ordered, strict=True):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(copies)
