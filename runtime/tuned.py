"""The settings `finprint tune-open-set` stored in the gallery, resolved against the config: what the daemon
and the scorer run with.

The open-set rule (threshold and margin, and whether the gallery is whitened) and the tracker settings were
tuned on labelled video of the farm's own pens for one embedder (and detector) file; they hold only for
those files. The config wins, then the gallery's tuned values (when tuned for these model files), then the
embedder manifest's threshold and the defaults.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from finprint.errors import FinprintError
from finprint.runtime.identity import DEFAULT_OPEN_SET_MARGIN, Gallery
from finprint.runtime.store import ADDED_COLUMNS

if TYPE_CHECKING:
    from finprint.runtime.config import TrackingConfig
    from finprint.runtime.store import Store

log = logging.getLogger(__name__)

# Tracker settings `finprint tune-open-set` chooses and stores with the gallery.
TUNED_TRACKING = ("high_score", "appearance_gate", "appearance_space", "split_window", "min_hits")
# Columns added to the tracking row later: NULL in an older gallery's row means "not tuned", not a tuned choice.
ADDED_TRACKING = tuple(column for table, column, _ in ADDED_COLUMNS if table == "tracking")


@dataclass(frozen=True)
class OpenSetRule:
    threshold: float
    margin: float
    source: str  # where the pair came from, for logs and reports
    whitening: float | None = None  # the gallery's whitening strength (runtime/identity.py), None = off


def resolve_tracking(
    config: TrackingConfig, stored: dict | None, detector: str | Path, embedder: str | Path,
) -> tuple[TrackingConfig, str]:
    """The tracker's settings: those the config sets win, then the gallery's tuned ones (if tuned for these
    detector and embedder files), then the defaults."""
    tuned = None
    if stored is not None:
        if stored.get("detector_sha256") == file_digest(detector) and stored.get("embedder_sha256") == file_digest(embedder):
            tuned = stored
        else:
            log.warning("the gallery's tracker settings were tuned for other models (%s, %s): using the defaults; "
                        "rerun finprint tune-open-set", stored.get("detector"), stored.get("embedder"))
    updates, parts = {}, []
    for key in TUNED_TRACKING:
        if key in config.model_fields_set:
            parts.append(f"{key} {getattr(config, key)} from the config")
        elif tuned is not None and key in ADDED_TRACKING and tuned.get(key) is None:
            parts.append(f"{key} {getattr(config, key)} (default: tuned before it was stored)")
        elif tuned is not None:  # a NULL gate is a tuned choice: boxes only
            updates[key] = tuned[key]
            parts.append(f"{key} {tuned[key]} from the gallery (tuned)")
        else:
            parts.append(f"{key} {getattr(config, key)} (default)")
    return config.model_copy(update=updates), ", ".join(parts)


def file_digest(path: str | Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime): the daemon's start checks the same model
    files for the open-set rule and for the tracker settings."""
    st = os.stat(path)
    return _digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_rule(
    config_threshold: float | None,
    config_margin: float | None,
    stored: dict | None,
    embedder: str | Path,
    manifest_threshold: float,
    default_margin: float,
) -> OpenSetRule:
    """The config wins, then the gallery's tuned pair (if tuned for this embedder file), then the manifest."""
    tuned = None
    if stored is not None:
        if stored.get("embedder_sha256") == file_digest(embedder):
            tuned = stored
        else:
            log.warning("the gallery's open-set threshold was tuned for another embedder (%s): using the manifest's; "
                        "rerun finprint tune-open-set", stored.get("embedder"))
    threshold = config_threshold if config_threshold is not None else tuned["threshold"] if tuned else manifest_threshold
    margin = config_margin if config_margin is not None else tuned["margin"] if tuned else default_margin
    parts = ["config" if config_threshold is not None else "gallery (tuned)" if tuned else "manifest",
             "config" if config_margin is not None else "gallery (tuned)" if tuned else "default"]
    # Whitening changes what a similarity means: it holds only with the pair it was tuned with.
    whitening = tuned.get("whitening") if tuned and config_threshold is None and config_margin is None else None
    source = f"threshold {threshold:.2f} from the {parts[0]}, margin {margin:.2f} from the {parts[1]}"
    if whitening is not None:
        source += f", gallery whitened ({whitening:g}, tuned)"
    return OpenSetRule(float(threshold), float(margin), source, whitening)


def open_gallery(
    store: Store,
    embedder: str | Path,
    manifest_threshold: float,
    embedding_dim: int | None,
    config_threshold: float | None = None,
    config_margin: float | None = None,
) -> tuple[Gallery, OpenSetRule]:
    """The gallery as the daemon matches against it, and the open-set rule it uses (see resolve_rule)."""
    rule = resolve_rule(config_threshold, config_margin, store.open_set(), embedder, manifest_threshold, DEFAULT_OPEN_SET_MARGIN)
    try:
        gallery = store.load_gallery(rule.threshold, rule.whitening)
        gallery.check_embedder(embedding_dim, str(store.path))
    except ValueError as exc:
        raise FinprintError(str(exc)) from exc
    return gallery, rule
