"""The daemon: capture threads per camera, one inference worker that owns the engines and batches
frames across cameras, one `CameraChain` per camera (tracker and identity), events to every sink.

The worker thread opens the engines, runs them and closes them: a CUDA context is current per
thread, so TensorRT engines opened on the main thread could not run on the worker. A CUDA error on
the worker stops the daemon with exit code 1 (systemd restarts it), since every later batch would
fail the same way.

start() and stop() are flat ordered lists. stop() ends capture first, lets the worker drain every
queued frame, closes the remaining tracks, and flushes every event to SQLite, JSONL and MQTT
before the process exits. SIGTERM, SIGINT and SIGHUP call it.

Nothing fails silently: /healthz is 503 with one line per fault (a camera not delivering, a dead
capture thread, batches failing, a sink that cannot write); a sink that cannot write keeps its
events pending (bounded) and gets them again once it can, so SQLite and JSONL end up the same;
a dead inference worker or events that never reached a sink make the process exit 1.
"""

from __future__ import annotations

import logging
import re
import signal
import sqlite3
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
from finprint.runtime.identity import UNKNOWN
from finprint.runtime.live import LiveView, Mark
from finprint.runtime.sources import CameraSource, DropOldestQueue, Frame
from finprint.runtime.store import JsonlLog, Store, model_identity
from finprint.runtime.tuned import open_gallery, resolve_tracking
from finprint.runtime.watchdog import Watchdog

log = logging.getLogger(__name__)

# Events kept for a sink that cannot write (a full disk) until it can again; beyond this the oldest are
# dropped and counted (finprint_events_lost_total), since memory is not a store.
MAX_PENDING_EVENTS = 20000
# /healthz is 503 while more than this share of the batches of the last `frame_timeout_s` failed
# (at least MIN_BATCHES_FOR_RATE of them): a model that fails every batch must not look healthy.
MAX_INFERENCE_ERROR_SHARE = 0.5
MIN_BATCHES_FOR_RATE = 3
# The same error line at most once per this many seconds (a failing model would log every batch).
LOG_REPEAT_S = 10.0
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Sink(Protocol):
    """Where events go: the daemon hands every sink every event, in order, and closes each at stop. A write
    is all or nothing and raises sqlite3.Error or OSError when it cannot; the daemon keeps the events
    pending under the sink's `name` (on /healthz) and hands them again later."""

    name: str

    def write_events(self, events: list[dict]) -> None: ...

    def close(self) -> None: ...


class _StoreEvents:
    """The events and sightings tables (the store itself is opened and closed by the daemon's store step)."""

    name = "sqlite"

    def __init__(self, store: Store) -> None:
        self.store = store

    def write_events(self, events: list[dict]) -> None:
        self.store.write_events(events)

    def close(self) -> None:
        pass


