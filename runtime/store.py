"""Where the daemon's knowledge lives: SQLite (WAL) for individuals, gallery embeddings, sightings and
events, plus an append-only JSONL event log.

Every event is committed in its own short transaction (or a small batch via `write_events`), so a
`kill -9` at any moment leaves a database that opens consistent with every event committed so far.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from finprint.errors import FinprintError
from finprint.runtime.identity import UNKNOWN, Gallery
from finprint.runtime.manifest import load_manifest, manifest_path_for, sha256_file

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
CREATE TABLE IF NOT EXISTS gallery_embedder (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    identity TEXT NOT NULL,
    created REAL NOT NULL
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
    """Open (or create) a finprint database, integrity-checked: a damaged or foreign file is a
    FinprintError naming it, before anything is written into it."""
    try:
        conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise FinprintError(f"{path}: cannot open the database ({exc})") from exc
    try:
        check_integrity(conn, path)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (not a power cut) and keeps commits cheap.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(SCHEMA)
        _add_missing_columns(conn)
    except sqlite3.OperationalError as exc:  # full disk, read-only file, locked: the file may be fine
        conn.close()
        raise FinprintError(f"{path}: cannot use the database ({exc})") from exc
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        conn.close()
        raise FinprintError(f"{path}: not a usable finprint database ({exc}); restore it from a backup") from exc
    except FinprintError:
        conn.close()
        raise
    return conn


def check_integrity(conn: sqlite3.Connection, path: str | Path) -> None:
    """PRAGMA quick_check (every page and record, not index contents: seconds for a gigabyte). A truncated
    file, flipped bytes in its structure or a file that is no database at all fail here."""
    try:
        rows = conn.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.DatabaseError as exc:
        raise FinprintError(f"{path}: not a usable finprint database ({exc}); restore it from a backup") from exc
    if [r[0] for r in rows] != ["ok"]:
        detail = "; ".join(line for r in rows for line in str(r[0]).splitlines() if line.strip())
        raise FinprintError(f"{path}: the database is damaged ({detail}); restore it from a backup")


def check_database_file(path: str | Path) -> None:
    """`serve --check`: open an existing database read-only and integrity-check it, writing nothing."""
    path = Path(path)
    if not path.exists():
        return
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise FinprintError(f"{path}: cannot open the database ({exc})") from exc
    try:
        check_integrity(conn, path)
    finally:
        conn.close()


# Individual ids are shown in tables, events and MQTT topics' payloads: printable ASCII letters, digits and
# a few separators, so a name cannot fake a table row (newline), hide (control characters) or pass for
# another (look-alike Unicode letters). "unknown" is the matcher's own label for a stranger.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}[A-Za-z0-9._-]|[A-Za-z0-9]")
MAX_ID_LEN = 64


def validate_individual_id(individual_id: str) -> str:
    shown = repr(individual_id[:40] + ("..." if len(individual_id) > 40 else ""))
    if len(individual_id) > MAX_ID_LEN:
        raise FinprintError(f"individual id {shown} is {len(individual_id)} characters long; at most {MAX_ID_LEN}")
    if not _ID_RE.fullmatch(individual_id):
        nonascii = [c for c in individual_id if ord(c) > 127]
        hint = f" ({unicodedata.name(nonascii[0], f'U+{ord(nonascii[0]):04X}')})" if nonascii else ""
        raise FinprintError(f"individual id {shown}{hint}: use 1 to {MAX_ID_LEN} ASCII letters, digits, '.', '_', '-' "
                            "or inner spaces")
    if individual_id.lower() == str(UNKNOWN).lower():
        raise FinprintError(f"individual id {shown} is the label the matcher gives strangers; choose another name")
    return individual_id


def model_identity(path: str | Path) -> str:
    """What a gallery's embeddings are tied to: the ONNX sha256 in the model's manifest (the same for the ONNX
    and the TensorRT engine built from it), else the file's own sha256."""
    manifest = manifest_path_for(path)
    return load_manifest(manifest).onnx_sha256 if manifest.is_file() else sha256_file(path)


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

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error as exc:  # SQLite may have rolled back by itself (SQLITE_FULL can)
                log.debug("%s: rollback: %s", self.path, exc)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside BEGIN ... COMMIT under the store's lock (rolled back on any error): for the
        modules that keep their own tables in this database (runtime/review.py)."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of one read-only statement, under the store's lock."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- gallery -------------------------------------------------------------------------------
    def embedder(self) -> dict | None:
        """The embedder this gallery's embeddings came from: {"name", "identity"} (model_identity), or None
        for an empty gallery or one enrolled before it was recorded."""
        with self._lock:
            row = self._conn.execute("SELECT name, identity FROM gallery_embedder WHERE id = 1").fetchone()
        return {"name": row[0], "identity": row[1]} if row else None

    def check_embedder(self, identity: str, name: str) -> None:
        """Embeddings of two models are not comparable even at the same size: refuse a mix."""
        stored = self.embedder()
        if stored is not None and stored["identity"] != identity and self.count("embeddings"):
            raise FinprintError(
                f"{self.path}: enrolled with embedder {stored['name']} (sha256 {stored['identity'][:12]}…), not {name} "
                f"(sha256 {identity[:12]}…); use that embedder, or enroll every fish again into a new gallery")

    def enroll(self, individual_id: str, embeddings: np.ndarray, source: str = "", embedder: tuple[str, str] | None = None) -> int:
        """Add embeddings for an individual; `embedder` (name, model_identity) is checked against the
        gallery's and recorded."""
        validate_individual_id(individual_id)
        if embedder is not None:
            self.check_embedder(embedder[1], embedder[0])
        emb = np.asarray(embeddings, np.float32).reshape(-1, embeddings.shape[-1])
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                if embedder is not None:
                    self._conn.execute("INSERT OR REPLACE INTO gallery_embedder(id, name, identity, created) VALUES (1, ?, ?, ?)",
                                       (embedder[0], embedder[1], now))
                self._conn.execute("INSERT OR IGNORE INTO individuals(id, created) VALUES (?, ?)", (individual_id, now))
                self._conn.executemany(
                    "INSERT INTO embeddings(individual_id, dim, vector, source, created) VALUES (?, ?, ?, ?, ?)",
                    [(individual_id, emb.shape[1], row.tobytes(), source, now) for row in emb],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                # A failed statement (a full disk) leaves the transaction open: end it, so the next
                # write can BEGIN, and nothing of this batch is half-committed.
                self._rollback()
                raise
        return len(emb)

    def forget(self, individual_id: str) -> bool:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.execute("DELETE FROM embeddings WHERE individual_id = ?", (individual_id,))
                cur = self._conn.execute("DELETE FROM individuals WHERE id = ?", (individual_id,))
                self._conn.execute("COMMIT")
            except BaseException:
                # A failed statement (a full disk) leaves the transaction open: end it, so the next
                # write can BEGIN, and nothing of this batch is half-committed.
                self._rollback()
                raise
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
            try:
                for ev in events:
                    self._conn.execute(
                        "INSERT INTO events(ts, type, camera, individual_id, payload) VALUES (?, ?, ?, ?, ?)",
                        (ev["ts"], ev["type"], ev.get("camera"), ev.get("individual_id"), json.dumps(ev, sort_keys=True)),
                    )
                    if ev["type"] == "track_end":
                        self._record_sighting(ev)
                self._conn.execute("COMMIT")
            except BaseException:
                # A failed statement (a full disk) leaves the transaction open: end it, so the next
                # write can BEGIN, and nothing of this batch is half-committed.
                self._rollback()
                raise

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
            try:
                for ev in ended:
                    self._update_individual(ev)
                self._conn.execute("COMMIT")
            except BaseException:
                # A failed statement (a full disk) leaves the transaction open: end it, so the next
                # write can BEGIN, and nothing of this batch is half-committed.
                self._rollback()
                raise

    def count(self, table: str) -> int:
        if table not in ("individuals", "embeddings", "sightings", "events"):
            raise ValueError(table)
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


class JsonlLog:
    """Append-only event log, one JSON object per line, written (and fsync'd on close) per batch.

    A batch is all or nothing: a write that fails part-way (a full disk) is cut back to where the batch
    began, so the log never holds half a line and the caller can write the same batch again later."""

    name = "jsonl"  # the daemon's sink name (its pending events, /healthz)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def write_events(self, events: list[dict]) -> None:
        if not events:
            return
        data = "".join(json.dumps(ev, sort_keys=True) + "\n" for ev in events).encode("utf-8")
        with self._lock:
            if self._fd < 0:
                raise OSError(f"{self.path}: event log closed")
            start = os.lseek(self._fd, 0, os.SEEK_END)
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError:
                self._cut(start)
                raise

    def _cut(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:  # a character device (/dev/full) has no length to cut
            log.debug("%s: cannot cut back a partial write: %s", self.path, exc)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                fd, self._fd = self._fd, -1
                try:
                    if os.path.isfile(self.path):  # fsync means nothing on /dev/null and the like
                        os.fsync(fd)
                finally:
                    os.close(fd)
