"""Cameras: one capture thread per camera into a bounded queue that drops the OLDEST frame.

A slow inference worker must never stall a camera (RTSP servers drop a client that stops reading)
and the freshest frame is the useful one, so a full queue forgets its oldest frame and counts it.
Broken frames (undecodable, grayscale, wrong shape) are skipped and counted, not passed on.
A lost stream is reopened with exponential backoff, up to a restart limit.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import cv2
import numpy as np

from finprint.runtime.redact import redact

log = logging.getLogger(__name__)


class StreamEnded(Exception):
    """A video file reached its end (and does not loop)."""


@dataclass
class Frame:
    camera: str
    index: int  # frame number within this camera since start
    ts: float  # wall-clock capture time, seconds
    image: np.ndarray  # HxWx3 uint8 BGR


class DropOldestQueue:
    """A bounded FIFO whose `put` never blocks: when full, the oldest item is dropped and counted."""

    def __init__(self, maxsize: int) -> None:
        self._items: deque = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: object) -> None:
        with self._cond:
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> object | None:
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: bool(self._items), timeout):
                return None
            return self._items.popleft()

    def get_nowait(self) -> object | None:
        with self._cond:
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class FrameReader(Protocol):
    def read(self) -> np.ndarray | None:
        """The next frame; None for a frame that arrived but cannot be decoded.
        Raises StreamEnded at the end of a file, OSError when the stream is lost."""

    def close(self) -> None: ...


# FFmpeg's own limit for opening or reading a network stream is 30 s: a camera that accepts the connection and
# then says nothing would hold a reconnect, or a close waiting for a read (SIGTERM's drain), that long.
NETWORK_OPEN_TIMEOUT_S = 10.0
NETWORK_READ_TIMEOUT_S = 5.0


class OpenCvReader:
    """Files, USB cameras, RTSP and GStreamer pipelines through cv2.VideoCapture.

    A network stream ("url") gives up opening after `open_timeout_s` and a read after `read_timeout_s`
    (OpenCV >= 4.6; older builds keep FFmpeg's 30 s)."""

    def __init__(self, source: str | int, kind: str, loop: bool = False, open_timeout_s: float = NETWORK_OPEN_TIMEOUT_S,
                 read_timeout_s: float = NETWORK_READ_TIMEOUT_S) -> None:
        self.kind = kind
        self.loop = loop
        self._source = source
        self._shown = redact(source)  # what errors and logs print: no camera password
        self._lock = threading.Lock()  # read() and a close() from another thread (stop, watchdog)
        self._closed = False
        api = cv2.CAP_GSTREAMER if kind == "gstreamer" else cv2.CAP_ANY
        timeouts = [getattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC", None), round(1000 * open_timeout_s),
                    getattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC", None), round(1000 * read_timeout_s)]
        if kind == "url" and None not in timeouts:
            self._cap = cv2.VideoCapture(source, api, timeouts)
        else:
            self._cap = cv2.VideoCapture(source, api)
        if not self._cap.isOpened():
            self._cap.release()
            raise OSError(f"cannot open {kind} source {self._shown!r}")

    @property
    def native_fps(self) -> float | None:
        """A video file's own frame rate (it plays at camera speed unless told otherwise)."""
        fps = float(self._cap.get(cv2.CAP_PROP_FPS)) if self.kind == "file" else 0.0
        return fps if 0 < fps < 1000 else None

    def read(self) -> np.ndarray | None:
        with self._lock:
            if self._closed:
                raise OSError(f"{self.kind} source {self._shown!r}: reader closed")
            image = self._read_locked()
            if self._closed:  # closed by another thread while this read waited: release here, after it
                self._cap.release()
                raise OSError(f"{self.kind} source {self._shown!r}: reader closed")
        if image is None:
            raise OSError(f"{self.kind} source {self._shown!r} stopped delivering frames")
        return image

    def _read_locked(self) -> np.ndarray | None:
        ok, image = self._cap.read()
        if ok:
            return image
        if self.kind == "file":
            if not self.loop:
                raise StreamEnded(self._shown)
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read()
            if ok:
                return image
        return None

    def close(self) -> None:
        """Safe from another thread: releasing a VideoCapture inside its read() aborts the process (FFmpeg),
        so a read in progress finishes first and the reading thread releases it."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._cap.release()
            finally:
                self._lock.release()


# A camera's MJPEG part is a JPEG of some hundred kB; 4K at top quality stays under 16 MB. A larger
# Content-Length (a broken or hostile camera: 1 TB) must not be allocated, and header lines are short.
MJPEG_MAX_PART_BYTES = 32 << 20
MJPEG_MAX_LINE_BYTES = 8192
# Bytes read while looking for the next part boundary before the stream counts as garbage.
MJPEG_MAX_SKIP_BYTES = 2 * MJPEG_MAX_PART_BYTES


class MjpegHttpReader:
    """MJPEG over HTTP (multipart/x-mixed-replace), the format of most IP cameras' `/video` URL.

    Parsed here rather than through FFmpeg so a lost connection is an immediate OSError (socket
    timeout) instead of a hang, and a broken JPEG is one skipped frame instead of a dead stream.
    Everything the camera says is bounded (line length, part size, bytes between parts): a camera
    that breaks a bound is a lost stream (OSError), never a huge allocation.
    """

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = redact(url)  # for messages: no password
        self._resp = urllib.request.urlopen(_request(url), timeout=timeout_s)  # noqa: S310 - camera URL from config
        ctype = self._resp.headers.get("Content-Type", "")
        if "multipart" not in ctype or "boundary=" not in ctype:
            self._resp.close()
            raise ValueError(f"{self.url}: not an MJPEG stream (Content-Type {ctype[:100]!r})")
        self._boundary = b"--" + ctype.split("boundary=", 1)[1].split(";")[0].strip().strip('"').encode()

    def _readline(self) -> bytes:
        line = self._resp.readline(MJPEG_MAX_LINE_BYTES + 1)
        if not line:
            raise OSError(f"{self.url}: stream closed by the camera")
        if len(line) > MJPEG_MAX_LINE_BYTES:
            raise OSError(f"{self.url}: MJPEG line longer than {MJPEG_MAX_LINE_BYTES} bytes: not a camera stream")
        return line

    def read(self) -> np.ndarray | None:
        line = self._readline()
        skipped = 0
        while not line.startswith(self._boundary):
            skipped += len(line)
            if skipped > MJPEG_MAX_SKIP_BYTES:
                raise OSError(f"{self.url}: no MJPEG part boundary in {skipped} bytes")
            line = self._readline()
        length = None
        for _ in range(64):  # a part has a handful of headers
            header = self._readline().strip()
            if not header:
                break
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise OSError(f"{self.url}: MJPEG Content-Length {value.strip()[:40]!r} is not a number") from None
        else:
            raise OSError(f"{self.url}: MJPEG part with more than 64 header lines")
        if length is None:
            raise OSError(f"{self.url}: MJPEG part without Content-Length")
        if not 0 < length <= MJPEG_MAX_PART_BYTES:
            raise OSError(f"{self.url}: MJPEG part of {length} bytes (at most {MJPEG_MAX_PART_BYTES} taken)")
        data = self._resp.read(length)
        if len(data) < length:
            raise OSError(f"{self.url}: stream closed mid-frame")
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)

    def close(self) -> None:
        self._resp.close()


def _request(url: str) -> urllib.request.Request:
    """urllib takes `user:pass@` for part of the host: send it as HTTP Basic authentication instead."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return urllib.request.Request(url)
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return urllib.request.Request(urlunsplit(parts._replace(netloc=host)), headers={"Authorization": f"Basic {token}"})


def open_reader(source: str | int, kind: str, loop: bool = False) -> FrameReader:
    if kind == "url" and str(source).startswith(("http://", "https://")):
        try:
            return MjpegHttpReader(str(source))
        except ValueError:
            log.info("%s: not MJPEG, trying FFmpeg", redact(source))
    return OpenCvReader(source, kind, loop)


@dataclass
class SourceStats:
    frames: int = 0  # good frames handed on
    corrupt: int = 0  # skipped: undecodable, grayscale or wrong shape
    reconnects: int = 0  # successful reopenings after a loss
    failures: int = 0  # failed opens / lost streams
    crashes: int = 0  # capture threads that died of an unexpected error (the watchdog restarts them)
    state: str = "starting"  # starting | streaming | reconnecting | failed | finished | stopped | crashed
    last_frame_ts: float = field(default_factory=time.monotonic)  # last frame or (re)open: the watchdog's silence clock
    last_good_ts: float = field(default_factory=time.monotonic)  # last good frame (or start): /healthz's
    last_error: str = ""  # why the stream was last lost (no password): /healthz says it


# A stream counts as recovered, and its failure count starts again, only once it has delivered frames
# for this long: a source that gives one frame per open (a JPEG renamed .mp4 with `loop: true`) would
# otherwise reset the count at every reopen and never reach "failed".
STABLE_STREAM_S = 2.0
# Capture threads that died of an unexpected error are restarted by the watchdog this many times in a row
# (a thread that then delivers frames for STABLE_STREAM_S starts the count again); then the camera is "failed".
MAX_THREAD_CRASHES = 3


class CameraSource:
    """A capture thread for one camera: read, validate, queue; reopen with backoff when lost."""

    def __init__(
        self,
        camera_id: str,
        source: str | int,
        kind: str,
        queue: DropOldestQueue,
        loop: bool = False,
        fps_limit: float | None = None,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        max_restarts: int = 20,
        stable_s: float = STABLE_STREAM_S,
    ) -> None:
        self.camera_id = camera_id
        self.source = source
        self.shown = redact(source)  # the source as logs and errors print it: no password
        self.kind = kind
        self.queue = queue
        self.loop = loop
        self.fps_limit = fps_limit
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_restarts = max_restarts  # consecutive failures before giving up; 0 = never give up
        self.stable_s = stable_s
        self.stats = SourceStats()
        self._stop = threading.Event()
        self._reconnect = threading.Event()
        self._reader: FrameReader | None = None
        self._reader_lock = threading.Lock()
        self._index = 0  # frame numbers go on across a restarted thread
        self._crash_streak = 0
        self._started = False
        self._thread = self._new_thread()

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._run_guarded, name=f"camera-{self.camera_id}", daemon=True)

    def start(self) -> None:
        self._started = True
        self.stats.last_good_ts = time.monotonic()  # a slow model load before start is not the camera's silence
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._close_reader()  # unblocks a read waiting on the network
        self._thread.join(timeout)
        if self.stats.state not in ("failed", "finished"):
            self.stats.state = "stopped"

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def dead(self) -> bool:
        """Started, not stopped, and its thread is gone without saying it finished or failed."""
        return (self._started and not self._stop.is_set() and not self._thread.is_alive()
                and self.stats.state not in ("finished", "failed", "stopped"))

    def restart_thread(self) -> bool:
        """Called by the watchdog for a capture thread that died (state "crashed"): a new thread, or,
        after MAX_THREAD_CRASHES in a row, the camera is "failed". True when restarted."""
        if not self.dead:
            return False
        if self._crash_streak >= MAX_THREAD_CRASHES:
            if self.stats.state != "failed":
                log.error("camera %s: capture thread died %d times in a row (%s): giving up on it", self.camera_id,
                          self._crash_streak, self.stats.last_error)
                self.stats.state = "failed"
            return False
        if self.stats.state != "crashed":  # ended by something _run_guarded did not see (a BaseException)
            self._crash_streak += 1
            self.stats.crashes += 1
            self.stats.last_error = self.stats.last_error or "capture thread ended unexpectedly"
        log.warning("camera %s: restarting its capture thread (%s)", self.camera_id, self.stats.last_error)
        self.stats.state = "starting"
        self._thread = self._new_thread()
        self._thread.start()
        return True

    def request_reconnect(self, reason: str) -> None:
        """Called by the watchdog when the stream went silent without an error."""
        log.warning("camera %s: reconnecting (%s)", self.camera_id, reason)
        self.stats.last_error = reason
        self._reconnect.set()
        self._close_reader()

    def _close_reader(self) -> None:
        with self._reader_lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            try:
                reader.close()
            except OSError as exc:
                log.debug("camera %s: close: %s", self.camera_id, redact(exc, self.source))

    def _valid(self, image: object, shape: tuple[int, ...] | None) -> bool:
        return (
            isinstance(image, np.ndarray)
            and image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
            and image.shape[0] > 0
            and image.shape[1] > 0
            and (shape is None or image.shape == shape)
        )

    def _run_guarded(self) -> None:
        """The thread's body: an error no reader should raise (a bug, MemoryError) ends the thread with
        state "crashed" and the reason, which /healthz shows and the watchdog acts on; never silently."""
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 - any escape is reported and the thread restarted
            self._crash_streak += 1
            self.stats.crashes += 1
            self.stats.last_error = redact(f"capture thread died: {type(exc).__name__}: {exc}", self.source)[:300]
            log.error("camera %s: %s", self.camera_id, self.stats.last_error)
            self._close_reader()
            self.stats.state = "crashed"

    def _run(self) -> None:
        consecutive_failures = 0
        ever_opened = False
        deleted_said = False
        while not self._stop.is_set():
            try:
                reader = open_reader(self.source, self.kind, self.loop)
            except (OSError, ValueError) as exc:  # ValueError: urllib refusing a malformed URL
                consecutive_failures += 1
                self.stats.failures += 1
                if not self._backoff(consecutive_failures, f"open failed: {exc}"):
                    return
                continue
            with self._reader_lock:
                self._reader = reader
            if ever_opened:
                self.stats.reconnects += 1
            ever_opened = True
            self._reconnect.clear()
            self.stats.state = "streaming"
            opened = self.stats.last_frame_ts = time.monotonic()
            shape: tuple[int, ...] | None = None  # a reconnect may bring a new resolution
            next_due = time.monotonic()
            fps_limit = self.fps_limit or getattr(reader, "native_fps", None)
            recovered = False
            try:
                while not self._stop.is_set() and not self._reconnect.is_set():
                    image = reader.read()
                    if not self._valid(image, shape):
                        self.stats.corrupt += 1
                        continue
                    assert isinstance(image, np.ndarray)
                    shape = image.shape
                    now = time.monotonic()
                    if not recovered and now - opened >= self.stable_s:
                        recovered = True
                        consecutive_failures = 0
                        self._crash_streak = 0
                    self.stats.frames += 1
                    self.stats.last_frame_ts = self.stats.last_good_ts = now
                    self.queue.put(Frame(self.camera_id, self._index, time.time(), image))
                    self._index += 1
                    if self.kind == "file" and not deleted_said and self._index % 100 == 0 and not os.path.exists(str(self.source)):
                        # The open handle keeps the data: playing on is right, but the next reopen will fail.
                        log.warning("camera %s: video file %s was deleted while playing; playing on from the open file, "
                                    "a restart will not find it", self.camera_id, self.shown)
                        deleted_said = True
                    if fps_limit:
                        next_due += 1.0 / fps_limit
                        self._stop.wait(max(0.0, next_due - time.monotonic()))
            except StreamEnded:
                log.info("camera %s: end of video", self.camera_id)
                self.stats.state = "finished"
                self._close_reader()
                return
            except (OSError, ValueError, AttributeError) as exc:
                # AttributeError: http.client reading from a response another thread just closed.
                if self._stop.is_set():
                    break
                consecutive_failures += 1
                self.stats.failures += 1
                self._close_reader()
                if not self._backoff(consecutive_failures, f"stream lost: {exc}"):
                    return
                continue
            self._close_reader()
        self.stats.state = "stopped"

    def _backoff(self, failures: int, why: str) -> bool:
        """Wait before the next attempt; False when the restart limit is reached or stopping."""
        why = self.stats.last_error = redact(why, self.source)[:300]
        if self.max_restarts and failures > self.max_restarts:
            log.error("camera %s: giving up after %d consecutive failures (%s)", self.camera_id, failures - 1, why)
            self.stats.state = "failed"
            return False
        delay = min(self.backoff_initial_s * 2 ** (failures - 1), self.backoff_max_s)
        log.warning("camera %s: %s; retry %d in %.1f s", self.camera_id, why, failures, delay)
        self.stats.state = "reconnecting"
        return not self._stop.wait(delay)
