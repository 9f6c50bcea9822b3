"""The daemon's web page over HTTP: the views, a review decision the running daemon picks up without a restart,
and the guards (token on every route beyond loopback, cross-site POSTs refused, files only from their folder)."""

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry

from finprint.runtime import review
from finprint.runtime.config import load_config
from finprint.runtime.daemon import Daemon
from finprint.runtime.http import HealthServer
from finprint.runtime.live import LiveView
from finprint.runtime.review import TrackRecord
from finprint.runtime.store import Store
from finprint.runtime.web import WebApp, WebContext
from finprint.runtime.web_auth import CSRF_HEADER, Auth
from finprint.testing import make_review_farm

TOKEN = "s3cret-token-0123456789"


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _post(url: str, data: dict, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if body.startswith(b"{") else {"error": body.decode()}


def _csrf(page: bytes) -> str:
    return re.search(rb'<meta name="csrf" content="([^"]+)"', page).group(1).decode()


@pytest.fixture(scope="module")
def farm(tmp_path_factory) -> dict:
    return make_review_farm(tmp_path_factory.mktemp("review-farm"))


def _config(farm: dict, tmp_path: Path, **http) -> Path:
    (tmp_path / "gallery.db").write_bytes(farm["gallery"].read_bytes())
    (tmp_path / "snaps").mkdir()
    cfg = {
        "cameras": [{"id": "pen1", "source": str(farm["video"]), "loop": True, "px_per_cm": 4.0, "fps_limit": 60}],
        "models": {"detector": str(farm["detector"]), "embedder": str(farm["embedder"]), "backend": "cpu", "max_batch": 2},
        "gallery": "gallery.db",
        "sinks": {"snapshots": "snaps"},
        "http": {"port": 0, **http},
        "tracking": {"min_hits": 2},
    }
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _until(check, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_the_page_shows_the_fish_and_a_new_fish_from_the_review_queue_is_named_without_a_restart(farm, tmp_path):
    os.environ.setdefault("FINPRINT_ORT_THREADS", "1")
    daemon = Daemon(load_config(_config(farm, tmp_path)))
    daemon.start()
    try:
        base = f"http://127.0.0.1:{daemon.http.port}"
        uid = _until(lambda: next((t.uid for t in review.queue(daemon.store) if t.individual_id is None), None))
        code, page, _ = _get(base + "/")
        assert code == 200 and b'data-cam="pen1"' in page
        assert _get(base + "/live/pen1.jpg")[1][:2] == b"\xff\xd8"  # a JPEG
        live = json.loads(_get(base + "/api/live")[1])["cameras"]["pen1"]
        assert live["state"] == "streaming" and live["fps"] > 0
        code, page, _ = _get(base + "/individuals")
        assert code == 200 and b'data-fish="fish-a"' in page and b"<svg" in page
        code, page, _ = _get(base + "/fish/fish-a")
        assert code == 200 and b"/snapshots/pen1_" in page
        snap = re.search(rb'/snapshots/([^"]+)"', page).group(1).decode()
        assert _get(base + "/snapshots/" + snap)[0] == 200
        code, page, _ = _get(base + "/review")
        assert code == 200 and f'data-uid="{uid}"'.encode() in page
        crop = re.search(rb'/crops/([^"]+)"', page).group(1).decode()
        assert _get(base + "/crops/" + crop)[0] == 200

        code, body = _post(base + "/api/review", {"uid": uid, "action": "new", "fish": "fish-b", "who": "Ana"},
                           {CSRF_HEADER: _csrf(page)})
        assert code == 200, body
        since = time.time()
        names = lambda: {r[0] for r in daemon.events_store.query(  # noqa: E731
            "SELECT individual_id FROM events WHERE ts > ? AND individual_id IS NOT NULL", (since,))}
        assert _until(lambda: "fish-b" in names())  # the running daemon names the enrolled fish
        code, body = _post(base + "/api/review", {"uid": uid, "action": "new", "fish": "fish-c"}, {CSRF_HEADER: _csrf(page)})
        assert code == 409 and "already judged" in body["error"]  # a stale page
    finally:
        daemon.stop()
    assert daemon.exit_code == 0


@pytest.fixture
def server(tmp_path):
    """The web page over a gallery with one reviewable track, no models: the guards alone."""
    store = Store(tmp_path / "g.db")
    store.enroll("fish-a", np.eye(4, dtype=np.float32)[:1], source="test")
    review.ensure_schema(store)
    review.record_track(store, TrackRecord("t1", "pen1", 1, 1.0, 2.0, 9, None, "fish-a", 0.1, None, None, ("t1_0.jpg",), None),
                        np.eye(4, dtype=np.float32)[1:3])
    (tmp_path / "review").mkdir()
    (tmp_path / "review" / "t1_0.jpg").write_bytes(b"\xff\xd8jpeg")
    (tmp_path / "review" / "outside.jpg").symlink_to(tmp_path / "g.db")
    ctx = WebContext(store, store, LiveView(), lambda: {"pen1": {"fps": 0.0, "state": "streaming"}}, lambda: None, None,
                     None, tmp_path / "review")
    started = []

    def start(token: str | None, bind: str = "127.0.0.1") -> str:
        auth = Auth(token, bind == "127.0.0.1")
        srv = HealthServer(bind, 0, CollectorRegistry(), lambda: (True, {}), WebApp(ctx, auth), auth)
        srv.start()
        started.append(srv)
        return f"http://127.0.0.1:{srv.port}"

    yield start, store
    for srv in started:
        srv.stop()
    store.close()


ROUTES = ["/", "/individuals", "/fish/fish-a", "/review", "/api/live", "/live/pen1.jpg", "/crops/t1_0.jpg",
          "/snapshots/x.jpg", "/healthz", "/metrics", "/nothing-here"]


def test_bound_beyond_loopback_every_route_needs_the_token(server):
    start, store = server
    base = start(TOKEN, bind="0.0.0.0")
    for route in ROUTES:
        assert _get(base + route)[0] == 401, route
        assert _get(base + route, {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401, route
    for route in ("/api/review", "/api/undo"):
        assert _post(base + route, {"uid": "t1", "action": "ignore"})[0] == 401, route
    assert store.query("SELECT COUNT(*) FROM reviews") == [(0,)]
    assert _get(base + "/review", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
    conn.request("GET", "/review?token=" + TOKEN)  # opened once with the token: a cookie, and the token leaves the address
    res = conn.getresponse()
    assert res.status == 303 and res.getheader("Location") == "/review"
    assert f"finprint_token={TOKEN}" in res.getheader("Set-Cookie") and "HttpOnly" in res.getheader("Set-Cookie")
    conn.close()
    assert _get(base + "/review", {"Cookie": f"finprint_token={TOKEN}"})[0] == 200


def test_a_forged_cross_site_post_is_refused_and_changes_nothing(server):
    start, store = server
    base = start(None)
    page = _get(base + "/review")[1]
    forged = [
        {},  # a plain form post from another site: no CSRF header
        {"Origin": "http://evil.example", CSRF_HEADER: _csrf(page)},
        {"Sec-Fetch-Site": "cross-site", CSRF_HEADER: _csrf(page)},
        {CSRF_HEADER: "guessed"},
    ]
    for headers in forged:
        code, _ = _post(base + "/api/review", {"uid": "t1", "action": "new", "fish": "fish-x"}, headers)
        assert code == 403, headers
    assert store.query("SELECT COUNT(*) FROM reviews") == [(0,)] and store.count("individuals") == 1
    host = base.removeprefix("http://")
    code, _ = _post(base + "/api/review", {"uid": "t1", "action": "ignore"}, {"Origin": f"http://{host}", CSRF_HEADER: _csrf(page)})
    assert code == 200
    # DNS rebinding: another name for 127.0.0.1 cannot read the page
    assert _get(base + "/review", {"Host": "evil.example"})[0] == 403


def test_files_are_served_from_their_folder_only(server):
    start, _ = server
    base = start(None)
    assert _get(base + "/crops/t1_0.jpg")[0] == 200
    for name in ("..%2Fg.db", "%2E%2E/g.db", "outside.jpg", ".hidden", "t1_0.jpg%00", "..%5Cg.db", "sub%2Ft1_0.jpg"):
        assert _get(base + "/crops/" + name)[0] == 404, name
    assert _get(base + "/snapshots/t1_0.jpg")[0] == 404  # no snapshots folder configured


def test_an_action_on_a_forgotten_fish_is_refused_with_a_message(server):
    start, store = server
    base = start(None)
    page = _get(base + "/review")[1]
    store.forget("fish-a")
    code, body = _post(base + "/api/review", {"uid": "t1", "action": "confirm", "fish": "fish-a"}, {CSRF_HEADER: _csrf(page)})
    assert code == 409 and "forgotten" in body["error"]
    assert store.query("SELECT COUNT(*) FROM reviews") == [(0,)]


def test_a_plot_says_the_range_of_its_values_or_its_one_value():
    from finprint.runtime.web_svg import line

    assert "38.8–40.8 cm" in line([0, 1, 2], [38.8, 40.0, 40.8], "length", "cm")
    flat = line([0, 1], [0.0, 0.0], "activity (speed)", "cm/s")
    assert "<small>0 cm/s</small>" in flat and "–" not in flat.split("<svg")[0]
    assert "no data yet" in line([0], [None], "length", "cm")
