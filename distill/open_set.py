"""Open-set decisions for the embedder: a gallery threshold on max cosine similarity.

A query whose best cosine similarity to the gallery falls below the threshold is an unknown fish.
The threshold is picked on validation data so that a chosen share (default 95 %) of known fish are
accepted; export writes it into the manifest's `open_set_threshold`. The gallery can then grow
without retraining.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import numpy as np

from finprint.distill.metrics import (
    cross_camera_applicable,
    max_similarity,
    open_set_metrics,
    reid_metrics,
    threshold_at_tpr,
)

log = logging.getLogger(__name__)


def known_unknown_scores(
    query_emb: np.ndarray, query_ids: Sequence[str], gallery_emb: np.ndarray, gallery_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Max gallery similarity of queries whose identity is in the gallery (known) and of the rest (unknown)."""
    scores = max_similarity(query_emb, gallery_emb)
    in_gallery = set(gallery_ids)
    known = np.array([q in in_gallery for q in query_ids], dtype=bool)
    return scores[known], scores[~known]


def choose_open_set_threshold(
    query_emb: np.ndarray,
    query_ids: Sequence[str],
    gallery_emb: np.ndarray,
    gallery_ids: Sequence[str],
    tpr: float = 0.95,
) -> float:
    """The cosine threshold that accepts `tpr` of known validation queries (unknown queries are not needed)."""
    known, _ = known_unknown_scores(query_emb, query_ids, gallery_emb, gallery_ids)
    if known.size == 0:
        raise ValueError("no validation query has its identity in the gallery: cannot pick a threshold")
    return threshold_at_tpr(known, tpr)


OPEN_SET_SPLITS = ("auto", "half", "none")


def stranger_half(identities: Sequence[str]) -> set[str]:
    """A fixed half of `identities` (every second one in sha1 order): the same names give the same half
    on every machine and in every run, whatever order they were listed in."""
    ordered = sorted(set(identities), key=lambda name: hashlib.sha1(name.encode()).hexdigest())
    return set(ordered[1::2])


def embedder_report(
    query_emb: np.ndarray,
    query_ids: Sequence[str],
    query_cams: Sequence[str] | None,
    gallery_emb: np.ndarray,
    gallery_ids: Sequence[str],
    gallery_cams: Sequence[str] | None,
    tpr: float = 0.95,
    open_set_split: str = "auto",
    cross_camera: bool | None = None,
) -> dict[str, float]:
    """The one re-ID rule of training validation, `finprint eval` and the export gate.

    Known vs unknown is relative to the gallery (what is enrolled), never to what the model trained on.
    Closed set: rank-1/5 and mAP of the queries whose identity is in the gallery (Market-1501, cross-camera
    where every query keeps a match on another camera, unless `cross_camera` says). Open set (AUROC, FPR95, the threshold at `tpr`):
    against the queries whose identity is not in the gallery; where there are none ("auto") or with
    `open_set_split="half"`, a fixed half of the gallery's identities is taken out of the gallery and their
    queries become the strangers. `open_set_split="none"` leaves the open-set metrics out.
    """
    if open_set_split not in OPEN_SET_SPLITS:
        raise ValueError(f"open_set_split: one of {', '.join(OPEN_SET_SPLITS)}, got {open_set_split!r}")
    query_ids, gallery_ids = list(query_ids), list(gallery_ids)
    in_gallery = set(gallery_ids)
    known = np.array([q in in_gallery for q in query_ids], dtype=bool)
    if not known.any():
        raise ValueError("no query identity is in the gallery: nothing to re-identify")
    cams = list(query_cams) if query_cams is not None else None
    known_ids = [q for q, k in zip(query_ids, known, strict=True) if k]
    known_cams = [c for c, k in zip(cams, known, strict=True) if k] if cams is not None else None
    # Farm gallery and query crops share cameras: Market's same-camera exclusion would skip them all.
    if cross_camera is None:
        cross_camera = cross_camera_applicable(known_ids, known_cams, gallery_ids, gallery_cams)
    reid = reid_metrics(
        query_emb[known], known_ids, known_cams, gallery_emb, gallery_ids, gallery_cams, cross_camera
    )
    out: dict[str, float] = {}
    for key in ("rank1", "rank5", "map"):
        if reid[key] is not None:
            out[key] = float(reid[key])
    split = open_set_split == "half" or (open_set_split == "auto" and known.all())
    if split:
        strangers = stranger_half(gallery_ids)
        enrolled = np.array([g not in strangers for g in gallery_ids], dtype=bool)
        if not enrolled.any() or not strangers:
            return out  # one identity cannot be split into enrolled fish and strangers
        gallery_emb = gallery_emb[enrolled]
        gallery_ids = [g for g, e in zip(gallery_ids, enrolled, strict=True) if e]
        query_keep = np.array([q in in_gallery for q in query_ids], dtype=bool)
        query_emb, query_ids = query_emb[query_keep], [q for q, k in zip(query_ids, query_keep, strict=True) if k]
    if open_set_split != "none":
        known_scores, unknown_scores = known_unknown_scores(query_emb, query_ids, gallery_emb, gallery_ids)
        open_set = open_set_metrics(known_scores, unknown_scores, tpr)
        for key, name in (("auroc", "auroc"), ("fpr95", "fpr95"), ("threshold95", "open_set_threshold")):
            if open_set[key] is not None:
                out[name] = float(open_set[key])
    out["cross_camera"] = float(cross_camera)
    out["queries"] = float(reid["queries"])
    out["skipped_queries"] = float(reid["skipped"])
    out["unknown_queries"] = float(len(query_ids) - int(np.isin(query_ids, list(set(gallery_ids))).sum())) if open_set_split != "none" else 0.0
    out["open_set_split"] = float(split)
    return out
