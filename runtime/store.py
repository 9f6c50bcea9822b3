"""Where the daemon's knowledge lives: SQLite (WAL) for individuals, gallery embeddings, sightings and
events, plus an append-only JSONL event log.

Every event is committed in its own short transaction (or a small batch via `write_events`), so a
`kill -9` at any moment leaves a database that opens consistent with every event committed so far.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from finprint.runtime.identity import Gallery

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS individuals (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    first_seen REAL,
    last_seen REAL,
    sightings INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    individual_id TEXT NOT NULL REFERENCES individuals(id) ON DELETE CASCADE,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    source TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sightings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    individual_id TEXT,
    camera TEXT NOT NULL,
    track_id INTEGER NOT NULL,
    first_ts REAL NOT NULL,
    last_ts REAL NOT NULL,
    frames INTEGER NOT NULL,
    similarity REAL,
    length_cm REAL,
    speed_cm_s REAL
);
CREATE INDEX IF NOT EXISTS sightings_by_individual ON sightings(individual_id, last_ts);
CREATE TABLE IF NOT EXISTS open_set (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    threshold REAL NOT NULL,
    margin REAL NOT NULL,
    embedder TEXT NOT NULL,
    embedder_sha256 TEXT NOT NULL,
    tuned_on TEXT NOT NULL,
    created REAL NOT NULL,
    whitening REAL
);
CREATE TABLE IF NOT EXISTS tracking (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    high_score REAL NOT NULL,
    appearance_gate REAL,
    detector TEXT NOT NULL,
    detector_sha256 TEXT NOT NULL,
    embedder_sha256 TEXT NOT NULL,
    tuned_on TEXT NOT NULL,
    created REAL NOT NULL,
    appearance_space TEXT,
    split_window INTEGER,
    min_hits INTEGER
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    camera TEXT,
    individual_id TEXT,
    payload TEXT NOT NULL
);
"""


