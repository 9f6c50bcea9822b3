"""`finprint individuals`: the gallery's individuals, when each was last seen, and how its size changed."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from finprint.errors import FinprintError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gallery", required=True, type=Path, help="the gallery database (SQLite)")


def run(args: argparse.Namespace) -> int:
    return _individuals(args)


def open_store(path: Path, must_exist: bool):
    """The gallery database; a clear error for a missing file (`must_exist`) or folder."""
    from finprint.runtime.store import Store

    if must_exist and not path.is_file():
        raise FinprintError(f"{path}: no such gallery")
    if not path.parent.is_dir():
        raise FinprintError(f"{path}: folder {path.parent} does not exist")
    return Store(path)


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "never"


def size_trend(lengths_cm: list[float]) -> str:
    """First and last measured length and the change, e.g. '18.2 -> 19.0 cm (+0.8)'."""
    if not lengths_cm:
        return "-"
    first, last = lengths_cm[0], lengths_cm[-1]
    return f"{first:.1f} -> {last:.1f} cm ({last - first:+.1f})" if len(lengths_cm) > 1 else f"{first:.1f} cm"


def _individuals(args: argparse.Namespace) -> int:
    store = open_store(args.gallery, must_exist=True)
    try:
        rows = store.individuals()
    finally:
        store.close()
    header = ("id", "last seen", "sightings", "embeddings", "size trend")
    table = [(r["id"], _fmt_time(r["last_seen"]), str(r["sightings"]), str(r["embeddings"]), size_trend(r["lengths_cm"]))
             for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(header)]
    out = sys.stdout
    out.write("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip() + "\n")
    for row in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
    out.write(f"{len(table)} individuals\n")
    return 0
