import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from finprint.runtime.config import load_config
from finprint.runtime.daemon import Daemon
from finprint.runtime.pipeline import Pipeline
from finprint.runtime.store import Store
from finprint.testing import make_toy_detector, make_toy_embedder

W, H = 160, 120


def _frame(i: int) -> np.ndarray:
    img = np.full((H, W, 3), 40, np.uint8)
    img[40:70, 20:100] = (30, 140, 200)  # the fish the toy detector reports (input box 8,24,40,36)
    cv2.putText(img, str(i), (120, 110), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return img


@pytest.fixture(scope="module")
def farm(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("farm")
    det = make_toy_detector(root / "det.onnx")
    emb = make_toy_embedder(root / "emb.onnx", open_set_threshold=0.9)
    writer = cv2.VideoWriter(str(root / "pen.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
    for i in range(40):
        writer.write(_frame(i))
    writer.release()
    pipeline = Pipeline(det, emb, "cpu")
    crop = _frame(0)[40:70, 20:100]
    store = Store(root / "template.db")
    store.enroll("fish007", pipeline.embed_crops([crop]), source="test")
    store.close()
    pipeline.close()
    return root


def _config(farm: Path, tmp_path: Path, **extra) -> Path:
    (tmp_path / "gallery.db").write_bytes((farm / "template.db").read_bytes())
    cfg = {
        "cameras": [{"id": "pen1", "source": str(farm / "pen.avi"), "loop": True, "px_per_cm": 4.0, "fps_limit": 100}],
        "models": {"detector": str(farm / "det.onnx"), "embedder": str(farm / "emb.onnx"), "backend": "cpu", "max_batch": 2},
        "gallery": "gallery.db",
        "sinks": {"jsonl": "events.jsonl", "snapshots": "."},
        "http": {"port": 0},
        "tracking": {"min_hits": 2},
    }
    cfg.update(extra)
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _serve(config: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", FINPRINT_ORT_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "finprint.cli", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_events(path: Path, proc: subprocess.Popen, n: int = 1, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited early: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("no events in time")


def test_sigterm_drains_and_flushes_every_event(farm, tmp_path):
    proc = _serve(_config(farm, tmp_path))
    _wait_for_events(tmp_path / "events.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    jsonl = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    conn = sqlite3.connect(tmp_path / "gallery.db")
    rows = [json.loads(r[0]) for r in conn.execute("SELECT payload FROM events ORDER BY id")]
    assert {e["event_id"] for e in rows} == {e["event_id"] for e in jsonl}
    types = [e["type"] for e in jsonl]
    assert types[0] == "identified" and jsonl[0]["individual_id"] == "fish007"
    assert types[-1] == "track_end"  # the open track was closed and flushed on the way out
    end = jsonl[-1]
    assert end["individual_id"] == "fish007" and abs(end["length_cm"] - 80 / 4.0) < 2.0
    n, sightings = conn.execute("SELECT COUNT(*), (SELECT sightings FROM individuals) FROM sightings").fetchone()
    assert n == 1 and sightings == 1
    assert list(tmp_path.glob("pen1_*.jpg")), "a snapshot per identified track"


def test_kill_9_leaves_a_consistent_database(farm, tmp_path):
    proc = _serve(_config(farm, tmp_path))
    _wait_for_events(tmp_path / "events.jsonl", proc)
    time.sleep(0.5)
    proc.kill()
    proc.wait(10)
    conn = sqlite3.connect(tmp_path / "gallery.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n_db = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    n_log = len((tmp_path / "events.jsonl").read_text().splitlines())
    assert n_db >= n_log >= 1  # SQLite commits before the log line is written
    assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 1


def test_health_and_metrics_while_running_two_cameras(farm, tmp_path):
    cam = {"source": str(farm / "pen.avi"), "loop": True, "px_per_cm": 4.0, "fps_limit": 50}
    cfg = load_config(_config(farm, tmp_path, cameras=[{"id": "pen1", **cam}, {"id": "pen2", **cam}]))
    daemon = Daemon(cfg)
    daemon.start()
    try:
        base = f"http://127.0.0.1:{daemon.http.port}"
        end = time.monotonic() + 30
        while min(daemon.processed.values()) < 10 and time.monotonic() < end:
            time.sleep(0.05)
        health = json.loads(urllib.request.urlopen(base + "/healthz", timeout=5).read())
        assert health["status"] == "ok" and health["states"]["pen1"] == health["states"]["pen2"] == "streaming"
        metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        for name in ("finprint_fps{camera=\"pen1\"}", "finprint_queue_drops_total", "finprint_reconnects_total",
                     "finprint_unknown_fish_total", "finprint_watchdog_state", "finprint_inference_latency_ms"):
            assert name in metrics, name
    finally:
        daemon.stop()
    assert daemon.events_emitted >= 4  # identified + track_end per camera
    assert min(daemon.processed.values()) >= 10  # one worker served both cameras



def test_the_daemon_tracks_and_splits_as_its_gallery_was_tuned_unless_the_config_says(farm, tmp_path):
    from finprint.runtime.tuned import file_digest

    for tracking, expected in (({"min_hits": 2}, "gallery"),
                               ({"min_hits": 2, "appearance_space": "embedder", "split_window": 0}, "embedder")):
        folder = tmp_path / expected
        folder.mkdir()
        path = _config(farm, folder, tracking=tracking)
        store = Store(folder / "gallery.db")
        store.set_tracking(0.5, 0.0, "det.onnx", file_digest(farm / "det.onnx"), file_digest(farm / "emb.onnx"),
                           "calib.mp4", appearance_space="gallery", split_window=12)
        store.close()
        daemon = Daemon(load_config(path))
        daemon.start()
        try:
            resolver = daemon.chains["pen1"].resolver
            assert resolver.appearance_space == expected
            assert resolver.split_window == (12 if expected == "gallery" else 0)
        finally:
            daemon.stop()


def test_a_low_score_under_the_detectors_threshold_is_said_at_start(farm, tmp_path, caplog):
    # The pipeline drops detections under the detector's threshold (the toy manifest's 0.25) before the tracker.
    for tracking, warned in (({"min_hits": 2}, False), ({"min_hits": 2, "low_score": 0.25}, False),
                             ({"min_hits": 2, "low_score": 0.1}, True)):
        folder = tmp_path / str(tracking.get("low_score"))
        folder.mkdir()
        caplog.clear()
        daemon = Daemon(load_config(_config(farm, folder, tracking=tracking)))
        daemon.start()
        try:
            said = [r.getMessage() for r in caplog.records if "tracking.low_score" in r.getMessage()]
            assert bool(said) == warned, said
            if warned:
                assert "0.1 is under the detector's score threshold 0.25" in said[0]
        finally:
            daemon.stop()


def test_the_trackers_second_pass_takes_whatever_the_detector_passes_by_default():
    from finprint.runtime.config import TrackingConfig

    assert TrackingConfig().low_score is None and TrackingConfig().make_tracker().low_score == 0.0
    assert TrackingConfig(low_score=0.2).make_tracker().low_score == 0.2
