"""Several re-ID crop folders as one, for an embedder trained on real and synthetic fish together.

Each source's identities get the source's name as a prefix (`f4k-t1017`, `farm-fish003`), so two folders that both
call a fish `0001` stay two fish. Crops are linked, not copied. The merged gallery/ and query/ come only from the
sources named in `eval_from`: a folder whose test identities are disjoint from its training ones (f4k-tracklets)
keeps its test split out of checkpoint selection that way, while a farm, whose gallery holds the fish it trains on,
validates on its own gallery/query as it does alone.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from pathlib import Path

from finprint.data.reid import load_reid
from finprint.errors import DataError, FinprintError

SOURCE_NAME = re.compile(r"^[A-Za-z0-9]+$")


def parse_source(text: str) -> tuple[str, Path]:
    """`NAME=FOLDER` -> (NAME, FOLDER); NAME is letters and digits (it becomes part of every identity)."""
    name, sep, folder = text.partition("=")
    if not sep or not folder:
        raise FinprintError(f"{text!r}: a source is NAME=FOLDER, e.g. f4k=../shared/data/f4k-tracklets")
    if not SOURCE_NAME.match(name):
        raise FinprintError(f"{text!r}: the source name must be letters and digits only (it prefixes every identity)")
    return name, Path(folder)


def merge_reid(sources: dict[str, Path], out: Path, eval_from: list[str] | None = None) -> dict[str, Counter]:
    """Link every source's train/ crops, and the gallery/ and query/ crops of `eval_from` (default: all sources),
    into OUT/{train,gallery,query}/<name>-<original file name>. Returns crops per subset per source.

    Written to OUT.partial and renamed at the end, so an interrupted merge never looks finished."""
    eval_from = list(sources) if eval_from is None else eval_from
    unknown = [name for name in eval_from if name not in sources]
    if unknown:
        raise FinprintError(f"--eval-from {', '.join(unknown)}: not a source name (sources: {', '.join(sources)})")
    if out.exists():
        raise DataError(out, "already exists: pick a new folder or delete it first (nothing was written)")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    counts: dict[str, Counter] = {}
    for name, folder in sources.items():
        root = folder / "reid" if (folder / "reid").is_dir() else folder  # a farm folder holds its crops in reid/
        reid, _ = load_reid(root)
        subsets = {c.subset for c in reid.crops}
        if not {"train", "gallery", "query"} <= subsets:
            raise DataError(root, "a merged source needs train/, gallery/ and query/ crop folders with Market-1501 names")
        counts[name] = Counter()
        for crop in reid.crops:
            if crop.subset != "train" and name not in eval_from:
                continue
            target = partial / crop.subset / f"{name}-{crop.path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(crop.path.resolve(), target)
            counts[name][crop.subset] += 1
    partial.rename(out)
    return counts
