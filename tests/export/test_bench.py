"""`finprint bench`: interleaved latency, sizes, parameters, FLOPs, pipeline, and refusal of bad files."""

from __future__ import annotations

import json

import numpy as np

from finprint.calib.calibset import save_tensors_as_calibset
from finprint.calib.quantize import quantize_int8
from finprint.cli import main
from finprint.export.bench import bench_models, count_flops, count_parameters
from finprint.export.onnx_export import default_preprocess, export_onnx, write_manifest


def _models(tmp_path, tiny_detector, tiny_embedder):
    out = tmp_path / "models"
    det_pre, emb_pre = default_preprocess("detector", 64), default_preprocess("embedder")
    fp32 = export_onnx(tiny_detector, "detector", out / "det.fp32.onnx", det_pre)
    write_manifest(fp32, "detector", "det", "fp32", det_pre)
    teacher = export_onnx(tiny_detector, "detector", out / "teacher-det.fp32.onnx", det_pre)
    write_manifest(teacher, "detector", "teacher-det", "fp32", det_pre)
    calib = save_tensors_as_calibset(np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32), tmp_path / "calib", det_pre)
    int8 = quantize_int8(fp32, out / "det.int8.onnx", calib)
    (out / "det.int8.ranges.minmax.json").unlink()
    write_manifest(int8, "detector", "det", "int8", det_pre)
    emb = export_onnx(tiny_embedder, "embedder", out / "emb.fp32.onnx", emb_pre)
    write_manifest(emb, "embedder", "emb", "fp32", emb_pre, open_set_threshold=0.3)
    return out, fp32, int8


def test_parameters_and_flops_count_quantised_weights_too(tmp_path, tiny_detector, tiny_embedder):
    import onnx

    _, fp32, int8 = _models(tmp_path, tiny_detector, tiny_embedder)
    conv_params = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0) for m in tiny_detector.modules() if hasattr(m, "kernel_size"))
    assert count_parameters(onnx.load(str(fp32))) >= conv_params > 0
    assert count_parameters(onnx.load(str(int8))) == count_parameters(onnx.load(str(fp32)))
    flops = count_flops(onnx.load(str(fp32)))
    assert flops > 0 and count_flops(onnx.load(str(int8))) == flops


def test_bench_table_json_and_pipeline(tmp_path, tiny_detector, tiny_embedder, capsys):
    out, _, _ = _models(tmp_path, tiny_detector, tiny_embedder)
    code = main(["bench", "--models", str(out), "--rounds", "4", "--threads", "1", "--backend", "cpu", "--pipeline", "--pipeline-frames", "3"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "teacher-det.fp32.onnx" in text and "p50 ms" in text and "pipeline fp32" in text
    report = json.loads((out / "bench.json").read_text())
    by_file = {m["file"]: m for m in report["models"]}
    assert set(by_file) == {"det.fp32.onnx", "det.int8.onnx", "teacher-det.fp32.onnx", "emb.fp32.onnx"}
    assert by_file["teacher-det.fp32.onnx"]["speedup_vs_teacher"] == 1.0
    assert by_file["det.int8.onnx"]["size_bytes"] < by_file["det.fp32.onnx"]["size_bytes"]
    assert all(m["p50_ms"] > 0 and m["images_per_s"] > 0 for m in report["models"])
    assert report["pipeline"][0]["frames_per_s"] > 0 and "detector" in report["pipeline"][0]["stages"]
    assert report["pipeline"][0]["fish_per_frame"] > 0 and report["pipeline"][0]["ms_per_fish"] > 0


def test_a_staged_teacher_is_still_the_reference(tmp_path, tiny_detector, tiny_embedder):
    out, _, _ = _models(tmp_path, tiny_detector, tiny_embedder)
    for f in out.glob("teacher-det.fp32.*"):  # the demo stages models as <kind>-<file>
        f.rename(out / f"detector-{f.name}")
    results = {b.file: b for b in bench_models(out, threads=1, rounds=2, warmup=1, backend="cpu")}
    assert results["detector-teacher-det.fp32.onnx"].speedup_vs_teacher == 1.0
    assert results["det.int8.onnx"].speedup_vs_teacher is not None


def test_bench_refuses_a_truncated_model(tmp_path, tiny_detector, tiny_embedder, capsys):
    out, fp32, _ = _models(tmp_path, tiny_detector, tiny_embedder)
    fp32.write_bytes(fp32.read_bytes()[:1000])
    assert main(["bench", "--models", str(out), "--rounds", "1"]) == 2
    assert "det.fp32.onnx" in capsys.readouterr().err
