"""Fault injection with real components (issue 33): misbehaving cameras on 127.0.0.1, a full filesystem,
damaged galleries, careless configs, signals. Each fault must show on /healthz (503 and the reason) or stop
the daemon with one readable line, and nothing already stored is lost: SQLite and JSONL hold the same events.
"""

import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
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
TIMEOUT_S = 1.0  # watchdog.frame_timeout_s of these tests: each fault must show on /healthz within it


def _frame(i: int) -> np.ndarray:
    """A red frame: the toy detector's fish is there (its score follows the red); frames 25-39 are dark,
    so each loop of the video ends a track and begins one: events all the time."""
    if i >= 25:
        return np.zeros((H, W, 3), np.uint8)
    img = np.full((H, W, 3), (40, 40, 230), np.uint8)
    img[40:70, 20:100] = (30, 140, 200)  # the fish the toy detector reports
    cv2.putText(img, str(i), (120, 110), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return img


@pytest.fixture(scope="module")
def farm(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("farm")
    det = make_toy_detector(root / "det.onnx", score_follows_brightness=True)
    emb = make_toy_embedder(root / "emb.onnx", open_set_threshold=0.9)
    (root / "other").mkdir()
    make_toy_embedder(root / "other" / "emb.onnx", seed=7, open_set_threshold=0.9)  # same size, another model
    writer = cv2.VideoWriter(str(root / "pen.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
    for i in range(40):
        writer.write(_frame(i))
    writer.release()
    pipeline = Pipeline(det, emb, "cpu")
    store = Store(root / "template.db")
    store.enroll("fish007", pipeline.embed_crops([_frame(0)[40:70, 20:100]]), source="test")
    store.close()
    pipeline.close()
    cv2.imwrite(str(root / "crop.jpg"), _frame(0)[40:70, 20:100])
    return root


PEN = {"id": "pen1", "loop": True, "px_per_cm": 4.0, "fps_limit": 50}


def _config(farm: Path, tmp_path: Path, cameras: list[dict] | None = None, **extra) -> Path:
    if not (tmp_path / "gallery.db").exists():
        shutil.copy(farm / "template.db", tmp_path / "gallery.db")
    cfg = {
        "cameras": cameras if cameras is not None else [{**PEN, "source": str(farm / "pen.avi")}],
        "models": {"detector": str(farm / "det.onnx"), "embedder": str(farm / "emb.onnx"), "backend": "cpu", "max_batch": 2},
        "gallery": "gallery.db",
        "sinks": {"jsonl": "events.jsonl"},
        "http": {"port": 0},
        "tracking": {"min_hits": 2, "max_lost_frames": 2},
        "watchdog": {"frame_timeout_s": TIMEOUT_S, "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "max_restarts": 0},
    }
    for key, value in extra.items():
        cfg[key] = {**cfg[key], **value} if isinstance(cfg.get(key), dict) and isinstance(value, dict) else value
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _health(daemon: Daemon) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http.port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _until(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def _unhealthy_within(daemon: Daemon, needle: str, timeout: float = TIMEOUT_S + 1.5) -> dict:
    """/healthz turns 503 with a problem containing `needle` in time (the watchdog's check period is
    frame_timeout_s / 4, so a little slack over frame_timeout_s)."""
    seen: list = []

    def bad() -> bool:
        code, body = _health(daemon)
        seen[:] = [code, body]
        return code == 503 and any(needle in p for p in body.get("problems", []))

    assert _until(bad, timeout), f"/healthz did not report {needle!r}: {seen}"
    return seen[1]


def _same_events(tmp_path: Path, db: str = "gallery.db", jsonl: Path | None = None) -> list[str]:
    """SQLite and the JSONL log hold the same events, in the same order, every line whole."""
    lines = (jsonl or tmp_path / "events.jsonl").read_text().splitlines()
    logged = [json.loads(line)["event_id"] for line in lines]
    conn = sqlite3.connect(tmp_path / db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = [json.loads(r[0])["event_id"] for r in conn.execute("SELECT payload FROM events ORDER BY id")]
    finally:
        conn.close()
    assert stored == logged
    return stored


def _no_traceback(capfd, caplog) -> None:
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]


# ---- a misbehaving MJPEG camera ------------------------------------------------------------------------

HEADERS = b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"


class _BadCamera:
    """An IP camera on 127.0.0.1 that answers every connection with one kind of nonsense, within bounds:
    each connection ends when the client leaves, after its bytes are sent, or when the test stops it."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/video"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        rng = random.Random(0)
        try:
            conn.settimeout(2.0)
            conn.recv(4096)
            conn.sendall(HEADERS)
            if self.mode == "huge":  # a part "of a petabyte": the reader must not try to allocate it
                conn.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000000000000\r\n\r\n" + b"\xff" * 1000)
            elif self.mode == "endless_header":  # 30 MB of one header line, no newline
                conn.sendall(b"--frame\r\nX-Junk: ")
                for _ in range(30 * 16):
                    conn.sendall(b"a" * 65536)
            elif self.mode == "garbage":  # bytes and newlines, never a boundary
                for _ in range(200):
                    conn.sendall(rng.randbytes(2048) + b"\r\n")
            # every mode then stalls (mode "stall" at once): the connection stays open, silent
            self.stop.wait(10)
        except OSError:
            pass  # the client hung up: that is how a reader gives up on us
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("mode, reason", [("huge", "MJPEG part of 1000000000000000 bytes"),
                                          ("endless_header", "line longer than"),
                                          ("stall", "no frame for"),
                                          ("garbage", "no frame for")])
def test_a_misbehaving_mjpeg_camera_shows_on_healthz_and_the_other_pen_goes_on(farm, tmp_path, mode, reason, capfd, caplog):
    """Defect 1: a part with Content-Length 10^15 killed the capture thread (MemoryError) with /healthz 200."""
    camera = _BadCamera(mode)
    cams = [{**PEN, "source": str(farm / "pen.avi")}, {"id": "cam2", "source": camera.url, "px_per_cm": 4.0}]
    daemon = Daemon(load_config(_config(farm, tmp_path, cameras=cams)))
    daemon.start()
    try:
        body = _unhealthy_within(daemon, "camera cam2: ")
        assert any(reason in p for p in body["problems"]) or _until(
            lambda: any(reason in p for p in _health(daemon)[1]["problems"]), 3.0), body
        assert not any("pen1" in p for p in body["problems"])
        before = daemon.processed["pen1"]
        assert _until(lambda: daemon.processed["pen1"] > before + 5, 10)  # the good pen is still watched
        src = daemon.sources[1]
        assert src.alive and src.stats.crashes == 0 and src.stats.failures >= (0 if mode in ("stall", "garbage") else 1)
        assert _until(lambda: daemon.events_emitted > 0, 15)
    finally:
        daemon.stop()
        camera.close()
    assert _same_events(tmp_path)
    _no_traceback(capfd, caplog)


class _BuggyReader:
    def read(self):
        raise KeyError("a bug in a reader")

    def close(self):
        pass


def test_a_dead_capture_thread_is_restarted_then_failed_and_healthz_says_so(farm, tmp_path, monkeypatch, capfd, caplog):
    """Defect 1: the watchdog never checked that a camera's thread was alive; its state stayed "streaming"."""
    import finprint.runtime.sources as sources

    real_open = sources.open_reader
    monkeypatch.setattr(sources, "open_reader",
                        lambda source, kind, loop=False: _BuggyReader() if "bug" in str(source) else real_open(source, kind, loop))
    cams = [{**PEN, "source": str(farm / "pen.avi")}, {"id": "cam2", "source": "rtsp://127.0.0.1:9/bug", "px_per_cm": 4.0}]
    daemon = Daemon(load_config(_config(farm, tmp_path, cameras=cams)))
    daemon.start()
    try:
        src = daemon.sources[1]
        _unhealthy_within(daemon, "camera cam2: ")  # a dead thread is a problem at once, not a "streaming" camera
        assert _until(lambda: daemon.watchdog.thread_restarts >= 1, TIMEOUT_S + 1)  # noticed and restarted
        body = _unhealthy_within(daemon, "camera cam2: failed")  # three deaths in a row: given up, said so
        assert "KeyError" in " ".join(body["problems"]) and body["states"]["cam2"] == "failed"
        assert src.stats.crashes == 3 and not src.alive
        assert _until(lambda: daemon.events_emitted > 0, 15)
    finally:
        daemon.stop()
    assert _same_events(tmp_path)
    assert "Traceback" not in capfd.readouterr().err


# ---- a sink on a full filesystem -----------------------------------------------------------------------


def _tiny_tmpfs(folder: Path) -> bool:
    folder.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(folder)], capture_output=True).returncode == 0


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass  # ENOSPC: full, as wanted
    return filler


@pytest.mark.parametrize("sink", ["jsonl", "sqlite"])
def test_a_full_filesystem_under_a_sink_shows_on_healthz_and_loses_nothing(farm, tmp_path, sink, capfd, caplog):
    """Defect 2: a full disk (or an SQLite error) killed the inference worker, /healthz said "ok", the log's last
    line was cut and SQLite held events the log never got. Here: a 512 kB tmpfs filled up while the daemon
    runs (mounting works as root), else /dev/full for the log."""
    disk = tmp_path / "disk"
    mounted = _tiny_tmpfs(disk)
    if not mounted and sink == "sqlite":
        pytest.skip("a database cannot live on /dev/full: this case needs a tmpfs mount (root)")
    try:
        jsonl = disk / "events.jsonl" if mounted and sink == "jsonl" else tmp_path / "events.jsonl" if mounted else Path("/dev/full")
        sinks = {"jsonl": str(jsonl), **({"sqlite": str(disk / "events.db")} if sink == "sqlite" else {})}
        db = disk / "events.db" if sink == "sqlite" else tmp_path / "gallery.db"
        daemon = Daemon(load_config(_config(farm, tmp_path, sinks=sinks)))
        daemon.start()
        try:
            if mounted:
                assert _until(lambda: bool(jsonl.read_text().strip()) if jsonl.exists() else False, 20)  # SQLite has it too
                filler = _fill(disk)
            body = _unhealthy_within(daemon, f"sink {sink}: cannot write", timeout=20)
            assert "full" in " ".join(body["problems"]) or "No space" in " ".join(body["problems"]), body
            done = daemon.processed["pen1"]
            assert _until(lambda: daemon.processed["pen1"] > done + 10, 10)  # the worker lives on
            assert daemon._worker.is_alive()
            if mounted:
                filler.unlink()  # space again: the pending events are written, health recovers
                assert _until(lambda: _health(daemon)[0] == 200, 5), _health(daemon)
        finally:
            daemon.stop()
        if mounted:
            assert daemon.exit_code == 0 and daemon.events_lost == 0
            assert _same_events(db.parent, db=db.name, jsonl=jsonl)
        else:  # nothing will ever fit in /dev/full: the exit code says events were lost, SQLite kept them all
            assert daemon.exit_code == 1 and daemon.events_lost > 0
            conn = sqlite3.connect(db)
            assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == daemon.events_emitted
            conn.close()
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)  # lazy: a file still open must not leave it mounted
    _no_traceback(capfd, caplog)


# ---- the command line: one line and exit 2, never a traceback ------------------------------------------


def _cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", FINPRINT_ORT_THREADS="1")
    return subprocess.run([sys.executable, "-m", "finprint.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)


def _one_line_error(proc: subprocess.CompletedProcess, needle: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("finprint: error:") and needle in last, proc.stderr[-3000:]
    return last


def _corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flipped":  # page 3 (a table's b-tree page) overwritten: the file still opens
        data[2 * 4096: 2 * 4096 + 40] = b"\xff" * 40
    elif how == "truncated":
        data = data[: len(data) // 3 + 100]
    else:  # not a database at all
        data = bytearray(b"this is my shopping list, not a gallery\n" * 200)
    path.write_bytes(bytes(data))


def _big_gallery(farm: Path, path: Path) -> None:
    shutil.copy(farm / "template.db", path)
    store = Store(path)
    store.enroll("fish008", np.random.default_rng(0).normal(size=(40, 128)).astype(np.float32))
    store.write_events([{"type": "note", "ts": float(i), "camera": "pen1", "payload": "x" * 500} for i in range(40)])
    store.close()


@pytest.mark.parametrize("how", ["flipped", "truncated", "foreign"])
def test_a_damaged_gallery_is_one_line_and_exit_2_for_enroll_check_and_serve(farm, tmp_path, how):
    """Defect 6: enroll wrote into a malformed gallery and exited 0; serve crashed with a traceback (a
    systemd restart loop); --check never opened the gallery."""
    gallery = tmp_path / "gallery.db"
    _big_gallery(farm, gallery)
    _corrupt(gallery, how)
    damaged = gallery.read_bytes()
    proc = _cli("enroll", "--gallery", str(gallery), "--id", "fish009", "--embedder", str(farm / "emb.onnx"),
                "--backend", "cpu", str(farm / "crop.jpg"))
    _one_line_error(proc, str(gallery))
    assert gallery.read_bytes() == damaged  # nothing written into it
    config = _config(farm, tmp_path)
    _one_line_error(_cli("serve", "--config", str(config), "--check"), "gallery.db")
    _one_line_error(_cli("serve", "--config", str(config)), "gallery.db")
    assert not (tmp_path / "events.jsonl").exists()


def test_a_manifest_that_is_a_folder_or_missing_stops_the_daemon_and_check(farm, tmp_path):
    """Defect 5: a manifest that was a folder (or missing) turned the integrity check off: a swapped
    ONNX then loaded unchecked, with exit 0."""
    models = tmp_path / "models"
    shutil.copytree(farm, models, ignore=shutil.ignore_patterns("*.db", "*.avi", "other"))
    shutil.copy(farm / "other" / "emb.onnx", models / "emb.onnx")  # the swapped model
    (models / "emb.manifest.json").unlink()
    (models / "emb.manifest.json").mkdir()
    cams = [{**PEN, "source": str(farm / "pen.avi")}]
    config = _config(farm, tmp_path, cameras=cams, models={"embedder": str(models / "emb.onnx")})
    _one_line_error(_cli("serve", "--config", str(config), "--check"), "is not a file")
    _one_line_error(_cli("serve", "--config", str(config)), "is not a file")
    (models / "emb.manifest.json").rmdir()  # missing: required unless the farm says otherwise
    _one_line_error(_cli("serve", "--config", str(config), "--check"), "manifest not found for emb.onnx")
    config = _config(farm, tmp_path, cameras=cams, models={"embedder": str(models / "emb.onnx"), "require_manifest": False})
    proc = _cli("serve", "--config", str(config), "--check")
    assert proc.returncode == 0 and "no manifest" in proc.stderr, proc.stderr[-2000:]


def test_check_runs_a_test_inference_and_a_failing_model_shows_on_healthz(farm, tmp_path, monkeypatch, caplog):
    """Defect 4: a manifest whose preprocess size does not fit the ONNX failed every batch while /healthz said
    200 and --check said ok."""
    models = tmp_path / "models"
    shutil.copytree(farm, models, ignore=shutil.ignore_patterns("*.db", "*.avi", "other"))
    manifest = json.loads((models / "det.manifest.json").read_text())
    manifest["preprocess"]["width"] = manifest["preprocess"]["height"] = 32  # the ONNX takes 64 x 64
    (models / "det.manifest.json").write_text(json.dumps(manifest))
    config = _config(farm, tmp_path, models={"detector": str(models / "det.onnx")})
    _one_line_error(_cli("serve", "--config", str(config), "--check"), "test inference on a blank frame failed")
    _one_line_error(_cli("serve", "--config", str(config)), "test inference on a blank frame failed")

    # A model that starts failing while running (a driver fault, say): /healthz says so within frame_timeout_s.
    daemon = Daemon(load_config(_config(farm, tmp_path)))
    daemon.start()
    try:
        assert _until(lambda: daemon.processed["pen1"] > 3, 15)
        assert _health(daemon)[0] == 200

        def broken(feeds):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        monkeypatch.setattr(daemon.pipeline.detector, "infer", broken)
        body = _unhealthy_within(daemon, "inference: ")
        assert "illegal memory access" in " ".join(body["problems"])
        assert daemon._worker.is_alive()
        assert _until(lambda: daemon.inference_errors > 20, 10)
        said = [r for r in caplog.records if "inference failed" in r.getMessage()]
        assert len(said) == 1  # one line per LOG_REPEAT_S, not one per batch
    finally:
        daemon.stop()
    _same_events(tmp_path)


def test_check_binds_the_port_and_serve_says_in_one_line_when_it_is_taken(farm, tmp_path):
    """Defect 8: --check passed, then serve crashed with a traceback on a taken port or a foreign address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        config = _config(farm, tmp_path, http={"port": taken.getsockname()[1]})
        _one_line_error(_cli("serve", "--config", str(config), "--check"), "http: cannot listen on 127.0.0.1")
        _one_line_error(_cli("serve", "--config", str(config)), "http: cannot listen on 127.0.0.1")
    # TEST-NET-3: no machine has it. Without a token the daemon refuses the bind before it tries it.
    config = _config(farm, tmp_path, http={"port": 0, "bind": "203.0.113.7"})
    _one_line_error(_cli("serve", "--config", str(config), "--check"), "every route needs a token")
    config = _config(farm, tmp_path, http={"port": 0, "bind": "203.0.113.7", "token": "t" * 32})
    _one_line_error(_cli("serve", "--config", str(config), "--check"), "http: cannot listen on 203.0.113.7")
    proc = _cli("serve", "--config", str(_config(farm, tmp_path, http={"port": 0})), "--check")
    assert proc.returncode == 0 and "models load and infer" in proc.stdout, proc.stderr[-2000:]


def test_a_gallery_whose_folder_is_not_writable_is_refused(farm, tmp_path):
    """Defect 8: only the gallery file was checked; SQLite's -wal/-shm beside it then failed in serve."""
    import tempfile

    from finprint.errors import ConfigError

    root = Path(tempfile.mkdtemp(prefix="finprint-ro-"))  # under /tmp, which every user can reach
    as_root = os.geteuid() == 0
    try:
        os.chmod(root, 0o755)
        for name in ("det.onnx", "emb.onnx", "template.db"):
            shutil.copy(farm / name, root / name)
            os.chmod(root / name, 0o666)
        os.rename(root / "template.db", root / "gallery.db")
        cfg = {"cameras": [{"id": "pen1", "source": 0, "px_per_cm": 4.0}],
               "models": {"detector": "det.onnx", "embedder": "emb.onnx"}, "gallery": "gallery.db"}
        (root / "farm.yaml").write_text(yaml.safe_dump(cfg))
        os.chmod(root / "farm.yaml", 0o644)
        os.chmod(root, 0o555)  # the file is writable, its folder is not
        if as_root:  # root may write anywhere: check as the user the daemon would run as
            os.seteuid(65534)
        try:
            with pytest.raises(ConfigError, match=r"is not writable \(SQLite keeps its -wal"):
                load_config(root / "farm.yaml")
        finally:
            if as_root:
                os.seteuid(0)
    finally:
        os.chmod(root, 0o755)
        shutil.rmtree(root)


def test_idle_http_connections_are_dropped_and_an_open_bind_is_refused_or_warned(monkeypatch, tmp_path, caplog):
    """Defect 9: each idle connection pinned a thread forever; bind "" and 0.0.0.0 passed without a word (now:
    0.0.0.0 needs a token)."""
    from prometheus_client import CollectorRegistry

    import finprint.runtime.http as http
    from finprint.errors import ConfigError

    monkeypatch.setattr(http, "CONNECTION_TIMEOUT_S", 0.5, raising=False)
    server = http.HealthServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, {}))
    server.start()
    baseline = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
    try:
        assert _until(lambda: threading.active_count() >= baseline + 5, 3)  # each connection took a thread...
        assert _until(lambda: threading.active_count() <= baseline, 3), threading.active_count() - baseline  # ...and let go
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200  # still serving
    finally:
        for s in idle:
            s.close()
        server.stop()

    base = {"cameras": [{"id": "c", "source": 0, "px_per_cm": 1}], "models": {"detector": "d.onnx", "embedder": "e.onnx"},
            "gallery": "g.db"}
    (tmp_path / "d.onnx").write_bytes(b"x")
    (tmp_path / "e.onnx").write_bytes(b"x")
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump({**base, "http": {"bind": ""}}))
    with pytest.raises(ConfigError, match="http.bind: empty"):
        load_config(path)
    monkeypatch.delenv("FINPRINT_HTTP_TOKEN", raising=False)
    path.write_text(yaml.safe_dump({**base, "http": {"bind": "0.0.0.0"}}))
    with pytest.raises(ConfigError, match="every route needs a token"):  # issue 32: no open page on the network
        load_config(path)
    monkeypatch.setenv("FINPRINT_HTTP_TOKEN", "0123456789abcdef0123")
    assert load_config(path).http.token == "0123456789abcdef0123"
    path.write_text(yaml.safe_dump({**base, "http": {"bind": "0.0.0.0", "token": "short"}}))
    with pytest.raises(ConfigError, match="http.token"):
        load_config(path)


BAD_IDS = ["", "   ", "unknown", "Unknown", "fish\n007  2025-01-01 00:00  99", "fish\x1b[31m", "f\u0456sh007", "x" * 10000]


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=["empty", "blank", "unknown", "Unknown", "newline", "control", "lookalike", "long"])
def test_enroll_refuses_ids_that_are_empty_reserved_or_unprintable(farm, tmp_path, bad_id, capsys):
    """Defect 10: enroll took any id: empty, "unknown" (the matcher's own label), a newline faking a row."""
    from finprint.cli import main

    gallery = tmp_path / "g.db"
    code = main(["enroll", "--gallery", str(gallery), "--id", bad_id, "--embedder", str(farm / "emb.onnx"),
                 "--backend", "cpu", str(farm / "crop.jpg")])
    err = capsys.readouterr().err
    assert code == 2 and "individual id" in err and len(err.strip().splitlines()) == 1, err[-2000:]
    assert not gallery.exists()  # refused before anything was opened


def test_a_gallery_refuses_embeddings_of_another_embedder(farm, tmp_path):
    """Defect 10: a gallery took embeddings of two models of the same size, silently."""
    gallery = tmp_path / "gallery.db"
    args = ("--backend", "cpu", str(farm / "crop.jpg"))
    proc = _cli("enroll", "--gallery", str(gallery), "--id", "fish001", "--embedder", str(farm / "emb.onnx"), *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    other = farm / "other" / "emb.onnx"
    _one_line_error(_cli("enroll", "--gallery", str(gallery), "--id", "fish002", "--embedder", str(other), *args),
                    "enrolled with embedder emb.onnx")
    assert Store(gallery).count("embeddings") == 1
    config = _config(farm, tmp_path, models={"embedder": str(other)})
    _one_line_error(_cli("serve", "--config", str(config), "--check"), "enrolled with embedder emb.onnx")


@pytest.mark.parametrize("sinks", [{"jsonl": "gallery.db"}, {"sqlite": "events.db", "jsonl": "events.db"},
                                   {"jsonl": "gallery.db-wal"}, {"sqlite": "det.onnx"}])
def test_sinks_that_would_overwrite_each_other_are_refused(farm, tmp_path, sinks):
    """Defect 11: `sinks.jsonl: gallery.db` passed --check and appended the log to the gallery."""
    shutil.copy(farm / "det.onnx", tmp_path / "det.onnx")
    config = _config(farm, tmp_path, sinks=sinks, models={"detector": str(tmp_path / "det.onnx")})
    before = (tmp_path / "gallery.db").read_bytes()
    _one_line_error(_cli("serve", "--config", str(config), "--check"), "every sink needs its own file")
    assert (tmp_path / "gallery.db").read_bytes() == before


def test_camera_ids_cannot_leave_the_snapshot_folder_and_a_failed_snapshot_shows(farm, tmp_path, capfd, caplog):
    """Defect 7: a camera id "../../x" wrote above the snapshots folder; a failed imwrite was ignored and its
    event named a snapshot that did not exist."""
    from finprint.errors import ConfigError

    snaps = tmp_path / "a" / "b" / "snaps"
    snaps.mkdir(parents=True)
    for bad in ("../../x", "pen 2/left", "pen\n2", ""):
        with pytest.raises(ConfigError, match="cameras.0.id"):
            load_config(_config(farm, tmp_path, cameras=[{**PEN, "id": bad, "source": str(farm / "pen.avi")}],
                                sinks={"snapshots": str(snaps)}))
    daemon = Daemon(load_config(_config(farm, tmp_path, sinks={"snapshots": str(snaps)})))
    shutil.rmtree(snaps)  # the folder goes away while the daemon runs
    daemon.start()
    try:
        _unhealthy_within(daemon, "sink snapshots: cannot write", timeout=15)
    finally:
        daemon.stop()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert any(e["type"] == "identified" for e in events) and not any("snapshot" in e for e in events)
    assert not [p for p in tmp_path.rglob("*.jpg") if "review" not in p.relative_to(tmp_path).parts]  # review crops are not snapshots
    _same_events(tmp_path)
    _no_traceback(capfd, caplog)


def test_a_source_that_gives_one_frame_per_open_ends_failed(farm, tmp_path, caplog):
    """Defect 12: one good frame reset the failure count, so a JPEG renamed .mp4 with loop: true reconnected
    every half second forever."""
    from finprint.runtime.sources import CameraSource, DropOldestQueue

    fake = tmp_path / "still.mp4"
    fake.write_bytes(cv2.imencode(".jpg", _frame(0))[1].tobytes())
    src = CameraSource("still", str(fake), "file", DropOldestQueue(4), loop=True, backoff_initial_s=0.01,
                       backoff_max_s=0.02, max_restarts=5)
    src.start()
    try:
        assert _until(lambda: src.stats.state == "failed", 10), (src.stats.state, src.stats.frames, src.stats.failures)
        assert src.stats.frames >= 2  # it did open, and delivered, each time
    finally:
        src.stop()


def test_a_video_deleted_while_playing_is_said(farm, tmp_path, caplog):
    """Defect 12: a deleted video played on from its open handle without a word."""
    from finprint.runtime.sources import CameraSource, DropOldestQueue

    video = tmp_path / "pen.avi"
    shutil.copy(farm / "pen.avi", video)
    src = CameraSource("pen", str(video), "file", DropOldestQueue(4), loop=True, fps_limit=400)
    src.start()
    try:
        assert _until(lambda: src.stats.frames > 5, 10)
        video.unlink()
        assert _until(lambda: "was deleted while playing" in caplog.text, 10)
        assert src.stats.state == "streaming"
    finally:
        src.stop()


def _serve(config: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", FINPRINT_ORT_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "finprint.cli", *extra, "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_events(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not (path.exists() and path.read_text().strip()):
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited early: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)


def test_sighup_drains_like_sigterm(farm, tmp_path):
    """Defect 12: SIGHUP had no handler: the daemon died at once, without draining."""
    proc = _serve(_config(farm, tmp_path))
    _wait_for_events(tmp_path / "events.jsonl", proc)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    events = _same_events(tmp_path)
    last = json.loads((tmp_path / "events.jsonl").read_text().splitlines()[-1])
    assert events and last["type"] == "track_end"  # the open track was closed on the way out


SECRETS = ("S3cretPw", "Qu3ryPw", "GstPw99", "HdrPw77")


def test_no_camera_password_reaches_a_log_an_error_or_an_endpoint(farm, tmp_path, capfd, caplog):
    """Defect 3: rtsp://user:pass@host failed the URL check and was printed in full; sources were logged
    unredacted on every retry; a GStreamer pipeline holding rtsp:// was taken for a URL."""
    import logging

    from finprint.errors import ConfigError

    caplog.set_level(logging.DEBUG)
    camera = _BadCamera("stall")
    port = camera.port
    cams = [
        {**PEN, "source": str(farm / "pen.avi")},
        {"id": "userinfo", "source": "rtsp://admin:S3cretPw@127.0.0.1:9/stream1", "px_per_cm": 4.0},
        {"id": "query", "source": f"http://127.0.0.1:{port}/video?user=admin&pwd=Qu3ryPw", "px_per_cm": 4.0},
        {"id": "gst", "source": "rtspsrc location=rtsp://admin:GstPw99@127.0.0.1:9/x user-pw=HdrPw77 ! decodebin ! "
                                "videoconvert ! appsink", "px_per_cm": 4.0},
        {"id": "http", "source": f"http://viewer:S3cretPw@127.0.0.1:{port}/video", "px_per_cm": 4.0},
    ]
    cfg = load_config(_config(farm, tmp_path, cameras=cams, watchdog={"max_restarts": 3}))
    assert cfg.cameras[3].resolved_kind() == "gstreamer"
    daemon = Daemon(cfg)
    daemon.start()
    try:
        _unhealthy_within(daemon, "camera query: ")
        _unhealthy_within(daemon, "camera userinfo: ")
        said = lambda cam: any(f"camera {cam}" in r.getMessage() for r in caplog.records)  # noqa: E731
        assert _until(lambda: all(said(c) for c in ("userinfo", "query", "gst", "http")), 15)  # each has had its say
        base = f"http://127.0.0.1:{daemon.http.port}"
        endpoints = [json.dumps(_health(daemon)[1]), urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()]
    finally:
        daemon.stop()
        camera.close()
    with pytest.raises(ConfigError) as bad:  # a config error quoting the source masks it too
        load_config(_config(farm, tmp_path, cameras=[{"id": "c", "source": "rtsp://admin:S3cretPw@bad host/x", "px_per_cm": 1}]))
    logs = [r.getMessage() for r in caplog.records]
    texts = [*logs, *endpoints, str(bad.value), capfd.readouterr().err, (tmp_path / "events.jsonl").read_text()]
    for secret in SECRETS:  # no password in any of it
        leaks = [t for t in texts if secret in t]
        assert not leaks, leaks[0][:500]


@pytest.mark.parametrize("source, secret", [
    ("rtsp://admin:S3cretPw@10.0.0.5:554/stream1", "S3cretPw"),
    ("rtsp://admin:p@ss@word@10.0.0.5/x", "p@ss@word"),
    ("http://10.0.0.5/video.cgi?user=admin&pwd=Qu3ryPw", "Qu3ryPw"),
    ("rtspsrc location=rtsp://u:GstPw99@10.0.0.5/x ! decodebin ! appsink", "GstPw99"),
    ("rtspsrc location=rtsp://10.0.0.5/x user-id=admin user-pw=HdrPw77 ! decodebin ! appsink", "HdrPw77"),
    ('rtspsrc location="rtsp://10.0.0.5/x" user-pw="Quoted Pw1" ! appsink', "Quoted Pw1"),
])
def test_redact_masks_every_form_of_camera_password(source, secret):
    from finprint.runtime.redact import redact

    assert secret not in redact(source) and "10.0.0.5" in redact(source)
    quoted = f"nonnumeric port: '{secret}@10.0.0.5'"  # a library error quoting part of the URL
    assert secret not in redact(quoted, source)
