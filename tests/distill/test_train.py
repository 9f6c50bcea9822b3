"""The shared training loop on a tiny detection set: run folder, resume, DDP, distillation, bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from finprint.cli import main
from finprint.distill import runs
from finprint.distill.tasks import TrainConfig
from finprint.distill.train import train
from finprint.errors import FinprintError

IMGSZ = 64


def make_yolo_seg(root: Path, n_train: int = 4, n_val: int = 2, size: int = 96, seed: int = 0) -> Path:
    """Bright ellipses ("fish") on a noisy blue background, YOLO-seg labels, train/val split folders."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = (np.full((size, size, 3), (90, 60, 20)) + rng.integers(0, 30, (size, size, 3))).astype(np.uint8)
            lines = []
            for _ in range(int(rng.integers(1, 3))):
                cx, cy = rng.uniform(0.3, 0.7, 2) * size
                poly = cv2.ellipse2Poly((int(cx), int(cy)), (int(0.2 * size), int(0.08 * size)), int(rng.uniform(0, 180)), 0, 360, 30)
                cv2.fillPoly(img, [poly], (230, 230, 200))
                lines.append("0 " + " ".join(f"{v:.5f}" for v in (poly / size).clip(0, 1).reshape(-1)))
            name = f"g{i % 2}_{split}_{i:03d}"
            cv2.imwrite(str(root / "images" / split / f"{name}.jpg"), img)
            (root / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_yolo_seg(tmp_path_factory.mktemp("yolo"))


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(task="detect", model="fishseg-student", data=str(data), out=str(out), epochs=2, batch=2, imgsz=IMGSZ, lr=2e-3, extra={"threads": 1})
    base.update(kw)
    return TrainConfig(**base)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return runs.load_checkpoint(run / "last.pt")["model"]


def test_cli_train_writes_a_complete_run(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--task", "detect", "--model", "fishseg-student", "--data", str(tiny_data), "--out", str(out),
               "--epochs", "2", "--batch", "2", "--imgsz", str(IMGSZ), "--set", "threads=1"])
    assert rc == 0
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "COMPLETE", "plots/loss.png"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and all(np.isfinite(r["loss"]) for r in rows)
    assert "val_map" in rows[-1]
    model, cfg = runs.load_model(out)
    assert cfg["model"] == "fishseg-student" and not model.training
    # A second run into the same folder is refused rather than mixed with the first.
    assert main(["train", "--task", "detect", "--model", "fishseg-student", "--data", str(tiny_data), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_resume_matches_uninterrupted_run(tiny_data, tmp_path):
    full = tmp_path / "full"
    train(_cfg(tiny_data, full, epochs=3))
    part = tmp_path / "part"
    train(_cfg(tiny_data, part, epochs=3), stop_after_epochs=1)
    assert not runs.is_complete(part)
    train(_cfg(tiny_data, part, epochs=3), resume=True)
    assert runs.is_complete(part)
    a, b = _weights(full), _weights(part)
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), atol=1e-5, rtol=1e-4, msg=k)
    la = json.loads((full / "metrics.jsonl").read_text().splitlines()[-1])
    lb = json.loads((part / "metrics.jsonl").read_text().splitlines()[-1])
    assert la["loss"] == pytest.approx(lb["loss"], rel=1e-4)