class _StoreIndividuals(_StoreEvents):
    """The gallery's per-fish sightings and first/last seen, when events go to another database."""

    name = "gallery"

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
        self.events_lost = 0
        self.inference_errors = 0
        self.snapshot_failures = 0
        self._batches: deque[tuple[float, bool]] = deque(maxlen=4096)  # (monotonic time, failed) per batch
        self._last_inference_error = ""
        self._said: dict[str, float] = {}  # error line -> when it was last logged
        # Events not yet in SQLite; then, per other sink, events SQLite holds that the sink has not taken
        # yet (SQLite commits first: a kill -9 leaves every other sink a prefix of the database). Each
        # sink's last error, None while it writes.
        self._unsaved: list[dict] = []
        self._pending: dict[str, list[dict]] = {}
        self.sink_errors: dict[str, str | None] = {}
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
                stable_s=min(2.0, wd.frame_timeout_s),
            )
            for c in cfg.cameras
        ]
        self.watchdog = Watchdog(self.sources, wd.frame_timeout_s, wd.worker_stall_s, on_worker_stall=self._on_stall)
        self.chains: dict[str, CameraChain] = {}  # per camera, made once the gallery says how it was tuned (_start_store)
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self.store: Store | None = None
        self.events_store: Store | None = None
        self.sinks: list[Sink] = []  # SQLite first, then the others in order (_start_sinks)
        self.pipeline: Any = None
        self.http: Any = None
        self.live = LiveView()  # each camera's latest frame and marks, for the web page
        self.samples: Any = None  # TrackSamples: what each live track leaves for the review queue (_start_store)
        self._reload = threading.Event()  # the web page changed the gallery: the worker reloads it between batches

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
        """Capture off, drain, close tracks, flush sinks. Safe to call twice. A step that fails is
        logged (one line) and makes the exit code 1; the steps after it still run."""
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
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - the remaining steps must still run (flush, close)
                    log.error("stopping %s failed: %s: %s", name, type(exc).__name__, exc)
                    self.exit_code = 1
                self._started.remove(name)
                log.debug("stopped %s", name)

    def run_until_signalled(self, max_frames: int | None = None) -> int:
        """Start, wait for SIGTERM/SIGINT/SIGHUP (or `max_frames`, or every camera finished), stop."""
        self.max_frames = max_frames
        previous = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        hook, threading.excepthook = threading.excepthook, _log_thread_death
        try:
            self.start()
            while not self.stopping.wait(0.2):
                if not self._worker.is_alive():
                    # _work catches every error of a batch; a worker that is gone anyway cannot be restarted
                    # safely (it owns the engines): exit 1 and let systemd start a fresh process.
                    log.error("the inference worker died: stopping (exit 1)")
                    self.exit_code = 1
                    break
                if all(s.stats.state in ("finished", "failed") for s in self.sources) and not any(map(len, self.queues.values())):
                    log.info("every camera finished or failed: stopping")
                    if all(s.stats.state == "failed" for s in self.sources):
                        self.exit_code = 1
                    break
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            threading.excepthook = hook
        return self.exit_code

    def _on_signal(self, signum: int, frame: object) -> None:
        # SIGHUP (a closed terminal, `kill -HUP`) drains like SIGTERM rather than killing mid-write;
        # a new gallery is picked up by restarting.
        log.info("received %s: draining and stopping", signal.Signals(signum).name)
        self.stopping.set()

    def _on_stall(self, age: float) -> None:
        # A hung engine call cannot be interrupted from Python: report unhealthy, and exit non-zero so
        # systemd (Restart=on-failure) restarts the process.
        self.exit_code = 1
        self.stopping.set()

    # -- start/stop steps ------------------------------------------------------------------------
    def _start_store(self) -> None:
        self.store = Store(self.cfg.gallery)  # integrity-checked on open: a damaged gallery is one line, exit 2
        try:
            self.store.check_embedder(model_identity(self.cfg.models.embedder), self.cfg.models.embedder.name)
        except FinprintError:
            self.store.close()  # the step did not finish, so stop() will not close it
            raise
        sqlite_path = self.cfg.sinks.sqlite
        self.events_store = self.store if sqlite_path is None or Path(sqlite_path) == Path(self.cfg.gallery) else Store(sqlite_path)
        m = self.cfg.models
        gallery, rule = open_gallery(self.store, m.embedder, self.pipeline.open_set_threshold, self.pipeline.embedding_dim,
                                     m.open_set_threshold, m.open_set_margin)
        log.info("gallery: %d individuals, %d embeddings; open set: %s", len(gallery.individuals), len(gallery), rule.source)
        tracking, source = resolve_tracking(self.cfg.tracking, self.store.tracking(), m.detector, m.embedder)
        log.info("tracker: %s", source)
        self.chains = {c.id: CameraChain(c.id, tracking, gallery, rule.margin, c.px_per_cm) for c in self.cfg.cameras}
        if self.cfg.review.enabled:
            from finprint.runtime.review import ensure_schema
            from finprint.runtime.track_samples import TrackSamples

            folder = self.cfg.review.folder
            assert folder is not None  # validate_config resolves it
            folder.mkdir(parents=True, exist_ok=True)
            ensure_schema(self.store)
            self.samples = TrackSamples(folder, self._session, self.cfg.review.embeddings, self.cfg.review.crops,
                                        model_identity(m.embedder))

    def request_gallery_reload(self) -> None:
        """The gallery database changed (a review decision): the worker reloads it before its next batch."""
        self._reload.set()

    def _reload_gallery(self) -> None:
        """On the worker: the gallery as the store now holds it, for every camera's chain (live tracks keep their votes)."""
        assert self.store is not None
        m = self.cfg.models
        try:
            gallery, _ = open_gallery(self.store, m.embedder, self.pipeline.open_set_threshold, self.pipeline.embedding_dim,
                                      m.open_set_threshold, m.open_set_margin)
        except (FinprintError, sqlite3.Error) as exc:
            self._say(f"gallery reload failed, matching against the previous one: {exc}")
            return
        for chain in self.chains.values():
            chain.use_gallery(gallery)
        log.info("gallery reloaded: %d individuals, %d embeddings", len(gallery.individuals), len(gallery))

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
        self._pending = {sink.name: [] for sink in self.sinks[1:]}

    def _stop_sinks(self) -> None:
        for sink in reversed(self.sinks):
            try:
                sink.close()
            except OSError as exc:  # an fsync on a failing disk: the other sinks still close
                log.error("sink %s: close failed: %s", sink.name, exc)
                self.exit_code = 1
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

        from finprint.runtime.config import is_loopback
        from finprint.runtime.http import DaemonCollector, HealthServer
        from finprint.runtime.web_auth import Auth

        registry = CollectorRegistry()
        registry.register(DaemonCollector(self.snapshot))
        auth = Auth(self.cfg.http.token, is_loopback(self.cfg.http.bind))
        app = self._web_app(auth) if self.cfg.http.page else None
        self.http = HealthServer(self.cfg.http.bind, self.cfg.http.port, registry, self.health, app, auth)  # FinprintError: port taken
        self.http.start()

    def _web_app(self, auth: Any) -> Any:
        from finprint.runtime.web import WebApp, WebContext

        assert self.store is not None and self.events_store is not None
        m = self.cfg.models
        ctx = WebContext(
            gallery=self.store, events=self.events_store, live=self.live, cameras=self.camera_status,
            gallery_changed=self.request_gallery_reload, embedder=(m.embedder.name, model_identity(m.embedder)),
            snapshots=self.cfg.sinks.snapshots, review_folder=self.cfg.review.folder if self.cfg.review.enabled else None,
            review_lead=self.cfg.review.lead)
        return WebApp(ctx, auth)

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
            self.exit_code = 1
            return
        now = time.time()
        for chain in self.chains.values():
            events = chain.close(now)
            self._emit(events)
            self._keep_tracks(events)
        unwritten = {"sqlite": len(self._unsaved), **{name: len(p) for name, p in self._pending.items()}}
        if any(unwritten.values()):  # a sink still cannot write: say what is where, exit 1
            log.error("events never written, by sink: %s (%s); SQLite holds every event any other sink does",
                      ", ".join(f"{k} {n}" for k, n in unwritten.items() if n),
                      "; ".join(f"{k}: {v}" for k, v in self.sink_errors.items() if v))
            self.events_lost += sum(unwritten.values())
            self.exit_code = 1

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
        """The inference thread: open the models (with their manifests and one test inference), take frames
        until stopped, close the models, all here."""
        try:
            self.pipeline = open_pipeline(self.cfg)
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
            except Exception as exc:  # noqa: BLE001 - a CudaError, or an engine's own: one line, exit 1
                log.error("closing the engines failed: %s: %s", type(exc).__name__, exc)
                self.exit_code = 1

    def _work_loop(self) -> None:
        total = 0
        retry_at = 0.0
        while True:
            self.watchdog.beat()
            if self._reload.is_set():
                self._reload.clear()
                self._reload_gallery()
            if self.events_pending() and time.monotonic() >= retry_at:
                retry_at = time.monotonic() + 1.0  # a sink that cannot write is tried again each second
                self._flush()
            batch = self._next_batch()
            if not batch:
                if self.stopping.is_set():
                    break  # capture is off (stop() stops cameras first) and every queue is drained
                time.sleep(0.005)
                continue
            failed = False
            try:
                self._process(batch)
            except CudaError as exc:
                # Ahead of the catch-all below: the context is broken (or was never current here), so every
                # later batch would fail the same way. Stop with the reason (exit 1); systemd restarts the process.
                self.fatal = str(exc)
                log.critical("CUDA failed on the inference thread, stopping: %s", exc)
                self.exit_code = 1
                self.stopping.set()
                break
            except Exception as exc:  # noqa: BLE001 - counted, logged and on /healthz; the worker must go on
                # One bad batch (an engine error, a frame the models cannot take, a bug) must not kill the
                # worker: count it (its rate makes /healthz 503), log it, go on with the next frames.
                # Sink errors never get here: _emit keeps their events pending.
                failed = True
                self.inference_errors += 1
                self._last_inference_error = f"{type(exc).__name__}: {exc}"[:300]
                self._say(f"inference failed on a batch of {len(batch)} frames: {self._last_inference_error}")
            self._batches.append((time.monotonic(), failed))
            total += len(batch)
            if self.max_frames is not None and total >= self.max_frames and not self.stopping.is_set():
                log.info("processed %d frames: stopping", total)
                self.stopping.set()

    def _process(self, batch: list[Frame]) -> None:
        results = self.pipeline.process([f.image for f in batch])
        for frame, res in zip(batch, results, strict=True):
            det = res.detections
            chain = self.chains[frame.camera]
            tracks, events = chain.step(ChainFrame.from_detections(det, res.embeddings), frame.ts)
            marks = []
            for t in tracks:
                box = det.boxes_xyxy[t.det_index]
                if self.samples is not None:
                    self.samples.observe(frame.camera, t.track_id, res.embeddings[t.det_index], frame.image, box)
                rec = chain.resolver.track(frame.camera, t.track_id)
                label = rec.identity if rec is not None else UNKNOWN
                marks.append(Mark(box, None if det.masks is None else det.masks[t.det_index], t.track_id, label, label != UNKNOWN))
            self.live.update(frame.camera, frame.image, marks, frame.ts)
            if events:
                self._snapshots(frame, events, {t.track_id: det.boxes_xyxy[t.det_index] for t in tracks})
                self._emit(events)
                self._keep_tracks(events)
            if self.samples is not None:
                for t in chain.tracker.ended:  # ended too short to be reported: nothing to review
                    self.samples.drop(frame.camera, t.track_id)
            self.processed[frame.camera] += 1
            self._fps_window[frame.camera].append(time.monotonic())

    def _keep_tracks(self, events: list[dict]) -> None:
        """Ended tracks into the review list (crops, frame, embeddings). A failure is logged and on /healthz, never raised:
        the events themselves are already stored."""
        if self.samples is None or self.store is None:
            return
        for ev in events:
            if ev["type"] != "track_end":
                continue
            try:
                self.samples.finish(self.store, ev)
                self.sink_errors["review"] = None
            except (sqlite3.Error, OSError) as exc:
                self.sink_errors["review"] = f"{type(exc).__name__}: {exc}"[:300]
                self._say(f"review: cannot keep track {ev['camera']}#{ev['track_id']}: {exc}")

    def _snapshots(self, frame: Frame, events: list[dict], boxes: dict[int, np.ndarray]) -> None:
        folder = self.cfg.sinks.snapshots
        if folder is None:
            return
        from finprint.runtime.crops import crop_fish

        for ev in events:
            box = boxes.get(ev["track_id"])
            if ev["type"] == "identified" and box is not None:
                # Camera ids are checked in the config; the name is made safe here too, so a file name can
                # never point outside the folder.
                name = _SAFE_NAME.sub("_", f"{ev['camera']}_{ev['track_id']}_{int(ev['ts'] * 1000)}") + ".jpg"
                path = Path(folder) / name
                try:
                    ok = cv2.imwrite(str(path), crop_fish(frame.image, box))
                except cv2.error as exc:
                    ok = False
                    log.debug("snapshot %s: %s", path, exc)
                if ok:
                    ev["snapshot"] = name  # events name only snapshots that were written
                    self.sink_errors["snapshots"] = None
                else:
                    self.snapshot_failures += 1
                    self.sink_errors["snapshots"] = f"cannot write {path}"
                    self._say(f"snapshots: cannot write {path} (folder gone or full?)")

    def _emit(self, events: list[dict]) -> None:
        """Every sink gets every event; SQLite and JSONL commit/flush before this returns, unless one
        cannot write: then its events stay pending (and /healthz says so) until it can."""
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
        self.events_emitted += len(events)
        self._unsaved += events
        self._flush()

    def _flush(self) -> None:
        """Pending events to SQLite, then to every other sink. A sink's error is recorded (and /healthz says
        so), never raised; its events wait for the next try. Each write is all or nothing (an SQLite
        transaction, a JSONL batch cut back on failure), so a retry never doubles an event."""
        if self._unsaved:
            assert self.sinks, "events before the sinks started"
            batch = self._unsaved
            try:
                self.sinks[0].write_events(batch)  # SQLite
            except (sqlite3.Error, OSError) as exc:
                self._sink_failed("sqlite", exc)
            else:
                self._unsaved = []
                self.sink_errors["sqlite"] = None
                for pending in self._pending.values():
                    pending += batch
        for sink in self.sinks[1:]:  # sinks[0] is SQLite (_unsaved above)
            if not self._pending[sink.name]:
                continue
            try:
                sink.write_events(self._pending[sink.name])
            except (sqlite3.Error, OSError) as exc:
                self._sink_failed(sink.name, exc)
            else:
                self._pending[sink.name] = []
                self.sink_errors[sink.name] = None
        self._bound_pending()

    def events_pending(self) -> int:
        return len(self._unsaved) + sum(map(len, self._pending.values()))

    def _sink_failed(self, sink: str, exc: BaseException) -> None:
        first = not self.sink_errors.get(sink)
        self.sink_errors[sink] = f"{type(exc).__name__}: {exc}"[:300]
        if first:
            log.error("sink %s cannot write (%s); its events are kept and written again once it can",
                      sink, self.sink_errors[sink])

    def _bound_pending(self) -> None:
        lost = max(0, len(self._unsaved) - MAX_PENDING_EVENTS)
        if lost:
            self._unsaved = self._unsaved[lost:]
        for name, pending in self._pending.items():
            if len(pending) > MAX_PENDING_EVENTS:
                lost += len(pending) - MAX_PENDING_EVENTS
                self._pending[name] = pending[-MAX_PENDING_EVENTS:]
        if lost:
            self.events_lost += lost
            self._say(f"{lost} events dropped: a sink has not written for too long ({MAX_PENDING_EVENTS} kept)")

    def _say(self, line: str) -> None:
        """log.error, at most once per LOG_REPEAT_S for the same line (digits aside)."""
        key = re.sub(r"\d+", "#", line)
        now = time.monotonic()
        if now - self._said.get(key, -LOG_REPEAT_S) >= LOG_REPEAT_S:
            self._said[key] = now
            log.error("%s", line)

    # -- observability -------------------------------------------------------------------------
    def fps(self, camera: str) -> float:
        w = self._fps_window[camera]
        if len(w) < 2 or time.monotonic() - w[-1] > 5.0:
            return 0.0
        return (len(w) - 1) / max(w[-1] - w[0], 1e-6)

    def camera_status(self) -> dict[str, dict]:
        """Per camera: fps and watchdog state (the live page)."""
        states = self.watchdog.states()
        return {s.camera_id: {"fps": self.fps(s.camera_id), "state": states.get(s.camera_id, "?")} for s in self.sources}

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
            "events_lost": self.events_lost,
            "events_pending": self.events_pending(),
            "snapshot_failures": self.snapshot_failures,
            "heartbeat_age_s": self.watchdog.heartbeat_age_s(),
            "inference_errors": self.inference_errors,
            "latency": self.pipeline.latency_summary() if self.pipeline is not None else {},
        }

    def problems(self) -> list[str]:
        """Every fault that keeps the daemon from doing its job, one readable line each; [] = healthy."""
        out = self.watchdog.problems()
        if "worker" in self._started and not self._worker.is_alive() and not self.stopping.is_set():
            out.append("inference worker: died")
        if self.fatal:
            out.append(f"inference: CUDA failed, stopping ({self.fatal})")
        since = time.monotonic() - self.cfg.watchdog.frame_timeout_s
        recent = [failed for ts, failed in list(self._batches) if ts >= since]
        failed = sum(recent)
        if len(recent) >= MIN_BATCHES_FOR_RATE and failed > MAX_INFERENCE_ERROR_SHARE * len(recent):
            out.append(f"inference: {failed} of {len(recent)} batches failed in the last "
                       f"{self.cfg.watchdog.frame_timeout_s:g} s ({self._last_inference_error})")
        for sink, error in sorted(self.sink_errors.items()):
            if error:
                pending = len(self._unsaved) + len(self._pending.get(sink, ()))
                out.append(f"sink {sink}: cannot write ({error})" + (f"; {pending} events pending" if sink not in ("snapshots", "review") else ""))
        return out

    def health(self) -> tuple[bool, dict]:
        snap = self.snapshot()
        problems = self.problems()
        return not problems, {"problems": problems, "states": snap["states"], "latency": snap["latency"]}


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def _log_thread_death(args: threading.ExceptHookArgs) -> None:
    """A thread no guard caught (a library's): one log line, not a traceback on the console; /healthz and
    the run loop see what it leaves behind (a dead worker exits 1, a dead camera is restarted)."""
    name = args.thread.name if args.thread is not None else "?"
    log.error("thread %s died: %s: %s", name, args.exc_type.__name__, args.exc_value)


