"""The accuracy gate: a readable table, a failure that names the stage, and the export CLI around it."""

from __future__ import annotations

import json

import pytest

from finprint.cli import main
from finprint.export.gate import GateError, Stage, run_gate
from finprint.runtime.manifest import load_manifest


def _stages():
    return [Stage(n, p, n) for n, p in [("teacher fp32", "fp32"), ("student fp32", "fp32"), ("student fp16", "fp16"), ("student int8", "int8")]]


def test_gate_compares_each_stage_with_student_fp32():
    scores = {"teacher fp32": 0.80, "student fp32": 0.70, "student fp16": 0.699, "student int8": 0.65}
    report = run_gate("detector", _stages(), lambda engine: {"box_map": scores[engine], "box_map50": 0.9}, max_drop=1.0)
    assert not report.passed
    assert [r.name for r in report.failures] == ["student int8"]  # the teacher row is context, not gated
    assert report.result("student int8").drop_points == pytest.approx(5.0)
    message = str(GateError(report))
    assert "stage 'student int8' lost 5.00 points of box_map" in message
    assert "FAIL" in report.table() and "teacher fp32" in report.table()
    stages = [a.stage for a in report.accuracy()]
    assert stages == ["teacher fp32", "student fp32", "student fp16", "student int8"]


def test_gate_passes_within_max_drop():
    scores = {"teacher fp32": 0.9, "student fp32": 0.7, "student fp16": 0.7, "student int8": 0.695}
    report = run_gate("embedder", _stages(), lambda engine: {"rank1": scores[engine]}, max_drop=1.0)
    assert report.passed


@pytest.fixture
def embed_run(tmp_path, make_reid, make_run):
    import torch

    from finprint.distill import registry

    reid = make_reid(tmp_path / "reid", identities=8, per_subset=3)
    torch.manual_seed(0)
    model = registry.build("embed-student-s").eval()
    return make_run(tmp_path / "run", model, "embed-student-s", "embed", reid), reid


def _export(tmp_path, run, reid, calib, out, *extra):
    return main([
        "export", "--run", str(run), "--out", str(out), "--calib", str(calib), "--data", str(reid),
        "--precision", "fp32,fp16,int8", *extra,
    ])


def test_export_cli_writes_gated_manifests(tmp_path, embed_run, capsys):
    run, reid = embed_run
    assert main(["calib", "build", "--kind", "embedder", "--data", str(reid), "--out", str(tmp_path / "calib"), "--size", "16"]) == 0
    code = _export(tmp_path, run, reid, tmp_path / "calib", tmp_path / "out", "--max-drop", "15")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "student int8" in out and "rank1" in out
    for precision in ("fp32", "fp16", "int8"):
        manifest = load_manifest(tmp_path / "out" / f"embed-student-s.{precision}.manifest.json")
        assert manifest.precision == precision and manifest.kind == "embedder"
        assert [a.stage for a in manifest.accuracy] == ["student fp32", "student fp16", "student int8"]
        assert manifest.open_set_threshold is not None
    int8 = load_manifest(tmp_path / "out" / "embed-student-s.int8.manifest.json")
    calib = json.loads((tmp_path / "calib" / "calib.json").read_text())
    assert int8.calibration_hash == calib["set_sha256"] and int8.extra["gate"] == "passed"


def test_export_without_calib_selects_one_from_the_run_data(tmp_path, embed_run, capsys):
    run, reid = embed_run
    code = main(["export", "--run", str(run), "--out", str(tmp_path / "out"), "--precision", "int8", "--calib-size", "8", "--max-drop", "15"])
    assert code == 0, capsys.readouterr().out
    calib = json.loads((tmp_path / "out" / "calib" / "calib.json").read_text())
    assert calib["size"] == 8
    assert load_manifest(tmp_path / "out" / "embed-student-s.int8.manifest.json").calibration_hash == calib["set_sha256"]


def test_gate_fails_on_all_black_calibration(tmp_path, embed_run, make_reid, capsys):
    run, reid = embed_run
    black = make_reid(tmp_path / "black", identities=8, per_subset=3, black=True)
    assert main(["calib", "build", "--kind", "embedder", "--data", str(black), "--out", str(tmp_path / "calib"), "--size", "16"]) == 0
    code = _export(tmp_path, run, reid, tmp_path / "calib", tmp_path / "out", "--max-drop", "15", "--no-sensitivity")
    captured = capsys.readouterr()
    err = captured.err
    assert code == 1, captured.out
    assert "accuracy gate failed: stage 'student int8' lost" in err
    assert "FAIL" in err


