"""The daemon: capture threads per camera, one inference worker that owns the engines and batches
frames across cameras, one `CameraChain` per camera (tracker and identity), events to every sink.

The worker thread opens the engines, runs them and closes them: a CUDA context is current per
thread, so TensorRT engines opened on the main thread could not run on the worker. A CUDA error on
the worker stops the daemon with exit code 1 (systemd restarts it), since every later batch would
fail the same way.

start() and stop() are flat ordered lists. stop() ends capture first, lets the worker drain every
queued frame, closes the remaining tracks, and flushes every event to SQLite, JSONL and MQTT
before the process exits. SIGTERM and SIGINT call it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from finprint.errors import FinprintError
from finprint.runtime.chain import CameraChain, ChainFrame
from finprint.runtime.config import FarmConfig
from finprint.runtime.cuda_mem import CudaError
from finprint.runtime.sources import CameraSource, DropOldestQueue, Frame
from finprint.runtime.store import JsonlLog, Store
from finprint.runtime.tuned import open_gallery, resolve_tracking
from finprint.runtime.watchdog import Watchdog

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where events go: the daemon hands every sink every event, in order, and closes each at stop."""

    def write_events(self, events: list[dict]) -> None: ...

    def close(self) -> None: ...


class _StoreEvents:
    """The events and sightings tables (the store itself is opened and closed by the daemon's store step)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def write_events(self, events: list[dict]) -> None:
        self.store.write_events(events)

    def close(self) -> None:
        pass


class _StoreIndividuals(_StoreEvents):
    """The gallery's per-fish records, when events go to another database."""

    def write_events(self, events: list[dict]) -> None:
        self.store.update_individuals(events)


