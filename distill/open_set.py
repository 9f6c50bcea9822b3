"""Open-set decisions for the embedder: a gallery threshold on max cosine similarity.

A query whose best cosine similarity to the gallery falls below the threshold is an unknown fish.
The threshold is picked on validation data so that a chosen share (default 95 %) of known fish are
accepted; export writes it into the manifest's `open_set_threshold`. The gallery can then grow
without retraining.
"""

from __future__ import annotations

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


def embedder_report(
    query_emb: np.ndarray,
    query_ids: Sequence[str],
    query_cams: Sequence[str] | None,
    gallery_emb: np.ndarray,
    gallery_ids: Sequence[str],
    gallery_cams: Sequence[str] | None,
    tpr: float = 0.95,
) -> dict[str, float]:
    """Closed-set re-ID (known queries only) + open-set AUROC/FPR95 + the threshold at `tpr`."""
    in_gallery = set(gallery_ids)
    known = np.array([q in in_gallery for q in query_ids], dtype=bool)
    cams = list(query_cams) if query_cams is not None else None
    known_ids = [q for q, k in zip(query_ids, known, strict=True) if k]
    known_cams = [c for c, k in zip(cams, known, strict=True) if k] if cams is not None else None
    # Farm gallery and query crops share cameras: Market's same-camera exclusion would skip them all.
    cross_camera = cross_camera_applicable(known_ids, known_cams, gallery_ids, gallery_cams)
    reid = reid_metrics(
        query_emb[known], known_ids, known_cams, gallery_emb, gallery_ids, gallery_cams, cross_camera
    )
    known_scores, unknown_scores = known_unknown_scores(query_emb, query_ids, gallery_emb, gallery_ids)
    open_set = open_set_metrics(known_scores, unknown_scores, tpr)
    out: dict[str, float] = {}
    for key in ("rank1", "rank5", "map"):
        if reid[key] is not None:
            out[key] = float(reid[key])
    for key, name in (("auroc", "auroc"), ("fpr95", "fpr95"), ("threshold95", "open_set_threshold")):
        if open_set[key] is not None:
            out[name] = float(open_set[key])
    return out
