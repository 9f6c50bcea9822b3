"""Quantisation-aware training: fake quantisation in torch, QDQ pairs in the ONNX export."""

from __future__ import annotations

import numpy as np
import torch

from finprint.calib.qat import QATConv2d, fold_batchnorms, is_qat, load_qat_state, prepare_qat
from finprint.calib.quantize import qdq_node_counts
from finprint.export.onnx_export import default_preprocess, export_onnx
from finprint.runtime.engines import OrtEngine


def test_prepare_keeps_parameter_names_and_trains(tiny_detector):
    names = [n for n, _ in tiny_detector.named_parameters()]
    model = prepare_qat(tiny_detector)
    assert [n for n, _ in model.named_parameters()] == names
    assert is_qat(model) and any(isinstance(m, QATConv2d) for m in model.modules())
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    before = model.head.weight.detach().clone()
    for _ in range(2):
        out = model(torch.rand(2, 3, 64, 64))
        (out["scores"].mean() + out["boxes"].mean() * 1e-3).backward()
        opt.step()
        opt.zero_grad()
    assert not torch.equal(before, model.head.weight)  # gradients pass the fake quantisers
    scale = model.head.input_fq.scale.clone()
    model.eval()
    model(torch.rand(2, 3, 64, 64) * 10)
    assert torch.equal(scale, model.head.input_fq.scale)  # eval freezes the observed ranges


def test_qat_exports_qdq_that_onnxruntime_matches(tmp_path, tiny_detector):
    model = prepare_qat(tiny_detector).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(2, 3, 64, 64))
    model.eval()
    path = export_onnx(model, "detector", tmp_path / "qat.onnx", default_preprocess("detector", 64))
    counts = qdq_node_counts(path)
    assert counts["QuantizeLinear"] >= 5 and counts["DequantizeLinear"] >= 5
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    out = OrtEngine(path).infer({"images": x})
    # Rounding ties may land one quantisation step apart between torch and ORT.
    assert np.abs(out["scores"] - ref["scores"].numpy()).max() < 0.02
    assert np.abs(out["protos"] - ref["protos"].numpy()).max() < 0.05


def test_qat_checkpoint_reloads(tiny_detector):
    from copy import deepcopy

    fresh = deepcopy(tiny_detector)
    state = prepare_qat(tiny_detector).state_dict()
    assert any(".input_fq." in k for k in state)
    load_qat_state(fresh, state)
    assert is_qat(fresh)


def test_fold_batchnorms_keeps_the_quantised_model():
    from copy import deepcopy

    from finprint.distill import registry

    torch.manual_seed(0)
    model = prepare_qat(registry.build("embed-student-s")).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 64, 128))
        for m in model.modules():  # BN statistics and affine far from identity, some scales negative
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(-2.0, 2.0)
                m.bias.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.2, 3.0)
    model.eval()
    folded = deepcopy(model)
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert fold_batchnorms(folded) == bns > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(8, 3, 64, 128)
    with torch.no_grad():
        ref, out = model(x)["embedding"], folded(x)["embedding"]
    # Same integers at the folded scales: only float rounding (and a rare tie one quantisation step away) differs.
    assert (ref - out).abs().max() < 0.02
    assert fold_batchnorms(folded) == 0  # nothing left to fold


def test_export_cli_on_a_qat_run(tmp_path, make_reid, make_run, capsys):
    import cv2
    import onnx

    from finprint.cli import main
    from finprint.distill import registry
    from finprint.runtime.crops import embedder_preprocess
    from finprint.runtime.manifest import load_manifest
    from finprint.runtime.preprocess import preprocess_image

    reid = make_reid(tmp_path / "reid", identities=6, per_subset=2)
    torch.manual_seed(0)
    model = prepare_qat(registry.build("embed-student-s")).train()
    crops = np.stack([preprocess_image(cv2.imread(str(p)), embedder_preprocess())[0] for p in sorted(reid.rglob("*.jpg"))])
    with torch.no_grad():  # observe realistic activation ranges, as QAT fine-tuning would
        for _ in range(3):
            model(torch.from_numpy(crops))
    run = make_run(tmp_path / "run", model.eval(), "embed-student-s", "embed", reid)
    code = main(["export", "--run", str(run), "--out", str(tmp_path / "out"), "--data", str(reid), "--max-drop", "15"])
    out = capsys.readouterr().out
    assert code == 0, out
    int8 = tmp_path / "out" / "embed-student-s.int8.onnx"
    graph = onnx.load(str(int8)).graph
    assert qdq_node_counts(int8)["DequantizeLinear"] > 0
    assert sum(len(i.raw_data) for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT) < 0.1 * int8.stat().st_size
    manifest = load_manifest(tmp_path / "out" / "embed-student-s.int8.manifest.json")
    assert manifest.extra["qat"] is True
    # The convs' BatchNorms are folded; only the neck's BatchNorm1d (after a Linear) stays a graph op.
    bn1d = sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    assert manifest.extra["qat_batchnorms_folded"] > 0
    assert sum(n.op_type == "BatchNormalization" for n in graph.node) == bn1d
    assert [a.stage for a in manifest.accuracy] == ["student fp32", "student int8"]
