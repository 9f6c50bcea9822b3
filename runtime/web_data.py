"""What the web page shows about the fish, read from the databases: per-fish summaries, daily sightings,
length and activity over time, a fish's snapshots and sightings. Read-only."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from finprint.runtime.store import Store

DAYS = 14  # sightings-per-day bars cover this many days up to today


@dataclass(frozen=True)
class FishSummary:
    id: str
    first_seen: float | None
    last_seen: float | None
    sightings: int
    embeddings: int
    per_day: list[tuple[str, int]]  # (YYYY-MM-DD, sightings) for the last DAYS days, oldest first
    lengths: list[tuple[float, float]]  # (ts, cm)
    speeds: list[tuple[float, float]]  # (ts, cm/s)


def _days(now: float) -> list[str]:
    return [time.strftime("%Y-%m-%d", time.localtime(now - 86400 * k)) for k in range(DAYS - 1, -1, -1)]


def individuals(gallery: Store, events: Store, now: float | None = None) -> list[FishSummary]:
    now = time.time() if now is None else now
    days = _days(now)
    rows = gallery.query("SELECT i.id, i.first_seen, i.last_seen, i.sightings, "
                         "(SELECT COUNT(*) FROM embeddings e WHERE e.individual_id = i.id) FROM individuals i ORDER BY i.id")
    since = now - 86400 * DAYS
    counts: dict[tuple[str, str], int] = {}
    for fish, day, n in events.query("SELECT individual_id, date(last_ts, 'unixepoch', 'localtime'), COUNT(*) FROM sightings "
                                     "WHERE individual_id IS NOT NULL AND last_ts >= ? GROUP BY 1, 2", (since,)):
        counts[(fish, day)] = n
    series: dict[str, tuple[list, list]] = {}
    for fish, ts, length, speed in events.query("SELECT individual_id, last_ts, length_cm, speed_cm_s FROM sightings "
                                                "WHERE individual_id IS NOT NULL ORDER BY last_ts"):
        lengths, speeds = series.setdefault(fish, ([], []))
        if length is not None:
            lengths.append((ts, length))
        if speed is not None:
            speeds.append((ts, speed))
    out = []
    for fish, first, last, n, n_emb in rows:
        lengths, speeds = series.get(fish, ([], []))
        out.append(FishSummary(fish, first, last, n, n_emb, [(d, counts.get((fish, d), 0)) for d in days], lengths[-200:],
                               speeds[-200:]))
    return out


def sightings(events: Store, fish: str, limit: int = 100) -> list[dict]:
    keys = ("camera", "track_id", "first_ts", "last_ts", "frames", "similarity", "length_cm", "speed_cm_s")
    rows = events.query(f"SELECT {', '.join(keys)} FROM sightings WHERE individual_id = ? ORDER BY last_ts DESC LIMIT ?",
                        (fish, limit))
    return [dict(zip(keys, r, strict=True)) for r in rows]


def snapshots(events: Store, fish: str, limit: int = 12) -> list[str]:
    """File names (in sinks.snapshots) of the fish's latest snapshots."""
    out = []
    for (payload,) in events.query("SELECT payload FROM events WHERE individual_id = ? AND type IN ('identified', 'reidentified') "
                                   "ORDER BY id DESC LIMIT ?", (fish, limit * 4)):
        name = json.loads(payload).get("snapshot")
        if name:
            out.append(name)
        if len(out) >= limit:
            break
    return out
