"""/healthz and /metrics over stdlib http.server in a thread.

Metrics are read from the daemon's live counters at scrape time by a custom collector, so there is
one source of truth (the camera stats, queues, watchdog) rather than counters kept twice.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from finprint.errors import FinprintError

log = logging.getLogger(__name__)

# An idle or half-open connection holds a handler thread: it is dropped after this long without a request.
CONNECTION_TIMEOUT_S = 10.0
# Connections the kernel queues while every handler is busy (http.server's default of 5 refuses a scrape burst).
LISTEN_BACKLOG = 64


class DaemonCollector:
    """Yields Prometheus metric families from `snapshot()` (a dict the daemon builds on demand)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self._snapshot()
        per_camera = {
            "frames": CounterMetricFamily("finprint_frames", "good frames captured", labels=["camera"]),
            "processed": CounterMetricFamily("finprint_frames_processed", "frames through inference", labels=["camera"]),
            "corrupt": CounterMetricFamily("finprint_corrupt_frames", "frames skipped as corrupt", labels=["camera"]),
            "queue_drops": CounterMetricFamily("finprint_queue_drops", "frames dropped (oldest) by a full queue", labels=["camera"]),
            "reconnects": CounterMetricFamily("finprint_reconnects", "camera reconnections", labels=["camera"]),
            "fps": GaugeMetricFamily("finprint_fps", "processed frames per second", labels=["camera"]),
            "queue_len": GaugeMetricFamily("finprint_queue_length", "frames waiting", labels=["camera"]),
        }
        state = GaugeMetricFamily("finprint_watchdog_state", "1 for the current state of each component", labels=["component", "state"])
        for cam, values in snap["cameras"].items():
            for key, family in per_camera.items():
                family.add_metric([cam], values[key])
        for component, value in snap["states"].items():
            state.add_metric([component, value], 1)
        yield from per_camera.values()
        yield state
        for name, help_text in (
            ("unknown_fish", "tracks that ended as unknown fish"),
            ("events", "events emitted"),
            ("known_fish", "tracks that ended as a known individual"),
            ("inference_errors", "batches whose inference failed"),
            ("events_lost", "events dropped because a sink could not write for too long, or at exit"),
            ("snapshot_failures", "snapshots that could not be written"),
        ):
            fam = CounterMetricFamily(f"finprint_{name}", help_text)
            fam.add_metric([], snap[name])
            yield fam
        latency = GaugeMetricFamily(
            "finprint_inference_latency_ms", "per-stage latency per batch over recent batches", labels=["stage", "quantile"]
        )
        for stage, values in snap["latency"].items():
            latency.add_metric([stage, "0.5"], values["p50_ms"])
            latency.add_metric([stage, "0.95"], values["p95_ms"])
        yield latency
        heartbeat = GaugeMetricFamily("finprint_worker_heartbeat_age_seconds", "age of the inference worker's heartbeat")
        heartbeat.add_metric([], snap["heartbeat_age_s"])
        yield heartbeat
        pending = GaugeMetricFamily("finprint_events_pending", "events waiting for a sink that cannot write")
        pending.add_metric([], snap["events_pending"])
        yield pending


class HealthServer:
    """Serves /healthz (200 or 503 with JSON states) and /metrics (Prometheus text)."""

    def __init__(self, bind: str, port: int, registry: Any, health: Callable[[], tuple[bool, dict]]) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        class Handler(BaseHTTPRequestHandler):
            timeout = CONNECTION_TIMEOUT_S  # socketserver sets it on each connection

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug("http: " + fmt, *args)

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    ok, detail = health()
                    body = json.dumps({"status": "ok" if ok else "unhealthy", **detail}).encode()
                    self._send(200 if ok else 503, body, "application/json")
                elif path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b"not found: try /healthz or /metrics\n", "text/plain")

        class Server(ThreadingHTTPServer):
            request_queue_size = LISTEN_BACKLOG
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                # socketserver prints a traceback to stderr; a client that hung up or timed out is one line
                exc = sys.exc_info()[1]
                log.warning("http: request from %s failed: %s: %s", client_address, type(exc).__name__, exc)

        try:
            self._server = Server((bind, port), Handler)
        except (OSError, OverflowError) as exc:  # port taken, an address this machine does not have
            raise FinprintError(f"http: cannot listen on {bind}:{port} ({exc}); change http.port or http.bind") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("health and metrics on http://%s:%d/", self._server.server_address[0], self.port)

    def close(self) -> None:
        """Release the port of a server that was never started (`serve --check`)."""
        self._server.server_close()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
