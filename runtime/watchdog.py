"""The watchdog: cameras that went silent get reconnected, dead capture threads restarted; a stuck
inference worker is reported.

A camera thread notices a closed connection by itself; what it cannot notice is a stream that
stays open but delivers nothing, or its own death (an error no reader should raise). The worker
beats a heartbeat every loop; an old heartbeat means inference is stuck (a hung driver call), which
makes /healthz fail so a supervisor can restart us.

`problems()` is the truth /healthz tells about cameras and the worker: one readable line per fault.
A camera is a problem once it has delivered no frame for `frame_timeout_s`, whatever its state says.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from finprint.runtime.sources import CameraSource

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(
        self,
        sources: list[CameraSource],
        frame_timeout_s: float = 10.0,
        worker_stall_s: float = 30.0,
        on_worker_stall: Callable[[float], None] | None = None,
    ) -> None:
        self.sources = sources
        self.frame_timeout_s = frame_timeout_s
        self.worker_stall_s = worker_stall_s
        self.on_worker_stall = on_worker_stall
        self.watchdog_reconnects = 0
        self.thread_restarts = 0
        self.worker_stalled = False
        self._last_beat = time.monotonic()
        # When each camera was last asked to reconnect: one request per timeout period. Kept apart from the
        # camera's last frame time, which /healthz reads: asking is not the same as receiving.
        self._asked: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def beat(self) -> None:
        """The inference worker calls this every loop, busy or idle."""
        self._last_beat = time.monotonic()
        if self.worker_stalled:
            log.warning("inference worker recovered")
            self.worker_stalled = False

    def heartbeat_age_s(self) -> float:
        return time.monotonic() - self._last_beat

    def start(self) -> None:
        self._last_beat = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def check(self) -> None:
        now = time.monotonic()
        for src in self.sources:
            if src.dead or src.stats.state == "crashed":
                if src.restart_thread():
                    self.thread_restarts += 1
                continue
            silent = now - max(src.stats.last_frame_ts, self._asked.get(src.camera_id, 0.0))
            if src.stats.state == "streaming" and silent > self.frame_timeout_s:
                self.watchdog_reconnects += 1
                self._asked[src.camera_id] = now
                src.request_reconnect(f"no frame for {silent:.1f} s")
        age = self.heartbeat_age_s()
        if age > self.worker_stall_s and not self.worker_stalled:
            self.worker_stalled = True
            log.error("inference worker heartbeat is %.1f s old: worker stuck", age)
            if self.on_worker_stall is not None:
                self.on_worker_stall(age)

    def states(self) -> dict[str, str]:
        out = {src.camera_id: "crashed" if src.dead else src.stats.state for src in self.sources}
        out["worker"] = "stalled" if self.worker_stalled else "ok"
        return out

    def problems(self) -> list[str]:
        """One line per camera that is not watching its pen, and for a stuck worker; [] when all is well."""
        now = time.monotonic()
        out = []
        for src in self.sources:
            state, why = src.stats.state, src.stats.last_error
            if src.dead or state == "crashed":
                out.append(f"camera {src.camera_id}: capture thread died ({why or 'no reason given'}); restarting it")
            elif state == "failed":
                out.append(f"camera {src.camera_id}: failed, gave up reconnecting ({why})")
            elif state in ("starting", "streaming", "reconnecting") and now - src.stats.last_good_ts > self.frame_timeout_s:
                out.append(f"camera {src.camera_id}: no frame for {now - src.stats.last_good_ts:.0f} s ({state}"
                           + (f": {why})" if why else ")"))
        if self.worker_stalled:
            out.append(f"inference worker: heartbeat {self.heartbeat_age_s():.0f} s old, stuck")
        return out

    @property
    def healthy(self) -> bool:
        return not self.problems()

    def _run(self) -> None:
        period = max(0.05, min(self.frame_timeout_s, self.worker_stall_s) / 4)
        while not self._stop.wait(period):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the watchdog must outlive anything one check meets
                log.error("watchdog check failed: %s: %s", type(exc).__name__, exc)