def open_pipeline(cfg: FarmConfig) -> Any:
    """The models as serve runs them: manifests required (unless the config says otherwise), then one test
    inference, so a model that cannot run fails here in one line rather than on every batch. Open, run and
    close it on one thread."""
    from finprint.runtime.pipeline import Pipeline

    m = cfg.models
    pipeline = Pipeline(m.detector, m.embedder, m.backend, m.max_batch, m.score_threshold, m.open_set_threshold,
                        require_manifest=m.require_manifest, engine_cache=m.engine_cache)
    try:
        smoke_test_models(pipeline)
    except BaseException:
        pipeline.close()
        raise
    return pipeline


def preflight(cfg: FarmConfig) -> str:
    """`serve --check`: what serve does before its first frame (the config, with its sink paths, is already
    validated): load both models with their manifests and run a test inference, open and integrity-check the
    gallery and the events database, check the gallery's embedder, bind the port. No event, log line or
    snapshot is written. A FinprintError says what would have failed."""
    from finprint.runtime.store import check_database_file

    m = cfg.models
    pipeline = open_pipeline(cfg)
    backends = f"{pipeline.detector.backend}/{pipeline.embedder.backend}"
    pipeline.close()
    for path in {cfg.gallery, cfg.sinks.sqlite or cfg.gallery}:
        check_database_file(path)
    if cfg.gallery.exists():
        store = Store(cfg.gallery)  # as serve opens it (tables a newer version adds are created, as serve would)
        try:
            store.check_embedder(model_identity(m.embedder), m.embedder.name)
            n = store.count("individuals")
        finally:
            store.close()
        gallery = f"gallery {n} individuals"
    else:
        gallery = "gallery new"
    if cfg.http.enabled:
        from finprint.runtime.http import HealthServer

        HealthServer(cfg.http.bind, cfg.http.port, None, lambda: (True, {})).close()
    return f"{len(cfg.cameras)} cameras, models load and infer on {backends}, {gallery}" + (
        f", port {cfg.http.port} free" if cfg.http.enabled else "")


def smoke_test_models(pipeline: Any) -> None:
    """One blank frame through the detector and one blank crop through the embedder, as serve does before
    its first frame: a model whose manifest does not fit it fails here, in one line, not on every batch."""
    blank = np.zeros((480, 640, 3), np.uint8)
    try:
        pipeline.process([blank])
        emb = pipeline.embed_crops([blank[:64, :64]])
    except Exception as exc:  # noqa: BLE001 - engines raise their own types (onnxruntime's, TensorRT's)
        raise FinprintError(f"models: a test inference on a blank frame failed ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); check each model against its manifest") from exc
    if emb.ndim != 2 or len(emb) != 1 or not np.isfinite(emb).all():
        raise FinprintError(f"models: the embedder gave {emb.shape} (finite: {bool(np.isfinite(emb).all())}) for one crop")
