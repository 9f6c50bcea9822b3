"""The review queue: tracks the daemon kept for a person to judge, and every judgement (who, when, what).

The daemon records each ended track with a few of its embeddings and crops (runtime/track_samples.py). A
person then says "this is <fish>", "new fish <id>" or "not a fish / ignore" on the web page. Naming a track
enrols its embeddings in the gallery under `source = "review:<decision id>"`, so undoing a decision removes
exactly what it added. A decision on a track that is gone or already judged, or naming a fish that was
forgotten, is refused with a message (`ReviewRefused`) and changes nothing stored.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from finprint.errors import FinprintError
from finprint.runtime.store import Store, validate_individual_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS review_tracks (
    uid TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    track_id INTEGER NOT NULL,
    first_ts REAL NOT NULL,
    last_ts REAL NOT NULL,
    frames INTEGER NOT NULL,
    individual_id TEXT,
    closest_id TEXT,
    similarity REAL,
    lead REAL,
    embedder TEXT,
    crops TEXT NOT NULL,
    frame TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS review_tracks_by_time ON review_tracks(last_ts);
CREATE TABLE IF NOT EXISTS review_embeddings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    track_uid TEXT NOT NULL REFERENCES review_tracks(uid) ON DELETE CASCADE,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    track_uid TEXT NOT NULL,
    action TEXT NOT NULL,
    individual_id TEXT,
    who TEXT NOT NULL,
    ts REAL NOT NULL,
    created_fish INTEGER NOT NULL DEFAULT 0,
    undone_ts REAL,
    undone_by TEXT
);
CREATE INDEX IF NOT EXISTS reviews_by_track ON reviews(track_uid);
"""

ACTIONS = ("confirm", "new", "ignore")  # "this is <fish>", "new fish <id>", "not a fish / ignore"
# Named tracks whose lead over the runner-up is below this go to the queue too (a near miss).
DEFAULT_REVIEW_LEAD = 0.1
MAX_WHO = 40


class ReviewRefused(FinprintError):
    """A decision that cannot be applied as asked; nothing was changed."""


@dataclass(frozen=True)
class TrackRecord:
    """One ended track as the daemon kept it for review."""

    uid: str
    camera: str
    track_id: int
    first_ts: float
    last_ts: float
    frames: int
    individual_id: str | None
    closest_id: str | None
    similarity: float | None
    lead: float | None
    embedder: str | None
    crops: tuple[str, ...]
    frame: str | None


_TRACK_COLS = "uid, camera, track_id, first_ts, last_ts, frames, individual_id, closest_id, similarity, lead, embedder, crops, frame"


def _track(row: tuple) -> TrackRecord:
    return TrackRecord(*row[:11], tuple(json.loads(row[11])), row[12])


def ensure_schema(store: Store) -> None:
    with store.transaction() as conn:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)


def record_track(store: Store, track: TrackRecord, embeddings: np.ndarray) -> None:
    """Keep an ended track (its summary, crops' file names and embeddings) for review."""
    emb = np.asarray(embeddings, np.float32).reshape(len(embeddings), -1)
    with store.transaction() as conn:
        conn.execute(f"INSERT OR REPLACE INTO review_tracks({_TRACK_COLS}, created) VALUES ({', '.join('?' * 14)})",
                     (track.uid, track.camera, track.track_id, track.first_ts, track.last_ts, track.frames,
                      track.individual_id, track.closest_id, track.similarity, track.lead, track.embedder,
                      json.dumps(list(track.crops)), track.frame, time.time()))
        conn.executemany("INSERT INTO review_embeddings(track_uid, dim, vector) VALUES (?, ?, ?)",
                         [(track.uid, emb.shape[1], row.tobytes()) for row in emb])


def get_track(store: Store, uid: str) -> TrackRecord | None:
    rows = store.query(f"SELECT {_TRACK_COLS} FROM review_tracks WHERE uid = ?", (uid,))
    return _track(rows[0]) if rows else None


def track_embeddings(store: Store, uid: str) -> np.ndarray:
    rows = store.query("SELECT dim, vector FROM review_embeddings WHERE track_uid = ? ORDER BY id", (uid,))
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.stack([np.frombuffer(r[1], np.float32) for r in rows])


def active_decision(store: Store, uid: str) -> dict | None:
    rows = store.query("SELECT id, action, individual_id, who, ts FROM reviews WHERE track_uid = ? AND undone_ts IS NULL "
                       "ORDER BY id DESC LIMIT 1", (uid,))
    return dict(zip(("id", "action", "individual_id", "who", "ts"), rows[0], strict=True)) if rows else None


def queue(store: Store, review_lead: float = DEFAULT_REVIEW_LEAD, limit: int = 50) -> list[TrackRecord]:
    """Tracks nobody has judged yet: unknown ones, and named ones whose lead is below `review_lead`; newest first."""
    rows = store.query(
        f"SELECT {_TRACK_COLS} FROM review_tracks t WHERE NOT EXISTS "
        "(SELECT 1 FROM reviews r WHERE r.track_uid = t.uid AND r.undone_ts IS NULL) "
        "AND (t.individual_id IS NULL OR (t.lead IS NOT NULL AND t.lead < ?)) ORDER BY t.last_ts DESC LIMIT ?",
        (review_lead, limit))
    return [_track(r) for r in rows]