def test_ddp_two_gloo_processes(tiny_data, tmp_path):
    """Two ranks launched the way torchrun does (RANK/WORLD_SIZE/MASTER_*), gloo on CPU."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    argv = [sys.executable, "-m", "finprint", "train", "--task", "detect", "--model", "fishseg-student",
            "--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--batch", "2", "--imgsz", str(IMGSZ),
            "--device", "cpu", "--set", "threads=1"]
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert runs.is_complete(out)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(row["loss"])


def test_distill_with_teacher_and_without_kd(tiny_data, tmp_path):
    teacher = tmp_path / "teacher"
    train(_cfg(tiny_data, teacher, model="fishseg-teacher", epochs=1))
    kd = tmp_path / "kd"
    rc = main(["distill", "--teacher", str(teacher), "--student", "fishseg-student", "--data", str(tiny_data),
               "--out", str(kd), "--epochs", "1", "--batch", "2", "--imgsz", str(IMGSZ), "--set", "threads=1"])
    assert rc == 0
    row = json.loads((kd / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["loss_kd_score"] > 0 and row["loss_kd_feat"] > 0
    assert runs.load_checkpoint(kd / "last.pt")["kd"] is not None  # adapters saved with the run
    nokd = tmp_path / "nokd"
    assert main(["distill", "--teacher", str(teacher), "--student", "fishseg-student", "--data", str(tiny_data),
                 "--out", str(nokd), "--epochs", "1", "--batch", "2", "--imgsz", str(IMGSZ), "--no-kd"]) == 0
    assert "loss_kd_score" not in json.loads((nokd / "metrics.jsonl").read_text().splitlines()[-1])


def _fake_run(path: Path, task: str, complete: bool) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"task": task, "model": "x"}))
    if complete:
        (path / "COMPLETE").write_text("{}")
    return path


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["train", "--task", "detect", "--model", "no-such-net"], "unknown model"),
        (["train", "--task", "embed", "--model", "fishseg-student"], "is a 'detect' model"),
    ],
)
def test_bad_model_is_one_line_and_writes_nothing(tiny_data, tmp_path, capsys, argv_tail, message):
    out = tmp_path / "out"
    assert main([*argv_tail, "--data", str(tiny_data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_missing_data_path(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", "--task", "detect", "--model", "fishseg-student", "--data", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_teacher_of_wrong_task_or_unfinished_is_refused(tiny_data, tmp_path, capsys):
    wrong = _fake_run(tmp_path / "embed_run", "embed", complete=True)
    unfinished = _fake_run(tmp_path / "unfinished", "detect", complete=False)
    for teacher, message in ((wrong, "'embed' model"), (unfinished, "unfinished")):
        out = tmp_path / f"out_{teacher.name}"
        assert main(["distill", "--teacher", str(teacher), "--student", "fishseg-student", "--data", str(tiny_data), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not out.exists()


def test_truncated_or_tampered_checkpoint_is_refused(tiny_data, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tiny_data, run, epochs=1))
    ckpt = run / "best.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(FinprintError, match="best.pt"):
        runs.load_model(run)
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(tampered))
    with pytest.raises(FinprintError, match="best.pt.*(truncated|modified)"):
        runs.load_model(run)
    # Without its checksum record a truncated file is still refused, naming the file.
    (run / "checksums.json").unlink()
    ckpt.write_bytes(data[:100])
    with pytest.raises(FinprintError, match="best.pt"):
        runs.load_model(run)


def test_qat_run_reloads_with_fake_quantisation(tiny_data, tmp_path):
    from finprint.calib.qat import is_qat

    run = tmp_path / "qat"
    train(_cfg(tiny_data, run, epochs=1, qat=True))
    model, cfg = runs.load_model(run)
    assert cfg["qat"] and is_qat(model)
    out = model(torch.rand(1, 3, IMGSZ, IMGSZ))
    assert torch.isfinite(out["scores"]).all()


def test_qat_fine_tuning_starts_from_the_init_runs_weights(tiny_data, tmp_path, capsys):
    from finprint.calib.qat import is_qat

    base = tmp_path / "base"
    train(_cfg(tiny_data, base, epochs=1))
    start = _weights(base)
    tuned = tmp_path / "tuned"
    # lr 0 keeps the weights where they started: what the run holds is what --init loaded.
    train(_cfg(tiny_data, tuned, epochs=1, qat=True, lr=0.0, weight_decay=0.0, init=str(base)))
    model, _ = runs.load_model(tuned)
    assert is_qat(model)
    for name, value in model.state_dict().items():
        if name in start and value.dtype.is_floating_point and "running" not in name and "num_batches" not in name:
            torch.testing.assert_close(value.float(), start[name].float(), msg=name)
    other = tmp_path / "other"
    train(_cfg(tiny_data, other, epochs=1, model="fishseg-student-s"))
    with pytest.raises(FinprintError, match="--init holds a 'fishseg-student-s' model"):
        train(_cfg(tiny_data, tmp_path / "wrong", epochs=1, init=str(other)))


def test_cli_resume_needs_only_the_run_folder(tiny_data, tmp_path, capsys):
    part = tmp_path / "part"
    train(_cfg(tiny_data, part, epochs=2), stop_after_epochs=1)
    assert main(["train", "--resume", "--out", str(part)]) == 0
    assert runs.is_complete(part)
    assert main(["train", "--out", str(tmp_path / "new")]) == 2
    assert "--task, --model, --data required" in capsys.readouterr().err
    assert main(["distill", "--out", str(tmp_path / "new"), "--data", str(tiny_data)]) == 2
    assert "--teacher, --student required" in capsys.readouterr().err


def test_zoom_range_reaches_the_training_data(tiny_data, tmp_path):
    from finprint.distill.detect_task import DetectTask

    dataset, _ = DetectTask().build_data(_cfg(tiny_data, tmp_path / "out", extra={"aug_scale": [0.6, 1.8]}))
    assert dataset.augment is not None and dataset.augment.scale == (0.6, 1.8)
    default, _ = DetectTask().build_data(_cfg(tiny_data, tmp_path / "out"))
    assert default.augment is not None and default.augment.scale == (0.7, 1.3)


@pytest.mark.parametrize("value", ["[1.5,0.5]", "1.2", "[0,1]", "[a,b]"])
def test_bad_zoom_range_is_one_line_and_writes_nothing(tiny_data, tmp_path, capsys, value):
    out = tmp_path / "out"
    argv = ["train", "--task", "detect", "--model", "fishseg-student", "--data", str(tiny_data), "--out", str(out), "--set", f"aug_scale={value}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "aug_scale" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_mask_weight_sets_the_mask_loss_share(tiny_data, tmp_path, capsys):
    import torch

    from finprint.distill import registry
    from finprint.distill.detect_task import DetectTask

    task = DetectTask()
    dataset, _ = task.build_data(_cfg(tiny_data, tmp_path / "out", extra={"no_augment": 1}))
    batch = task.collate([dataset[i] for i in range(2)])
    torch.manual_seed(0)
    model = registry.build("fishseg-student")
    totals = {}
    for weight in (0.0, 2.0, 8.0):
        total, parts = task.loss(model, batch, None, _cfg(tiny_data, tmp_path / "out", extra={"mask_weight": weight}))
        totals[weight] = float(total.detach())
    assert parts["mask"] > 0
    assert totals[8.0] - totals[0.0] == pytest.approx(8 * parts["mask"], rel=1e-4)
    assert totals[2.0] - totals[0.0] == pytest.approx(2 * parts["mask"], rel=1e-4)
    out = tmp_path / "bad"
    argv = ["train", "--task", "detect", "--model", "fishseg-student", "--data", str(tiny_data), "--out", str(out), "--set", "mask_weight=-1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "mask_weight" in err and len(err.splitlines()) == 1 and not out.exists()


def _kd_batch(tiny_data: Path, tmp_path: Path):
    from finprint.distill import registry
    from finprint.distill.detect_task import DetectTask

    task = DetectTask()
    dataset, _ = task.build_data(_cfg(tiny_data, tmp_path / "out", extra={"no_augment": 1}))
    batch = task.collate([dataset[i] for i in range(3)])
    torch.manual_seed(0)
    return task, registry.build("fishseg-teacher").eval(), batch


def _assert_same_targets(a: dict, b: dict) -> None:
    for key in ("scores", "boxes", "soft_masks"):
        assert a[key].dtype == b[key].dtype == torch.float16
        torch.testing.assert_close(a[key].cpu(), b[key].cpu())
    assert len(a["feats"]) == len(b["feats"])
    for x, y in zip(a["feats"], b["feats"], strict=True):
        torch.testing.assert_close(x.cpu(), y.cpu())


def test_uncached_teacher_targets_match_the_cached_ones(tiny_data, tmp_path):
    # The GPU path (teacher_forward, no host cache) must teach exactly what the CPU cache teaches.
    task, teacher, batch = _kd_batch(tiny_data, tmp_path)
    cached = task.teacher_targets(teacher, batch)
    assert len(task._cache) == 3
    _assert_same_targets(task.teacher_forward(teacher, batch), cached)
    _assert_same_targets(task.teacher_targets(teacher, batch), cached)  # second pass: from the cache


@pytest.mark.gpu
def test_teacher_targets_on_a_gpu_skip_the_host_cache(tiny_data, tmp_path):
    task, teacher, batch = _kd_batch(tiny_data, tmp_path)
    cached = task.teacher_targets(teacher, batch)
    on_gpu = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    out = task.teacher_targets(teacher.cuda(), on_gpu)
    assert out["scores"].device.type == "cuda"
    assert len(task._cache) == 3  # only the CPU pass cached
    for key in ("scores", "boxes"):
        torch.testing.assert_close(out[key].cpu(), cached[key], atol=2e-2, rtol=2e-2)
