import http.server
import socket
import threading
import time

import cv2
import numpy as np
import pytest

from finprint.runtime.sources import CameraSource, DropOldestQueue, Frame
from finprint.runtime.watchdog import Watchdog


def test_drop_oldest_queue_never_blocks_and_keeps_newest():
    q = DropOldestQueue(3)
    for i in range(10):
        q.put(i)
    assert q.dropped == 7 and len(q) == 3
    assert [q.get_nowait() for _ in range(3)] == [7, 8, 9]
    assert q.get(timeout=0.01) is None


def _jpeg(img):
    return cv2.imencode(".jpg", img)[1].tobytes()


GOOD = _jpeg(np.full((48, 64, 3), 120, np.uint8))
GRAY = _jpeg(np.full((48, 64), 80, np.uint8))
WRONG_SHAPE = _jpeg(np.full((32, 32, 3), 10, np.uint8))
BROKEN = b"\xff\xd8this is not a jpeg"


class _MjpegServer:
    """A loopback IP camera: every 10th part is broken, grayscale or the wrong size."""

    def __init__(self, port: int = 0):
        stop = self.stop_event = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                n = 0
                try:
                    while not stop.is_set():
                        body = {3: BROKEN, 5: GRAY, 7: WRONG_SHAPE}.get(n % 10, GOOD)
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                        self.wfile.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body + b"\r\n")
                        n += 1
                        time.sleep(0.005)
                except (BrokenPipeError, ConnectionResetError):
                    return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def kill(self):
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()


def _wait(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_mjpeg_camera_survives_server_restart_and_counts_corrupt_frames():
    server = _MjpegServer()
    port = server.port
    q = DropOldestQueue(4)
    src = CameraSource("pen1", f"http://127.0.0.1:{port}/video", "url", q, backoff_initial_s=0.1, backoff_max_s=0.5)
    src.start()
    try:
        assert _wait(lambda: src.stats.frames >= 30)
        assert src.stats.corrupt >= 3  # broken, grayscale, and wrong-shaped parts skipped
        frame = q.get(timeout=1)
        assert isinstance(frame, Frame) and frame.image.shape == (48, 64, 3) and frame.camera == "pen1"
        assert q.dropped > 0  # nobody consumed: oldest frames dropped, capture never blocked

        server.kill()
        assert _wait(lambda: src.stats.state == "reconnecting")
        before = src.stats.frames
        time.sleep(0.3)
        server = _MjpegServer(port)
        assert _wait(lambda: src.stats.frames >= before + 30)
        assert src.stats.reconnects >= 1 and src.stats.state == "streaming"
    finally:
        src.stop()
        server.kill()
    assert not src.alive


def test_restart_limit_marks_camera_failed():
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = CameraSource("dead", f"http://127.0.0.1:{port}/", "url", DropOldestQueue(2),
                       backoff_initial_s=0.01, backoff_max_s=0.02, max_restarts=3)
    src.start()
    assert _wait(lambda: src.stats.state == "failed")
    assert src.stats.failures == 4
    src.stop()


class _SilentReader:
    """A stream that stays open and delivers nothing until closed."""

    def __init__(self):
        self.closed = threading.Event()

    def read(self):
        self.closed.wait()
        raise OSError("closed")

    def close(self):
        self.closed.set()


def test_watchdog_reconnects_a_silent_camera_and_flags_a_stuck_worker(monkeypatch):
    import finprint.runtime.sources as sources

    monkeypatch.setattr(sources, "open_reader", lambda *a, **k: _SilentReader())
    src = CameraSource("quiet", "rtsp://x/y", "url", DropOldestQueue(2), backoff_initial_s=0.01)
    stalls = []
    dog = Watchdog([src], frame_timeout_s=0.2, worker_stall_s=0.3, on_worker_stall=stalls.append)
    src.start()
    dog.start()
    try:
        assert _wait(lambda: src.stats.reconnects >= 2, timeout=5)
        assert dog.watchdog_reconnects >= 2
        assert _wait(lambda: dog.worker_stalled, timeout=5) and stalls
        assert dog.states()["worker"] == "stalled" and not dog.healthy
        dog.beat()
        assert dog.states()["worker"] == "ok"
    finally:
        dog.stop()
        src.stop()


def test_a_video_file_camera_closed_mid_read_from_another_thread_stops_cleanly(tmp_path):
    # Releasing a VideoCapture inside its read() aborted the whole process (seen in a daemon test's stop).
    from finprint.runtime.sources import OpenCvReader

    path = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    for i in range(50):
        writer.write(np.full((240, 320, 3), i * 5, np.uint8))
    writer.release()
    for _ in range(20):
        reader = OpenCvReader(str(path), "file", loop=True)
        errors: list[Exception] = []

        def read_until_closed(reader=reader, errors=errors):
            try:
                while True:
                    reader.read()
            except OSError as exc:
                errors.append(exc)

        thread = threading.Thread(target=read_until_closed)
        thread.start()
        time.sleep(0.01)
        reader.close()
        thread.join(5)
        assert not thread.is_alive() and "reader closed" in str(errors[0])


def test_a_network_camera_that_accepts_and_then_says_nothing_fails_to_open_within_the_timeout():
    """FFmpeg alone waits 30 s; the reader gives up after its open timeout (a real socket, a real FFmpeg)."""
    from finprint.runtime.sources import OpenCvReader

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    start = time.monotonic()
    try:
        with pytest.raises(OSError, match="cannot open url source"):
            OpenCvReader(f"rtsp://127.0.0.1:{server.getsockname()[1]}/cam", "url", open_timeout_s=1.0)
        assert time.monotonic() - start < 10 and accepted  # it did connect, then gave up on the silence
    finally:
        for conn in accepted:
            conn.close()
        server.close()
