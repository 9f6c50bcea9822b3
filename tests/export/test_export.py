"""torch -> ONNX export, fp16, manifests and the errors for damaged files."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from finprint.errors import FinprintError
from finprint.export.fp16 import convert_to_fp16
from finprint.export.onnx_export import (
    check_onnx,
    compact_tensor_names,
    default_preprocess,
    export_onnx,
    load_exported,
    write_manifest,
)
from finprint.export.parity import check_parity
from finprint.runtime.engines import OrtEngine
from finprint.runtime.manifest import load_manifest, manifest_path_for


class _Torch:
    def __init__(self, model):
        self.model = model

    def infer(self, feeds):
        (x,) = feeds.values()
        with torch.no_grad():
            return {k: v.numpy() for k, v in self.model(torch.from_numpy(x)).items()}


@pytest.fixture
def detector_onnx(tmp_path, tiny_detector):
    pre = default_preprocess("detector", 64)
    path = export_onnx(tiny_detector, "detector", tmp_path / "det.fp32.onnx", pre)
    write_manifest(path, "detector", "tiny", "fp32", pre)
    return path


def test_export_names_dynamic_batch_and_matches_torch(detector_onnx, tiny_detector):
    model = onnx.load(str(detector_onnx))
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["boxes", "scores", "mask_coefs", "protos"]
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    engine = OrtEngine(detector_onnx)
    for batch in (1, 3):
        x = np.random.default_rng(batch).random((batch, 3, 64, 64), dtype=np.float32)
        report = check_parity(_Torch(tiny_detector), engine, {"images": x}, "fp32")
        assert report.passed, report.summary()
        assert engine.infer({"images": x})["protos"].shape == (batch, 4, 16, 16)


def test_manifest_describes_the_file(detector_onnx):
    manifest = load_exported(detector_onnx)
    assert manifest.kind == "detector" and manifest.precision == "fp32"
    assert manifest.inputs[0].shape == ["batch", 3, 64, 64]
    assert {o.name for o in manifest.outputs} == {"boxes", "scores", "mask_coefs", "protos"}
    assert manifest.preprocess.width == 64 and manifest.mask_stride == 4


def test_fp16_keeps_fp32_io_and_stays_close(tmp_path, detector_onnx, tiny_detector):
    fp16 = convert_to_fp16(detector_onnx, tmp_path / "det.fp16.onnx")
    model = onnx.load(str(fp16))
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in model.graph.input)
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in model.graph.output)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert fp16.stat().st_size < 0.7 * detector_onnx.stat().st_size
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    report = check_parity(_Torch(tiny_detector), OrtEngine(fp16), {"images": x}, "fp16")
    assert report.passed, report.summary()


def test_embedder_export_is_l2_normalised(tmp_path, tiny_embedder):
    pre = default_preprocess("embedder")
    path = export_onnx(tiny_embedder, "embedder", tmp_path / "emb.onnx", pre)
    manifest = write_manifest(path, "embedder", "tiny-emb", "fp32", pre, open_set_threshold=0.4)
    assert manifest.embedding_dim == 16 and manifest.open_set_threshold == 0.4
    emb = OrtEngine(path).infer({"crops": np.random.default_rng(0).random((2, 3, 64, 128), dtype=np.float32)})["embedding"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_truncated_onnx_is_a_clear_error(detector_onnx):
    data = detector_onnx.read_bytes()
    detector_onnx.write_bytes(data[: len(data) // 2])
    with pytest.raises(FinprintError, match="sha256.*truncated"):
        load_exported(detector_onnx)
    with pytest.raises(FinprintError, match="not a valid ONNX model"):
        check_onnx(detector_onnx)


def test_manifest_that_does_not_match_is_refused(tmp_path, detector_onnx, tiny_embedder):
    other = export_onnx(tiny_embedder, "embedder", tmp_path / "other.onnx", default_preprocess("embedder"))
    # Swap the file under the detector's manifest: same name, other model.
    detector_onnx.write_bytes(other.read_bytes())
    with pytest.raises(FinprintError, match="does not match its manifest"):
        load_exported(detector_onnx)
    mpath = manifest_path_for(tmp_path / "other.onnx")
    mpath.write_text(json.dumps({"kind": "detector"}))
    with pytest.raises(FinprintError, match="invalid manifest field"):
        load_manifest(mpath)


def test_compact_names_keeps_results(tmp_path, detector_onnx):
    copy = tmp_path / "compact.onnx"
    copy.write_bytes(detector_onnx.read_bytes())
    compact_tensor_names(copy)
    x = {"images": np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)}
    a, b = OrtEngine(detector_onnx).infer(x), OrtEngine(copy).infer(x)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert copy.stat().st_size <= detector_onnx.stat().st_size


def test_family_detector_bakes_its_anchor_grid_and_keeps_a_dynamic_batch(tmp_path):
    """Only the batch is dynamic: the anchor grid and reshapes are constants, no shape arithmetic."""
    from finprint.distill.detector import SPECS, FishDetector

    torch.manual_seed(0)
    model = FishDetector(SPECS["fishseg-student-s"]).eval()
    pre = default_preprocess("detector", 64)
    path = export_onnx(model, "detector", tmp_path / "d.onnx", pre)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"Shape", "Range", "Expand", "Gather"}, ops
    engine = OrtEngine(path)
    for batch in (1, 3):
        x = np.random.default_rng(batch).random((batch, 3, 64, 64), dtype=np.float32)
        report = check_parity(_Torch(model), engine, {"images": x}, "fp32")
        assert report.passed, report.summary()


def test_fp16_keeps_the_colour_bags_assignment_in_fp32(tmp_path):
    """The opponent bag's logits run to thousands: in fp16 its sharp softmax would sort pixels into other bins."""
    from finprint.distill import registry

    model = registry.build("embed-student-m-opponent").eval()
    pre = default_preprocess("embedder")
    path = export_onnx(model, "embedder", tmp_path / "emb.fp32.onnx", pre)
    fp16 = onnx.load(str(convert_to_fp16(path, tmp_path / "emb.fp16.onnx")))
    weights = {i.name: i.data_type for i in fp16.graph.initializer}
    weights |= {n.output[0]: n.attribute[0].t.data_type for n in fp16.graph.node if n.op_type == "Constant" and n.attribute[0].t.dims}
    assign = [n for n in fp16.graph.node if n.op_type == "Conv" and "colour" in n.name]
    # One conv per colour axis, its weights and bias fp32 as written (not fp16 cast back).
    assert len(assign) == 3 and all(weights[i] == onnx.TensorProto.FLOAT for n in assign for i in n.input[1:])
    assert any(t == onnx.TensorProto.FLOAT16 for t in weights.values())  # the rest is fp16
    rng = np.random.default_rng(0)
    # Crops of a few flat water colours plus noise: histograms peaked in a handful of bins, as real crops are.
    base = rng.random((4, 3, 1, 1), dtype=np.float32) * 0.5
    crops = ((base + 0.05 * rng.standard_normal((4, 3, 64, 128), dtype=np.float32) - 0.45) / 0.225).astype(np.float32)
    want = OrtEngine(path).infer({"crops": crops})["embedding"]
    got = OrtEngine(tmp_path / "emb.fp16.onnx").infer({"crops": crops})["embedding"]
    assert float(np.min(np.sum(want * got, axis=1))) > 0.999