def test_sensitivity_keeps_the_clipped_layer_in_fp32(tmp_path, embed_run, make_reid, capsys):
    # All-black calibration clips the first layer's input; keeping that layer in fp32 rescues the gate.
    run, reid = embed_run
    black = make_reid(tmp_path / "black", identities=8, per_subset=3, black=True)
    assert main(["calib", "build", "--kind", "embedder", "--data", str(black), "--out", str(tmp_path / "calib"), "--size", "16"]) == 0
    code = main([
        "export", "--run", str(run), "--out", str(tmp_path / "out"), "--calib", str(tmp_path / "calib"),
        "--data", str(reid), "--precision", "fp32,int8", "--max-drop", "15",
    ])
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert code == 0, out
    kept = next(line for line in out.splitlines() if "node(s) in fp32 (gate holds)" in line)
    assert "/stem/stem.0/Conv" in kept, kept  # the clipped first layer (its ReLU is folded into it)
    manifest = load_manifest(tmp_path / "out" / "embed-student-s.int8.manifest.json")
    assert manifest.extra["fp32_nodes"] and manifest.extra["gate"] == "passed"


@pytest.mark.parametrize(("farm_flag", "manifest_flag", "said"), [
    ("reid_masked", "crop_mask", "masked crops"),  # as `data synth --reid-masked` writes
    ("reid_aligned", "crop_align", "aligned crops"),  # as `data synth --reid-aligned` writes
])
def test_an_embedder_trained_on_masked_or_aligned_crops_exports_the_flag(tmp_path, make_reid, make_run, capsys,
                                                                          farm_flag, manifest_flag, said):
    import torch

    from finprint.distill import registry

    farm = tmp_path / "farm"
    reid = make_reid(farm / "reid", identities=8, per_subset=3)
    (farm / "farm.json").write_text(json.dumps({"config": {farm_flag: True}}))
    torch.manual_seed(0)
    run = make_run(tmp_path / "run", registry.build("embed-student-s").eval(), "embed-student-s", "embed", farm)
    assert main(["calib", "build", "--kind", "embedder", "--data", str(reid), "--out", str(tmp_path / "calib"), "--size", "8"]) == 0
    assert json.loads((tmp_path / "calib" / "calib.json").read_text())["preprocess"][manifest_flag] is True
    code = _export(tmp_path, run, reid, tmp_path / "calib", tmp_path / "out", "--max-drop", "15")
    assert code == 0, capsys.readouterr().out
    pre = load_manifest(tmp_path / "out" / "embed-student-s.int8.manifest.json").preprocess
    assert getattr(pre, manifest_flag) and [pre.crop_mask, pre.crop_align].count(True) == 1
    # A calibration set of plain crops does not fit it: one line that says so.
    (farm / "farm.json").write_text(json.dumps({"config": {farm_flag: False}}))
    assert main(["calib", "build", "--kind", "embedder", "--data", str(reid), "--out", str(tmp_path / "plain"), "--size", "8"]) == 0
    (farm / "farm.json").write_text(json.dumps({"config": {farm_flag: True}}))
    capsys.readouterr()
    assert _export(tmp_path, run, reid, tmp_path / "plain", tmp_path / "out2") == 2
    assert said in capsys.readouterr().err


def test_the_detector_gate_spreads_its_frames_over_every_validation_group(tmp_path, monkeypatch):
    """A cut by position kept DeepFish's first habitat only (0.05 box mAP50 for a teacher that makes 0.29)."""
    import argparse

    import cv2
    import numpy as np

    from finprint.distill import evaluate
    from finprint.distill.detect_data import detector_preprocess
    from finprint.export.cli_export import _evaluator

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for group in ("1111", "2222"):
        for i in range(6):
            cv2.imwrite(str(tmp_path / "images" / f"{group}_clip_f{i}.jpg"), np.full((32, 32, 3), 90, np.uint8))
            (tmp_path / "labels" / f"{group}_clip_f{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    seen: list = []
    monkeypatch.setattr(evaluate, "evaluate_detector", lambda engine, pre, frames, batch=8: seen.extend(frames) or {})
    args = argparse.Namespace(data=str(tmp_path), val_groups="1111,2222", split=None, gate_images=4)
    evaluate_fn, samples = _evaluator("detector", detector_preprocess(64), args, {})
    evaluate_fn(None)
    assert len(seen) == 4 and {f.group for f in seen} == {"1111", "2222"}
