"""/healthz, /metrics and the web page over stdlib http.server in a thread.

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
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from finprint.errors import FinprintError

if TYPE_CHECKING:
    from finprint.runtime.web import WebApp
    from finprint.runtime.web_auth import Auth

log = logging.getLogger(__name__)

# An idle or half-open connection holds a handler thread: it is dropped after this long without a request.
CONNECTION_TIMEOUT_S = 10.0
# Connections the kernel queues while every handler is busy (http.server's default of 5 refuses a scrape burst).
LISTEN_BACKLOG = 64
MAX_POST_BYTES = 16 * 1024  # a review decision is a few hundred bytes
# On every response: no framing (clickjacking a review button), nothing loaded from elsewhere, no sniffing.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
                                "img-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


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
    """Serves /healthz (200 or 503 with JSON states), /metrics (Prometheus text) and, given `app`, the web page
    (runtime/web.py). Given `auth` (runtime/web_auth.py), every route checks the token and every POST its origin."""

    def __init__(self, bind: str, port: int, registry: Any, health: Callable[[], tuple[bool, dict]],
                 app: WebApp | None = None, auth: Auth | None = None) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        class Handler(BaseHTTPRequestHandler):
            timeout = CONNECTION_TIMEOUT_S  # socketserver sets it on each connection

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug("http: " + fmt, *args)

            def _send(self, code: int, body: bytes, ctype: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in SECURITY_HEADERS + headers:
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _allowed(self, method: str) -> tuple[str, bool]:
                """(path, whether to go on): the token for every route, the origin and CSRF token for a POST."""
                path, _, qs = self.path.partition("?")
                if auth is None:
                    return path, True
                headers = {k.lower(): v for k, v in self.headers.items()}
                verdict = auth.check(headers, dict(parse_qsl(qs)))
                if verdict.ok and method == "POST":
                    verdict = auth.check_post(headers)
                if not verdict.ok:
                    extra = (("WWW-Authenticate", 'Bearer realm="finprint"'),) if verdict.code == 401 else ()
                    self._send(verdict.code, (verdict.reason + "\n").encode(), "text/plain; charset=utf-8", extra)
                    return path, False
                if verdict.set_cookie and method == "GET":  # the token leaves the address bar for a cookie
                    # "/" + the path without its leading slashes: "//elsewhere" would send the browser off-site
                    where = "/" + path.lstrip("/")
                    self._send(303, b"", "text/plain", (("Set-Cookie", verdict.set_cookie), ("Location", where)))
                    return path, False
                return path, True

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path, go = self._allowed("GET")
                if not go:
                    return
                if path == "/healthz":
                    ok, detail = health()
                    body = json.dumps({"status": "ok" if ok else "unhealthy", **detail}).encode()
                    self._send(200 if ok else 503, body, "application/json")
                elif path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                else:
                    res = app.get(path) if app is not None else None
                    if res is None:
                        self._send(404, b"not found: try /, /healthz or /metrics\n", "text/plain")
                    else:
                        self._send(res.code, res.body, res.ctype, res.headers)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                path, go = self._allowed("POST")
                if not go:
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_POST_BYTES:
                    self._send(413, b"request body too large\n", "text/plain")
                    return
                body = self.rfile.read(length)
                res = app.post(path, body) if app is not None else None
                if res is None:
                    self._send(404, b"not found\n", "text/plain")
                else:
                    self._send(res.code, res.body, res.ctype, res.headers)

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
        log.info("web page, health and metrics on http://%s:%d/", self._server.server_address[0], self.port)

    def close(self) -> None:
        """Release the port of a server that was never started (`serve --check`)."""
        self._server.server_close()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