def connect(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a killed process (not a power cut) and keeps commits cheap.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(SCHEMA)
    _add_missing_columns(conn)
    return conn


# Columns added after galleries were already out on farms: (table, column, SQL type). SQLite's
# CREATE TABLE IF NOT EXISTS leaves an older table as it was, so they are added on open (NULL = unset).
ADDED_COLUMNS = (("open_set", "whitening", "REAL"), ("tracking", "appearance_space", "TEXT"), ("tracking", "split_window", "INTEGER"),
                 ("tracking", "min_hits", "INTEGER"))


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, column, kind in ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


class Store:
    """One SQLite database. Thread-safe: one connection behind a lock (writes are tiny)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = connect(self.path)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- gallery -------------------------------------------------------------------------------
    def enroll(self, individual_id: str, embeddings: np.ndarray, source: str = "") -> int:
        emb = np.asarray(embeddings, np.float32).reshape(-1, embeddings.shape[-1])
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.execute("INSERT OR IGNORE INTO individuals(id, created) VALUES (?, ?)", (individual_id, now))
            self._conn.executemany(
                "INSERT INTO embeddings(individual_id, dim, vector, source, created) VALUES (?, ?, ?, ?, ?)",
                [(individual_id, emb.shape[1], row.tobytes(), source, now) for row in emb],
            )
            self._conn.execute("COMMIT")
        return len(emb)

    def forget(self, individual_id: str) -> bool:
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.execute("DELETE FROM embeddings WHERE individual_id = ?", (individual_id,))
            cur = self._conn.execute("DELETE FROM individuals WHERE id = ?", (individual_id,))
            self._conn.execute("COMMIT")
        return cur.rowcount > 0

    def load_gallery(self, threshold: float, whitening: float | None = None) -> Gallery:
        with self._lock:
            rows = self._conn.execute("SELECT individual_id, dim, vector FROM embeddings ORDER BY id").fetchall()
        if not rows:
            return Gallery(threshold=threshold, whitening=whitening)
        dims = {r[1] for r in rows}
        if len(dims) != 1:
            raise ValueError(f"{self.path}: gallery mixes embedding sizes {sorted(dims)}")
        emb = np.stack([np.frombuffer(r[2], np.float32) for r in rows])
        return Gallery([r[0] for r in rows], emb, threshold=threshold, whitening=whitening)

    def set_open_set(self, threshold: float, margin: float, embedder: str, embedder_sha256: str, tuned_on: str,
                     whitening: float | None = None) -> None:
        """The tuned open-set rule (runtime/tuned.py; whitening None = plain cosine), replacing any earlier one."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO open_set(id, threshold, margin, embedder, embedder_sha256, tuned_on, created, whitening)"
                " VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                (threshold, margin, embedder, embedder_sha256, tuned_on, time.time(), whitening))

    def set_tracking(self, high_score: float, appearance_gate: float | None, detector: str, detector_sha256: str,
                     embedder_sha256: str, tuned_on: str, appearance_space: str = "embedder", split_window: int = 0,
                     min_hits: int = 3) -> None:
        """Tracker settings tuned with the open-set rule (NULL gate = boxes only), replacing any earlier ones."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO tracking(id, high_score, appearance_gate, detector, detector_sha256, embedder_sha256,"
                " tuned_on, created, appearance_space, split_window, min_hits) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (high_score, appearance_gate, detector, detector_sha256, embedder_sha256, tuned_on, time.time(), appearance_space,
                 split_window, min_hits))

    def tracking(self) -> dict | None:
        """The tuned tracker row; `appearance_space`, `split_window` and `min_hits` are None in a gallery tuned before
        they were stored."""
        keys = ("high_score", "appearance_gate", "detector", "detector_sha256", "embedder_sha256", "tuned_on", "appearance_space",
                "split_window", "min_hits")
        with self._lock:
            row = self._conn.execute(f"SELECT {', '.join(keys)} FROM tracking WHERE id = 1").fetchone()
        return dict(zip(keys, row, strict=True)) if row else None

    def open_set(self) -> dict | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT threshold, margin, embedder, embedder_sha256, tuned_on, whitening FROM open_set WHERE id = 1").fetchone()
        keys = ("threshold", "margin", "embedder", "embedder_sha256", "tuned_on", "whitening")
        return dict(zip(keys, row, strict=True)) if row else None

    def individuals(self) -> list[dict]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT i.id, i.first_seen, i.last_seen, i.sightings, "
                "(SELECT COUNT(*) FROM embeddings e WHERE e.individual_id = i.id) "
                "FROM individuals i ORDER BY i.id"
            ).fetchall()
            out = []
            for ind, first, last, n, n_emb in rows:
                lengths = [
                    r[0]
                    for r in self._conn.execute(
                        "SELECT length_cm FROM sightings WHERE individual_id = ? AND length_cm IS NOT NULL ORDER BY last_ts",
                        (ind,),
                    )
                ]
                out.append(
                    {"id": ind, "first_seen": first, "last_seen": last, "sightings": n, "embeddings": n_emb, "lengths_cm": lengths}
                )
        return out

    # -- events --------------------------------------------------------------------------------
    def write_events(self, events: list[dict]) -> None:
        """Commit a small batch atomically: every event row, and for ended tracks the sighting."""
        if not events:
            return
        with self._lock:
            self._conn.execute("BEGIN")
            for ev in events:
                self._conn.execute(
                    "INSERT INTO events(ts, type, camera, individual_id, payload) VALUES (?, ?, ?, ?, ?)",
                    (ev["ts"], ev["type"], ev.get("camera"), ev.get("individual_id"), json.dumps(ev, sort_keys=True)),
                )
                if ev["type"] == "track_end":
                    self._record_sighting(ev)
            self._conn.execute("COMMIT")

    def _record_sighting(self, ev: dict) -> None:
        self._conn.execute(
            "INSERT INTO sightings(individual_id, camera, track_id, first_ts, last_ts, frames, similarity, length_cm, speed_cm_s) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ev.get("individual_id"), ev["camera"], ev["track_id"], ev["first_ts"], ev["last_ts"], ev["frames"],
             ev.get("similarity"), ev.get("length_cm"), ev.get("speed_cm_s")),
        )
        self._update_individual(ev)

    def _update_individual(self, ev: dict) -> None:
        if ev.get("individual_id"):
            self._conn.execute(
                "UPDATE individuals SET sightings = sightings + 1, "
                "first_seen = COALESCE(MIN(first_seen, ?), ?), last_seen = MAX(COALESCE(last_seen, 0), ?) WHERE id = ?",
                (ev["first_ts"], ev["first_ts"], ev["last_ts"], ev["individual_id"]),
            )

    def update_individuals(self, events: list[dict]) -> None:
        """Sightings counters and first/last seen only: for a gallery whose events go to another database."""
        ended = [ev for ev in events if ev["type"] == "track_end"]
        if not ended:
            return
        with self._lock:
            self._conn.execute("BEGIN")
            for ev in ended:
                self._update_individual(ev)
            self._conn.execute("COMMIT")

    def count(self, table: str) -> int:
        if table not in ("individuals", "embeddings", "sightings", "events"):
            raise ValueError(table)
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


class JsonlLog:
    """Append-only event log, one JSON object per line, flushed (and fsync'd on close) per batch."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the daemon
        self._lock = threading.Lock()

    def write_events(self, events: list[dict]) -> None:
        if not events:
            return
        with self._lock:
            self._fh.write("".join(json.dumps(ev, sort_keys=True) + "\n" for ev in events))
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