class Daemon:
    def __init__(self, cfg: FarmConfig) -> None:
        self.cfg = cfg
        self.stopping = threading.Event()
        self._pipeline_opened = threading.Event()  # set by the worker once it opened the models (or failed to)
        self._pipeline_error: BaseException | None = None
        self._go = threading.Event()  # the worker may take frames (start() finished, or stop() began)
        self.fatal: str | None = None  # why the worker stopped the daemon (a CUDA error)
        self.exit_code = 0
        self.max_frames: int | None = None
        self.processed: dict[str, int] = {c.id: 0 for c in cfg.cameras}
        self._fps_window: dict[str, deque[float]] = {c.id: deque(maxlen=64) for c in cfg.cameras}
        self.events_emitted = 0
        self.inference_errors = 0
        self.unknown_fish = 0
        self.known_fish = 0
        self._started: list[str] = []
        self._session = uuid.uuid4().hex[:8]
        self._seq = 0
        self.queues = {c.id: DropOldestQueue(cfg.queue_size) for c in cfg.cameras}
        wd = cfg.watchdog
        self.sources = [
            CameraSource(
                c.id, c.source, c.resolved_kind(), self.queues[c.id], loop=c.loop, fps_limit=c.fps_limit,
                backoff_initial_s=wd.backoff_initial_s, backoff_max_s=wd.backoff_max_s, max_restarts=wd.max_restarts,
            )
            for c in cfg.cameras
        ]
        self.watchdog = Watchdog(self.sources, wd.frame_timeout_s, wd.worker_stall_s, on_worker_stall=self._on_stall)
        self.chains: dict[str, CameraChain] = {}  # per camera, made once the gallery says how it was tuned (_start_store)
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self.store: Store | None = None
        self.events_store: Store | None = None
        self.sinks: list[Sink] = []  # every event goes to each, in order (_start_sinks)
        self.pipeline: Any = None
        self.http: Any = None

    # -- lifecycle: flat ordered lists -------------------------------------------------------------
    def start(self) -> None:
        steps = [
            # first: the worker thread opens the models, and one that will not load fails before any file is written
            ("pipeline", self._start_pipeline),
            ("store", self._start_store),
            ("sinks", self._start_sinks),
            ("http", self._start_http),
            ("worker", self._go.set),
            ("watchdog", self.watchdog.start),
            ("cameras", self._start_cameras),
        ]
        for name, step in steps:
            step()
            self._started.append(name)
            log.debug("started %s", name)
        log.info("daemon running: %d cameras, gallery %s", len(self.sources), self.cfg.gallery)

    def stop(self) -> None:
        """Capture off, drain, close tracks, flush sinks. Safe to call twice."""
        steps = [
            ("cameras", self._stop_cameras),
            ("watchdog", self.watchdog.stop),
            ("worker", self._stop_worker),
            ("http", self._stop_http),
            ("sinks", self._stop_sinks),
            ("store", self._stop_store),
            ("pipeline", self._stop_pipeline),
        ]
        for name, step in steps:
            if name in self._started:
                step()
                self._started.remove(name)
                log.debug("stopped %s", name)

    def run_until_signalled(self, max_frames: int | None = None) -> int:
        """Start, wait for SIGTERM/SIGINT (or `max_frames`, or every camera finished), stop."""
        self.max_frames = max_frames
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not self.stopping.wait(0.2):
                if all(s.stats.state in ("finished", "failed") for s in self.sources) and not any(map(len, self.queues.values())):
                    log.info("every camera finished or failed: stopping")
                    if all(s.stats.state == "failed" for s in self.sources):
                        self.exit_code = 1
                    break
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.exit_code

    def _on_signal(self, signum: int, frame: object) -> None:
        log.info("received %s: draining and stopping", signal.Signals(signum).name)
        self.stopping.set()

    def _on_stall(self, age: float) -> None:
        # A hung engine call cannot be interrupted from Python: report unhealthy, and exit non-zero so
        # systemd (Restart=on-failure) restarts the process.
        self.exit_code = 1
        self.stopping.set()

    # -- start/stop steps ------------------------------------------------------------------------
    def _start_store(self) -> None:
        self.store = Store(self.cfg.gallery)
        sqlite_path = self.cfg.sinks.sqlite
        self.events_store = self.store if sqlite_path is None or Path(sqlite_path) == Path(self.cfg.gallery) else Store(sqlite_path)
        m = self.cfg.models
        gallery, rule = open_gallery(self.store, m.embedder, self.pipeline.open_set_threshold, self.pipeline.embedding_dim,
                                     m.open_set_threshold, m.open_set_margin)
        log.info("gallery: %d individuals, %d embeddings; open set: %s", len(gallery.individuals), len(gallery), rule.source)
        tracking, source = resolve_tracking(self.cfg.tracking, self.store.tracking(), m.detector, m.embedder)
        log.info("tracker: %s", source)
        self.chains = {c.id: CameraChain(c.id, tracking, gallery, rule.margin, c.px_per_cm) for c in self.cfg.cameras}

    def _stop_store(self) -> None:
        if self.events_store is not None and self.events_store is not self.store:
            self.events_store.close()
        if self.store is not None:
            self.store.close()

    def _start_sinks(self) -> None:
        assert self.events_store is not None and self.store is not None
        self.sinks = [_StoreEvents(self.events_store)]  # SQLite first: committed before any other sink sees an event
        if self.store is not self.events_store:
            self.sinks.append(_StoreIndividuals(self.store))
        if self.cfg.sinks.jsonl is not None:
            self.sinks.append(JsonlLog(self.cfg.sinks.jsonl))
        m = self.cfg.sinks.mqtt
        if m is not None:
            from finprint.runtime.mqtt_sink import MqttSink

            mqtt = MqttSink(m.host, m.port, m.topic, m.client_id, m.qos, m.buffer)
            mqtt.start()
            self.sinks.append(mqtt)

    def _stop_sinks(self) -> None:
        for sink in reversed(self.sinks):
            sink.close()
        self.sinks = []

    def _start_pipeline(self) -> None:
        """Start the worker thread and wait until it has opened the models (an engine build takes minutes)."""
        self._worker.start()
        self._pipeline_opened.wait()
        if self._pipeline_error is not None:
            self._worker.join()
            raise self._pipeline_error
        low = self.cfg.tracking.low_score
        if low is not None and low < self.pipeline.score_threshold:
            log.warning("tracking.low_score %g is under the detector's score threshold %g: detections between them never "
                        "reach the tracker; lower models.score_threshold to %g to feed them to it (more crops to embed), "
                        "or leave tracking.low_score out", low, self.pipeline.score_threshold, low)

    def _stop_pipeline(self) -> None:
        # The worker closes the engines on its own thread as it ends; here only wait for that.
        self.stopping.set()
        self._go.set()
        self._worker.join(self.cfg.watchdog.worker_stall_s)
        if self._worker.is_alive():
            log.error("inference worker is stuck in an engine call; its engines are left to process exit")

    def _start_http(self) -> None:
        if not self.cfg.http.enabled:
            return
        from prometheus_client import CollectorRegistry

        from finprint.runtime.http import DaemonCollector, HealthServer

        registry = CollectorRegistry()
        registry.register(DaemonCollector(self.snapshot))
        self.http = HealthServer(self.cfg.http.bind, self.cfg.http.port, registry, self.health)
        self.http.start()

    def _stop_http(self) -> None:
        if self.http is not None:
            self.http.stop()

    def _start_cameras(self) -> None:
        for src in self.sources:
            src.start()

    def _stop_cameras(self) -> None:
        for src in self.sources:
            src.stop()

    def _stop_worker(self) -> None:
        self.stopping.set()
        self._worker.join(self.cfg.watchdog.worker_stall_s)
        if self._worker.is_alive():
            log.error("inference worker did not finish draining; events of queued frames are lost")
            return
        now = time.time()
        for chain in self.chains.values():
            self._emit(chain.close(now))

    # -- the inference worker --------------------------------------------------------------------
    def _next_batch(self) -> list[Frame]:
        """Up to max_batch frames, round-robin across cameras so a busy camera cannot starve others."""
        batch: list[Frame] = []
        limit = self.cfg.models.max_batch
        while len(batch) < limit:
            got = False
            for q in self.queues.values():
                item = q.get_nowait()
                if item is not None:
                    batch.append(item)  # type: ignore[arg-type]
                    got = True
                    if len(batch) >= limit:
                        break
            if not got:
                break
        return batch

    def _work(self) -> None:
        """The inference thread: open the models, take frames until stopped, close the models, all here."""
        from finprint.runtime.pipeline import Pipeline

        m = self.cfg.models
        try:
            self.pipeline = Pipeline(m.detector, m.embedder, m.backend, m.max_batch, m.score_threshold,
                                     m.open_set_threshold, engine_cache=m.engine_cache)
        except BaseException as exc:  # handed to start() on the main thread, which raises it there
            self._pipeline_error = exc
            self._pipeline_opened.set()
            return
        self._pipeline_opened.set()
        try:
            self._go.wait()
            self._work_loop()
        finally:
            try:
                self.pipeline.close()
            except CudaError as exc:
                log.error("closing the engines failed: %s", exc)
                self.exit_code = 1

    def _work_loop(self) -> None:
        total = 0
        while True:
            self.watchdog.beat()
            batch = self._next_batch()
            if not batch:
                if self.stopping.is_set():
                    break  # capture is off (stop() stops cameras first) and every queue is drained
                time.sleep(0.005)
                continue
            try:
                self._process(batch)
            except CudaError as exc:
                # The context is broken (or was never current here): every later batch would fail the
                # same way while /healthz stayed green. Stop with the reason; systemd restarts the process.
                self.fatal = str(exc)
                log.critical("CUDA failed on the inference thread, stopping: %s", exc)
                self.exit_code = 1
                self.stopping.set()
                break
            except (ValueError, RuntimeError, FinprintError) as exc:
                # One bad batch (an engine error, a frame the models cannot take) must not kill the
                # worker: log it, count it, and go on with the next frames.
                self.inference_errors += 1
                log.error("inference failed on a batch of %d frames: %s", len(batch), exc)
            total += len(batch)
            if self.max_frames is not None and total >= self.max_frames and not self.stopping.is_set():
                log.info("processed %d frames: stopping", total)
                self.stopping.set()

    def _process(self, batch: list[Frame]) -> None:
        results = self.pipeline.process([f.image for f in batch])
        for frame, res in zip(batch, results, strict=True):
            det = res.detections
            tracks, events = self.chains[frame.camera].step(ChainFrame.from_detections(det, res.embeddings), frame.ts)
            if events:
                self._snapshots(frame, events, {t.track_id: det.boxes_xyxy[t.det_index] for t in tracks})
                self._emit(events)
            self.processed[frame.camera] += 1
            self._fps_window[frame.camera].append(time.monotonic())

    def _snapshots(self, frame: Frame, events: list[dict], boxes: dict[int, np.ndarray]) -> None:
        folder = self.cfg.sinks.snapshots
        if folder is None:
            return
        from finprint.runtime.crops import crop_fish

        for ev in events:
            box = boxes.get(ev["track_id"])
            if ev["type"] == "identified" and box is not None:
                path = Path(folder) / f"{ev['camera']}_{ev['track_id']}_{int(ev['ts'] * 1000)}.jpg"
                cv2.imwrite(str(path), crop_fish(frame.image, box))
                ev["snapshot"] = path.name

    def _emit(self, events: list[dict]) -> None:
        """Every sink gets every event; SQLite and JSONL commit/flush before this returns."""
        if not events:
            return
        for ev in events:
            ev["event_id"] = f"{self._session}-{self._seq}"
            self._seq += 1
            if ev["type"] == "track_end":
                if ev["unknown"]:
                    self.unknown_fish += 1
                else:
                    self.known_fish += 1
        for sink in self.sinks:
            sink.write_events(events)
        self.events_emitted += len(events)

    # -- observability -------------------------------------------------------------------------
    def fps(self, camera: str) -> float:
        w = self._fps_window[camera]
        if len(w) < 2 or time.monotonic() - w[-1] > 5.0:
            return 0.0
        return (len(w) - 1) / max(w[-1] - w[0], 1e-6)

    def snapshot(self) -> dict[str, Any]:
        return {
            "cameras": {
                s.camera_id: {
                    "frames": s.stats.frames,
                    "processed": self.processed[s.camera_id],
                    "corrupt": s.stats.corrupt,
                    "queue_drops": self.queues[s.camera_id].dropped,
                    "reconnects": s.stats.reconnects,
                    "fps": self.fps(s.camera_id),
                    "queue_len": len(self.queues[s.camera_id]),
                }
                for s in self.sources
            },
            "states": self.watchdog.states(),
            "unknown_fish": self.unknown_fish,
            "known_fish": self.known_fish,
            "events": self.events_emitted,
            "heartbeat_age_s": self.watchdog.heartbeat_age_s(),
            "inference_errors": self.inference_errors,
            "latency": self.pipeline.latency_summary() if self.pipeline is not None else {},
        }

    def health(self) -> tuple[bool, dict]:
        snap = self.snapshot()
        return self.watchdog.healthy, {"states": snap["states"], "latency": snap["latency"]}
