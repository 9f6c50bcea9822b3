"""The daemon's web page: routes to views, files and review actions (runtime/http.py serves it).

GET  /, /individuals, /fish/<id>, /review      the views (runtime/web_pages.py)
GET  /live/<camera>.jpg, /api/live             each camera's latest annotated frame, fps and health
GET  /crops/<name>, /snapshots/<name>          review crops and event snapshots, from their folders only
POST /api/review {uid, action, fish, who}      "this is <fish>" (confirm), "new fish <id>" (new), ignore
POST /api/undo {id, who}                       take a decision back

A decision that enrols or removes embeddings asks the daemon to reload its gallery (`gallery_changed`), which
the inference worker does between batches: the next frames are matched against the new gallery, no restart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from finprint.errors import FinprintError
from finprint.runtime import review, web_data, web_pages
from finprint.runtime.live import LiveView
from finprint.runtime.store import Store
from finprint.runtime.web_auth import Auth, safe_file

log = logging.getLogger(__name__)


@dataclass
class Response:
    code: int
    body: bytes
    ctype: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class WebContext:
    """What the page reads and may change in the running daemon."""

    gallery: Store
    events: Store
    live: LiveView
    cameras: Callable[[], dict[str, dict]]  # camera -> {"fps", "state"}
    gallery_changed: Callable[[], None]
    embedder: tuple[str, str] | None  # (name, model identity) the daemon embeds with
    snapshots: Path | None
    review_folder: Path | None
    review_lead: float = review.DEFAULT_REVIEW_LEAD


def _json(code: int, payload: dict) -> Response:
    return Response(code, json.dumps(payload).encode(), "application/json")


def _not_found(what: str) -> Response:
    return Response(404, f"not found: {what}\n".encode(), "text/plain; charset=utf-8")


class WebApp:
    def __init__(self, ctx: WebContext, auth: Auth) -> None:
        self.ctx = ctx
        self.auth = auth

    # -- GET -------------------------------------------------------------------------------------
    def get(self, path: str) -> Response | None:
        """The page's routes; None for a path it does not serve."""
        csrf = self.auth.csrf
        if path == "/":
            return Response(200, web_pages.live_page(self._camera_status(), csrf).encode())
        if path == "/individuals":
            return Response(200, web_pages.individuals_page(web_data.individuals(self.ctx.gallery, self.ctx.events), csrf).encode())
        if path.startswith("/fish/"):
            return self._fish(unquote(path[len("/fish/"):]))
        if path == "/review":
            fish = [f["id"] for f in self.ctx.gallery.individuals()]
            page = web_pages.review_page(review.queue(self.ctx.gallery, self.ctx.review_lead), fish,
                                         review.history(self.ctx.gallery), csrf)
            return Response(200, page.encode())
        if path == "/api/live":
            return _json(200, {"cameras": self._camera_status()})
        if path.startswith("/live/") and path.endswith(".jpg"):
            jpg = self.ctx.live.jpeg(unquote(path[len("/live/"):-len(".jpg")]))
            return Response(200, jpg, "image/jpeg", (("Cache-Control", "no-store"),)) if jpg else _not_found("no frame yet")
        for prefix, folder in (("/crops/", self.ctx.review_folder), ("/snapshots/", self.ctx.snapshots)):
            if path.startswith(prefix):
                file = safe_file(folder, unquote(path[len(prefix):]))
                if file is None:
                    return _not_found(path)
                return Response(200, file.read_bytes(), "image/jpeg", (("Cache-Control", "max-age=3600"),))
        return None

    def _camera_status(self) -> dict[str, dict]:
        status = self.ctx.cameras()
        seen = self.ctx.live.cameras()
        for cam, v in status.items():
            fish = seen.get(cam, {}).get("fish", [])
            v["fish"] = ", ".join(f"#{tid} {label}" for tid, label in fish) or "no fish"
        return status

    def _fish(self, fish: str) -> Response:
        summary = next((f for f in web_data.individuals(self.ctx.gallery, self.ctx.events) if f.id == fish), None)
        if summary is None:
            return _not_found(f"fish {fish!r} (forgotten?)")
        page = web_pages.fish_page(summary, web_data.sightings(self.ctx.events, fish), web_data.snapshots(self.ctx.events, fish),
                                   self.auth.csrf)
        return Response(200, page.encode())

    # -- POST ------------------------------------------------------------------------------------
    def post(self, path: str, body: bytes) -> Response | None:
        if path not in ("/api/review", "/api/undo"):
            return None
        try:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            return _json(400, {"error": f"bad request body ({exc})"})
        who = str(data.get("who") or "")
        try:
            if path == "/api/review":
                fish = data.get("fish")
                rid = review.decide(self.ctx.gallery, str(data.get("uid", "")), str(data.get("action", "")),
                                    None if fish in (None, "") else str(fish), who, self.ctx.embedder)
                action, what = data["action"], f" {fish}" if fish and data["action"] != "ignore" else ""
                message = f"decision {rid}: track {data['uid']} {action}{what}"
                changed = action != "ignore"
            else:
                rid = int(data.get("id", -1))
                undone = review.undo(self.ctx.gallery, rid, who)
                message = f"decision {rid} undone ({undone['action']} {undone['individual_id'] or ''})".rstrip()
                changed = undone["action"] != "ignore"
        except (FinprintError, TypeError, ValueError) as exc:
            return _json(409, {"error": str(exc)})
        log.info("review: %s (by %s)", message, who or "anonymous")
        if changed:
            self.ctx.gallery_changed()
        return _json(200, {"ok": True, "message": message, "id": rid})
