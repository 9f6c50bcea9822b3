"""Open-set tuning from what people confirmed on the web page, no ground-truth files (issue 32).

Each reviewed track becomes one `TrackOutcome`, decided by the daemon's own vote rule (`TrackIdentity`) over the
embeddings the daemon kept of it, against the gallery as it would have been without that track's own enrolment:

- "this is <fish>": a genuine track of that fish (the gallery minus the embeddings this decision enrolled);
- "new fish <id>": a stranger's track (the gallery minus every embedding of that fish: it was unknown then);
- leave one fish out on the enrolment: each enrolled fish's enrolment embeddings, one source (clip, track, crop
  set) at a time, are a stranger's track against the gallery without that fish, and a genuine one against the
  gallery without that source when the fish has another.

"not a fish / ignore" decisions are left out. `finprint tune-open-set --from-reviews` runs `tune()` on them, with
the same floor of tracks as tuning from labelled videos (`tune/search.py`, `check_floor`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from finprint.runtime.identity import Gallery, TrackIdentity
from finprint.runtime.review import reviewed_tracks, track_embeddings
from finprint.runtime.store import Store
from finprint.tune.search import TrackOutcome


@dataclass(frozen=True)
class ReviewedSet:
    outcomes: list[TrackOutcome]
    confirmed: int  # reviewed tracks confirmed as a known fish
    strangers: int  # reviewed tracks that were a new fish
    enrolment_genuine: int  # leave-one-source-out enrolment tracks
    enrolment_strangers: int  # leave-one-fish-out enrolment tracks


def _embeddings(store: Store) -> tuple[list[str], list[str], np.ndarray]:
    rows = store.query("SELECT individual_id, COALESCE(source, ''), vector FROM embeddings ORDER BY id")
    if not rows:
        return [], [], np.zeros((0, 0), np.float32)
    return [r[0] for r in rows], [r[1] for r in rows], np.stack([np.frombuffer(r[2], np.float32) for r in rows])


def decide(gallery: Gallery, embeddings: np.ndarray) -> tuple[str | None, float, float]:
    """(closest fish, score, lead) of a track with these embeddings, by the daemon's vote rule."""
    rec = TrackIdentity("review", 0, 0.0, 0.0, threshold=0.0)
    names, sims = gallery.similarities(embeddings)
    for row in sims:
        rec.add(names, row)
    return rec.closest, rec.similarity, rec.lead


def _outcome(gallery: Gallery, emb: np.ndarray, truth: str, unknown: bool) -> TrackOutcome:
    closest, sim, lead = decide(gallery, emb)
    return TrackOutcome(truth, unknown, closest, sim, lead, len(emb))


def reviewed_outcomes(store: Store, whitening: float | None = None) -> ReviewedSet:
    owners, sources, vectors = _embeddings(store)
    owner, source = np.array(owners, object), np.array(sources, object)

    def without(mask: np.ndarray) -> Gallery:
        keep = ~mask
        return Gallery(list(owner[keep]), vectors[keep] if keep.any() else None, whitening=whitening)

    outcomes: list[TrackOutcome] = []
    confirmed = strangers = 0
    decision_ids = {}
    for track, action, fish in reviewed_tracks(store):
        if action == "ignore" or fish is None:
            continue
        emb = track_embeddings(store, track.uid)
        if not len(emb) or not len(vectors):
            continue
        rid = store.query("SELECT id FROM reviews WHERE track_uid = ? AND undone_ts IS NULL ORDER BY id DESC LIMIT 1",
                          (track.uid,))[0][0]
        decision_ids[f"review:{rid}"] = True
        if action == "confirm":
            outcomes.append(_outcome(without(source == f"review:{rid}"), emb, fish, False))
            confirmed += 1
        else:
            outcomes.append(_outcome(without(owner == fish), emb, fish, True))
            strangers += 1
    genuine = lofo = 0
    for fish in sorted(set(owners)):
        enrolled = (owner == fish) & ~np.isin(source, list(decision_ids))
        if not enrolled.any() or len(set(owners)) < 2:
            continue
        outcomes.append(_outcome(without(owner == fish), vectors[enrolled], fish, True))
        lofo += 1
        fish_sources = sorted(set(source[enrolled]))
        if len(fish_sources) > 1:
            for src in fish_sources:
                held = enrolled & (source == src)
                outcomes.append(_outcome(without(held), vectors[held], fish, False))
                genuine += 1
    return ReviewedSet(outcomes, confirmed, strangers, genuine, lofo)