def history(store: Store, limit: int = 50) -> list[dict]:
    """The latest decisions, undone ones included (they are part of who did what)."""
    keys = ("id", "track_uid", "action", "individual_id", "who", "ts", "undone_ts", "undone_by")
    rows = store.query(f"SELECT {', '.join(keys)} FROM reviews ORDER BY id DESC LIMIT ?", (limit,))
    return [dict(zip(keys, r, strict=True)) for r in rows]


def _who(who: str) -> str:
    who = " ".join(who.split())[:MAX_WHO]
    return who or "anonymous"


def decide(store: Store, uid: str, action: str, individual_id: str | None, who: str,
           embedder: tuple[str, str] | None = None) -> int:
    """Apply one decision; its id. "confirm" needs a fish in the gallery, "new" a fish id not yet in it; both
    enrol the track's embeddings. Refused (ReviewRefused, nothing changed) for an unknown or already judged track."""
    if action not in ACTIONS:
        raise ReviewRefused(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    track = get_track(store, uid)
    if track is None:
        raise ReviewRefused(f"track {uid} is not in the review list (stale page?); reload the page")
    done = active_decision(store, uid)
    if done is not None:
        raise ReviewRefused(f"track {uid} was already judged ({done['action']} {done['individual_id'] or ''}) by "
                            f"{done['who']}; undo that decision first")
    emb = track_embeddings(store, uid)
    if action != "ignore":
        if not individual_id:
            raise ReviewRefused(f"{action}: name the fish")
        validate_individual_id(individual_id)
        if not len(emb):
            raise ReviewRefused(f"track {uid} has no embeddings to enrol")
        if embedder is not None and track.embedder and track.embedder != embedder[1]:
            raise ReviewRefused(f"track {uid} was recorded with another embedder; it cannot be enrolled with this one")
    return _apply(store, track, action, individual_id if action != "ignore" else None, _who(who), emb, embedder)


def _apply(store: Store, track: TrackRecord, action: str, fish: str | None, who: str, emb: np.ndarray,
           embedder: tuple[str, str] | None) -> int:
    now = time.time()
    with store.transaction() as conn:  # checks and writes under one lock: a fish forgotten meanwhile is refused here
        if conn.execute("SELECT 1 FROM reviews WHERE track_uid = ? AND undone_ts IS NULL", (track.uid,)).fetchone():
            raise ReviewRefused(f"track {track.uid} was judged meanwhile; reload the page")
        exists = fish is not None and conn.execute("SELECT 1 FROM individuals WHERE id = ?", (fish,)).fetchone()
        if action == "confirm" and not exists:
            raise ReviewRefused(f"fish {fish!r} is not in the gallery (forgotten?); choose another or 'new fish'")
        if action == "new" and exists:
            raise ReviewRefused(f"fish {fish!r} is already in the gallery; use 'this is {fish}'")
        cur = conn.execute("INSERT INTO reviews(track_uid, action, individual_id, who, ts, created_fish) VALUES (?, ?, ?, ?, ?, ?)",
                           (track.uid, action, fish, who, now, int(action == "new")))
        review_id = int(cur.lastrowid or 0)
        if fish is not None:
            if embedder is not None:
                conn.execute("INSERT OR IGNORE INTO gallery_embedder(id, name, identity, created) VALUES (1, ?, ?, ?)",
                             (embedder[0], embedder[1], now))
            conn.execute("INSERT OR IGNORE INTO individuals(id, created) VALUES (?, ?)", (fish, now))
            conn.executemany("INSERT INTO embeddings(individual_id, dim, vector, source, created) VALUES (?, ?, ?, ?, ?)",
                             [(fish, emb.shape[1], row.astype(np.float32).tobytes(), f"review:{review_id}", now) for row in emb])
    return review_id


def undo(store: Store, review_id: int, who: str) -> dict:
    """Take a decision back: the embeddings it enrolled go, and a fish it created goes if nothing else enrolled
    it since. Refused for a decision that does not exist or was already undone."""
    with store.transaction() as conn:
        row = conn.execute("SELECT track_uid, action, individual_id, created_fish, undone_ts FROM reviews WHERE id = ?",
                           (review_id,)).fetchone()
        if row is None:
            raise ReviewRefused(f"decision {review_id} does not exist")
        uid, action, fish, created, undone = row
        if undone is not None:
            raise ReviewRefused(f"decision {review_id} was already undone")
        conn.execute("UPDATE reviews SET undone_ts = ?, undone_by = ? WHERE id = ?", (time.time(), _who(who), review_id))
        conn.execute("DELETE FROM embeddings WHERE source = ?", (f"review:{review_id}",))
        if created and fish is not None:
            left = conn.execute("SELECT COUNT(*) FROM embeddings WHERE individual_id = ?", (fish,)).fetchone()[0]
            if not left:
                conn.execute("DELETE FROM individuals WHERE id = ?", (fish,))
    return {"track_uid": uid, "action": action, "individual_id": fish}


def reviewed_tracks(store: Store) -> list[tuple[TrackRecord, str, str | None]]:
    """Every track with a standing decision: (track, action, fish)."""
    rows = store.query(
        f"SELECT {', '.join('t.' + c.strip() for c in _TRACK_COLS.split(','))}, r.action, r.individual_id FROM reviews r "
        "JOIN review_tracks t ON t.uid = r.track_uid WHERE r.undone_ts IS NULL ORDER BY r.id")
    return [(_track(r[:13]), r[13], r[14]) for r in rows]
