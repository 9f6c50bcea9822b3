"""The watchdog: cameras that went silent get reconnected; a stuck inference worker is reported.

A camera thread notices a closed connection by itself; what it cannot notice is a stream that
stays open but delivers nothing. The worker beats a heartbeat every loop; an old heartbeat means
inference is stuck (a hung driver call), which makes /healthz fail so a supervisor can restart us.
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
        self.worker_stalled = False
        self._last_beat = time.monotonic()
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
            silent = now - src.stats.last_frame_ts
            if src.stats.state == "streaming" and silent > self.frame_timeout_s:
                self.watchdog_reconnects += 1
                src.stats.last_frame_ts = now  # one request per timeout period, not one per check
                src.request_reconnect(f"no frame for {silent:.1f} s")
        age = self.heartbeat_age_s()
        if age > self.worker_stall_s and not self.worker_stalled:
            self.worker_stalled = True
            log.error("inference worker heartbeat is %.1f s old: worker stuck", age)
            if self.on_worker_stall is not None:
                self.on_worker_stall(age)

    def states(self) -> dict[str, str]:
        out = {src.camera_id: src.stats.state for src in self.sources}
        out["worker"] = "stalled" if self.worker_stalled else "ok"
        return out

    @property
    def healthy(self) -> bool:
        return not self.worker_stalled and any(s.stats.state in ("streaming", "finished", "starting") for s in self.sources)

    def _run(self) -> None:
        period = max(0.05, min(self.frame_timeout_s, self.worker_stall_s) / 4)
        while not self._stop.wait(period):
            self.check()
