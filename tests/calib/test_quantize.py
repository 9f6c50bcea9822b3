"""INT8 static quantisation to QDQ, and per-node sensitivity."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from finprint.calib.calibset import save_tensors_as_calibset
from finprint.calib.quantize import qdq_node_counts, quantize_int8, unquantized_ends
from finprint.calib.sensitivity import exclude_until, node_sensitivity
from finprint.export.onnx_export import default_preprocess, export_onnx
from finprint.runtime.engines import OrtEngine


def _setup(tmp_path, model):
    pre = default_preprocess("detector", 64)
    fp32 = export_onnx(model, "detector", tmp_path / "det.fp32.onnx", pre)
    tensors = np.random.default_rng(0).random((8, 3, 64, 64), dtype=np.float32)
    return fp32, save_tensors_as_calibset(tensors, tmp_path / "calib", pre), tensors


def test_int8_is_qdq_and_close_to_fp32(tmp_path, tiny_detector):
    fp32, calib, tensors = _setup(tmp_path, tiny_detector)
    int8 = quantize_int8(fp32, tmp_path / "det.int8.onnx", calib, "minmax")
    counts = qdq_node_counts(int8)
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] > 0
    graph = onnx.load(str(int8)).graph
    assert any(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer)  # S8 weights
    assert any(n.op_type == "Conv" for n in graph.node)  # QDQ around float ops, not decomposed arithmetic
    x = tensors[:2]
    with torch.no_grad():
        ref = tiny_detector(torch.from_numpy(x))
    out = OrtEngine(int8).infer({"images": x})
    assert np.abs(out["scores"] - ref["scores"].numpy()).max() < 0.05
    assert np.abs(out["boxes"] - ref["boxes"].numpy()).max() < 2.0  # pixels of a 64 px input
    producer = {o: n for n in graph.node for o in n.output}
    assert producer["boxes"].op_type != "DequantizeLinear"  # box corners stay off the 8-bit grid


def _graph(nodes: list[onnx.NodeProto]) -> onnx.GraphProto:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    return onnx.helper.make_graph(nodes, "g", [x], [y])


def test_only_what_precedes_the_first_or_follows_the_last_conv_stays_fp32():
    make = onnx.helper.make_node
    graph = _graph([
        make("Concat", ["x", "x"], ["xx"], name="twice", axis=0),  # input plumbing
        make("Conv", ["xx", "w"], ["c1"], name="conv1"),
        make("Add", ["c1", "b"], ["a1"], name="add_mid"),  # feeds conv2: part of the network
        make("Conv", ["a1", "w"], ["c2"], name="conv2"),
        make("Mul", ["c2", "s"], ["m"], name="scale"),  # decode: nothing heavy after it
        make("Concat", ["m", "c2"], ["y"], name="join", axis=1),
    ])
    assert unquantized_ends(graph) == ["twice", "scale", "join"]


def test_percentile_calibration_and_excluded_nodes(tmp_path, tiny_detector):
    fp32, calib, _ = _setup(tmp_path, tiny_detector)
    full = quantize_int8(fp32, tmp_path / "a.onnx", calib, "percentile")
    ranking = node_sensitivity(fp32, full, calib.tensors[:2])
    assert ranking and ranking[0].added_error >= ranking[-1].added_error
    keep = [ranking[0].name]
    partial = quantize_int8(fp32, tmp_path / "b.onnx", calib, "percentile", nodes_to_exclude=keep)
    assert qdq_node_counts(partial)["DequantizeLinear"] < qdq_node_counts(full)["DequantizeLinear"]


def test_exclude_until_doubles_until_it_holds():
    class S:
        def __init__(self, name):
            self.name = name

    ranking = [S(f"n{i}") for i in range(10)]
    tried = []
    kept, held = exclude_until(ranking, lambda nodes: tried.append(len(nodes)) or len(nodes) >= 3)
    assert held and tried == [1, 2, 4] and kept == ["n0", "n1", "n2", "n3"]
    kept, held = exclude_until(ranking, lambda nodes: False, max_nodes=8)
    assert not held and len(kept) == 8


def test_relu_after_a_conv_folds_into_the_quantised_conv(tmp_path):
    """ReLU is quantised with its conv, so the INT8 graph has no fp32 ReLU between a DQ and a Q (which
    would cost two extra (de)quantisations per layer, slower than fp32 on a small net)."""
    from finprint.distill.detector import SPECS, FishDetector

    torch.manual_seed(0)
    model = FishDetector(SPECS["fishseg-student-lean"]).eval()
    fp32, calib, tensors = _setup(tmp_path, model)
    assert any(n.op_type == "Relu" for n in onnx.load(str(fp32)).graph.node)
    int8 = quantize_int8(fp32, tmp_path / "lean.int8.onnx", calib, "minmax")
    assert not [n.name for n in onnx.load(str(int8)).graph.node if n.op_type == "Relu"]
    with torch.no_grad():
        ref = model(torch.from_numpy(tensors[:2]))
    out = OrtEngine(int8).infer({"images": tensors[:2]})
    assert np.abs(out["scores"] - ref["scores"].numpy()).max() < 0.05


@pytest.mark.parametrize("name", ["embed-student-m-colour", "embed-student-m-opponent"])
def test_the_colour_bags_assignment_stays_fp32_and_int8_keeps_its_histogram(tmp_path, name):
    from finprint.calib.quantize import softmax_consumers, softmax_feeders
    from finprint.distill.registry import build
    from finprint.runtime.crops import embedder_preprocess

    torch.manual_seed(0)
    model = build(name).eval()
    pre = embedder_preprocess()
    fp32 = export_onnx(model, "embedder", tmp_path / "emb.fp32.onnx", pre)
    graph = onnx.load(str(fp32)).graph
    feeders = softmax_feeders(graph)
    assert len(feeders) == 3 and all(n.op_type == "Conv" for n in graph.node if n.name in feeders)  # one per colour axis
    consumers = softmax_consumers(graph)
    assert [n.op_type for n in graph.node if n.name in consumers] == ["MatMul"]  # the histogram, not the projection
    # Plain-coloured crops: each lands in one colour bin, so the colour bag dominates their embeddings.
    rng = np.random.default_rng(0)
    crops = np.repeat(np.repeat(rng.normal(0, 1, (16, 3, 1, 1)).astype(np.float32), pre.height, 2), pre.width, 3)
    crops += rng.normal(0, 0.05, crops.shape).astype(np.float32)
    calib = save_tensors_as_calibset(crops, tmp_path / "calib", pre)
    int8 = quantize_int8(fp32, tmp_path / "emb.int8.onnx", calib, "minmax")
    qgraph = onnx.load(str(int8)).graph
    producer = {o: n.op_type for n in qgraph.node for o in n.output}
    for kept in (n for n in qgraph.node if n.name in feeders + consumers):
        assert all(producer.get(i) != "DequantizeLinear" for i in kept.input)  # float inputs and weights
    assert any(n.op_type == "Conv" and producer.get(n.input[1]) == "DequantizeLinear" for n in qgraph.node)  # the rest is INT8
    ref, out = OrtEngine(fp32).infer({"crops": crops})["embedding"], OrtEngine(int8).infer({"crops": crops})["embedding"]
    # Seeds 0-2: the worst crop's cosine is 0.94-0.97 with the conv kept float, 0.27-0.51 with it quantised.
    assert float((ref * out).sum(1).min()) > 0.9
