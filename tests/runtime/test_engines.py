"""The engine contract end to end on ONNX Runtime's CPU provider, with a tiny model built in the test."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from finprint.errors import FinprintError
from finprint.runtime import engines
from finprint.runtime.engines import OrtEngine, open_engine
from finprint.runtime.manifest import (
    Manifest,
    Preprocess,
    TensorSpec,
    manifest_path_for,
    save_manifest,
    sha256_file,
)


def tiny_onnx(path: Path, input_name: str = "crops", channels: int = 3) -> Path:
    """embedding = (crops * 2 + 1) summed over H and W: [B,C,4,8] -> [B,C], batch dynamic."""
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", channels, 4, 8])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", channels])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    nodes = [
        helper.make_node("Mul", [input_name, "two"], ["m"]),
        helper.make_node("Add", ["m", "one"], ["a"]),
        helper.make_node("ReduceSum", ["a", "axes"], ["embedding"], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=[two, one, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_manifest(onnx_path: Path, input_name: str = "crops", channels: int = 3) -> Path:
    manifest = Manifest(
        kind="embedder",
        model_name="tiny",
        finprint_version="0",
        precision="fp32",
        onnx_file=onnx_path.name,
        onnx_sha256=sha256_file(onnx_path),
        opset=17,
        inputs=[TensorSpec(name=input_name, shape=["batch", channels, 4, 8])],
        outputs=[TensorSpec(name="embedding", shape=["batch", channels])],
        preprocess=Preprocess(width=8, height=4, resize="stretch"),
        max_batch=4,
    )
    return save_manifest(manifest, manifest_path_for(onnx_path))


def expected(x: np.ndarray) -> np.ndarray:
    return (x * 2 + 1).sum(axis=(2, 3))


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    path = tiny_onnx(tmp_path / "tiny.onnx")
    write_manifest(path)
    return path


def test_ort_cpu_end_to_end(model: Path) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 8)).astype(np.float32)
    with OrtEngine(model) as eng:
        assert eng.backend == "cpu"
        assert [t.name for t in eng.inputs] == ["crops"]
        assert eng.inputs[0].is_dynamic(0) and not eng.inputs[0].is_dynamic(1)
        out = eng.infer({"crops": x})
    assert set(out) == {"embedding"}
    np.testing.assert_allclose(out["embedding"], expected(x), rtol=1e-5, atol=1e-5)


def test_input_checks_give_clear_errors(model: Path) -> None:
    good = np.zeros((1, 3, 4, 8), np.float32)
    with OrtEngine(model) as eng:
        with pytest.raises(FinprintError, match="missing"):
            eng.infer({})
        with pytest.raises(FinprintError, match="unexpected"):
            eng.infer({"crops": good, "other": good})
        with pytest.raises(FinprintError, match="float64"):
            eng.infer({"crops": good.astype(np.float64)})
        with pytest.raises(FinprintError, match="axis 1 must be 3"):
            eng.infer({"crops": np.zeros((1, 4, 4, 8), np.float32)})
        with pytest.raises(FinprintError, match="expects"):
            eng.infer({"crops": np.zeros((3, 4, 8), np.float32)})
        # a non-contiguous view is accepted (copied), any batch size fits the dynamic axis
        view = np.zeros((5, 3, 8, 4), np.float32).transpose(0, 1, 3, 2)
        assert eng.infer({"crops": view})["embedding"].shape == (5, 3)


def test_closed_engine_refuses(model: Path) -> None:
    eng = OrtEngine(model)
    eng.close()
    with pytest.raises(FinprintError, match="closed"):
        eng.infer({"crops": np.zeros((1, 3, 4, 8), np.float32)})


def test_open_engine_auto_falls_back_to_cpu_and_says_why(model: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="finprint.runtime.engines")
    with open_engine(model, "auto") as eng:
        assert eng.backend == "cpu"
    text = caplog.text
    assert "TensorRT not used" in text and "backend cpu" in text


def test_open_engine_explicit_backends_refuse_when_missing(model: Path, monkeypatch) -> None:
    monkeypatch.setattr(engines, "tensorrt_unavailable_reason", lambda: "TensorRT is not installed (test)")
    with pytest.raises(FinprintError, match="backend 'tensorrt' asked for, but TensorRT is not installed"):
        open_engine(model, "tensorrt")
    with pytest.raises(FinprintError, match="ort-gpu"):
        open_engine(model, "ort-gpu")
    with pytest.raises(FinprintError, match="unknown backend"):
        open_engine(model, "vulkan")
    with open_engine(model, "cpu") as eng:
        assert eng.backend == "cpu"


def test_open_engine_refuses_engine_file_without_tensorrt(tmp_path: Path, monkeypatch) -> None:
    plan = tmp_path / "tiny.engine"
    plan.write_bytes(b"not an engine")
    monkeypatch.setattr(engines, "tensorrt_unavailable_reason", lambda: "TensorRT is not installed (test)")
    with pytest.raises(FinprintError, match="cannot run a TensorRT engine here"):
        open_engine(plan)
    with pytest.raises(FinprintError, match="only on the 'tensorrt' backend"):
        open_engine(plan, "cpu")


def test_truncated_onnx_is_refused_by_manifest(model: Path) -> None:
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    with pytest.raises(FinprintError, match="does not match its manifest"):
        open_engine(model, "cpu")


def test_truncated_onnx_without_manifest_is_a_clear_error(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path / "t.onnx")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(FinprintError, match="cannot load this model"):
        open_engine(path, "cpu")


def test_onnx_whose_inputs_differ_from_manifest(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path / "m.onnx", input_name="images")
    write_manifest(path, input_name="crops")  # sha matches, but the manifest names another input
    with pytest.raises(FinprintError, match=r"inputs are \['images'\], manifest says \['crops'\]"):
        open_engine(path, "cpu")
    path2 = tiny_onnx(tmp_path / "c.onnx", channels=1)
    manifest = Manifest.model_validate_json(write_manifest(path2, channels=1).read_text())
    manifest.inputs[0].shape = ["batch", 3, 4, 8]
    with pytest.raises(FinprintError, match="manifest says"):
        open_engine(path2, "cpu", manifest=manifest)


def test_missing_manifest(tmp_path: Path, caplog) -> None:
    path = tiny_onnx(tmp_path / "bare.onnx")
    with pytest.raises(FinprintError, match="manifest not found"):
        open_engine(path, "cpu", require_manifest=True)
    caplog.set_level(logging.WARNING, logger="finprint.runtime.engines")
    with open_engine(path, "cpu") as eng:
        assert eng.infer({"crops": np.ones((1, 3, 4, 8), np.float32)})["embedding"][0, 0] == pytest.approx(96.0)
    assert "no manifest" in caplog.text


def test_sessions_do_not_spin(model: Path) -> None:
    import onnxruntime as ort

    opts = engines.session_options(ort, intra_threads=1)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 1
