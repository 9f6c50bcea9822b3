"""How sure a track's match must be before it names a fish: tuned on labelled farm video, kept with the gallery.

The embedder's manifest carries an open-set threshold measured on still re-ID crops. Tracks on the farm's
cameras score differently: a fish entering the frame, seen edge-on or through turbid water, cut out by the
detector's box rather than a hand-drawn one (experiments/2026-11-27-track-identity). So the threshold and the margin (how far the closest fish must lead the runner-up) are tuned on
videos of the farm's own pens with known ground truth: the tagged fish plus a few strangers (fish
from elsewhere, never enrolled), as `finprint data synth --tuning-videos` writes them. They are stored
in the gallery database with the embedder they were tuned for; the daemon and the scorer use them
unless the config sets `models.open_set_threshold` / `models.open_set_margin` (runtime/tuned.py).

Tuning picks, over a grid of thresholds and margins, the pair that best meets both targets (the
smaller of known-accuracy / its target and unknown-flag-rate / its target, each capped at 1); among
equally good pairs, the one nearest the middle of them, so that the choice does not sit on the edge
of what these few tracks happened to allow.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from finprint.runtime.identity import UNKNOWN, Gallery, decide_identity

if TYPE_CHECKING:
    from finprint.runtime.config import TrackingConfig
    from finprint.tune.score import LabelledVideo

THRESHOLDS = np.round(np.arange(0.0, 1.0, 0.01), 2)
MARGINS = np.round(np.arange(0.0, 0.31, 0.01), 2)
# Tracker settings tried by `finprint tune-open-set` (each replayed over the same detector and embedder
# outputs, so the sweep costs one pass of the models). The confident-detection score depends on how the
# detector's scores are calibrated (experiments/2026-11-27-track-identity).
HIGH_SCORES = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
APPEARANCE_GATES: tuple[float | None, ...] = (None, 0.0, 0.1, 0.2, 0.3)
# Track splitting windows (frames) that `finprint tune-open-set` tries besides none (IdentityResolver.associate).
SPLIT_WINDOWS = (10, 15, 20)
# `tracking.min_hits` tried besides the default 3 (a track is reported once seen in 2 * min_hits - 1 frames): with
# a detector that keeps one track per fish, the wrongly named tracks are short ones of fish seen in part
# (experiments/2026-11-28-min-hits).
MIN_HITS = (5, 10, 15, 20)


# The floor under any tuning: below this many tracks of enrolled fish, or of strangers, the tuned values would
# follow a handful of tracks (issue 32: `finprint demo` tuned min_hits to 10 on 2 known tracks and 1 stranger's,
# and 86 % of the scored fish then went untracked), so nothing is tuned and the gallery keeps its settings.
MIN_KNOWN_TRACKS = 10
MIN_STRANGER_TRACKS = 5


def below_floor(known: int, strangers: int, floor: tuple[int, int] = (MIN_KNOWN_TRACKS, MIN_STRANGER_TRACKS)) -> str | None:
    """Why `known` and `strangers` tracks are too few to tune on, or None when they are enough."""
    if known >= floor[0] and strangers >= floor[1]:
        return None
    return (f"{known} tracks of enrolled fish and {strangers} of strangers, under the floor of {floor[0]} and {floor[1]}; "
            "nothing tuned, the gallery keeps its settings (the defaults unless tuned before)")


@dataclass(frozen=True)
class TrackOutcome:
    """One track of a labelled video: who it really was, and what the identity rule saw."""

    truth: str  # the ground-truth fish the track's boxes overlapped most
    truth_unknown: bool  # that fish is not enrolled (a stranger)
    closest: str | None  # enrolled fish with the best score
    similarity: float  # the track's score for it
    lead: float  # over the runner-up (inf with one enrolled fish)
    frames: int
    # Of the track's frames on a ground-truth fish, the share on `truth`: under MIXED_PURITY the tracker went on
    # from one fish to another, and the track has no single right name.
    purity: float = 1.0

    def predicted(self, threshold: float, margin: float) -> str:
        return decide_identity(self.closest, self.similarity, self.lead, threshold, margin)


@dataclass(frozen=True)
class Tuned:
    threshold: float
    margin: float
    known_accuracy: float
    unknown_flag_rate: float
    known_tracks: int
    unknown_tracks: int


def _arrays(outcomes: list[TrackOutcome]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    right = np.array([o.closest is not None and o.closest == o.truth for o in outcomes], bool)
    named = np.array([o.closest is not None for o in outcomes], bool)
    sim = np.array([o.similarity for o in outcomes], np.float64)
    lead = np.array([o.lead for o in outcomes], np.float64)
    return right, named, sim, lead


def rates(outcomes: list[TrackOutcome], threshold: float, margin: float) -> tuple[float, float]:
    """(known tracks named right, unknown tracks flagged unknown) as fractions (nan when there are none)."""
    known = [o for o in outcomes if not o.truth_unknown]
    unknown = [o for o in outcomes if o.truth_unknown]
    k = sum(o.predicted(threshold, margin) == o.truth for o in known) / len(known) if known else float("nan")
    u = sum(o.predicted(threshold, margin) == UNKNOWN for o in unknown) / len(unknown) if unknown else float("nan")
    return k, u


def _rate_grids(outcomes: list[TrackOutcome]) -> tuple[np.ndarray, np.ndarray]:
    """rates() over the whole THRESHOLDS x MARGINS grid at once (decide_identity's rule, vectorised)."""
    known = [o for o in outcomes if not o.truth_unknown]
    unknown = [o for o in outcomes if o.truth_unknown]
    t = THRESHOLDS[:, None, None]
    m = MARGINS[None, :, None]
    right, named, sim, lead = _arrays(known)
    k = (right & (sim >= t) & (lead >= m)).mean(axis=2)
    _, named, sim, lead = _arrays(unknown)
    u = (~(named & (sim >= t) & (lead >= m))).mean(axis=2)
    return k, u


def tune(outcomes: list[TrackOutcome], min_known: float = 0.95, min_unknown: float = 0.90) -> Tuned:
    """The threshold and margin that best meet both targets on these tracks (see the module docstring)."""
    known = [o for o in outcomes if not o.truth_unknown]
    unknown = [o for o in outcomes if o.truth_unknown]
    if not known or not unknown:
        raise ValueError(f"tuning needs tracks of enrolled fish and of strangers; got {len(known)} and {len(unknown)}")
    k_grid, u_grid = _rate_grids(outcomes)
    grid = np.minimum(np.minimum(k_grid / min_known, u_grid / min_unknown), 1.0)
    best = np.argwhere(grid >= grid.max() - 1e-9)
    centre = np.median(best, axis=0)
    i, j = best[np.argmin(((best - centre) ** 2).sum(axis=1))]
    t, m = float(THRESHOLDS[i]), float(MARGINS[j])
    k, u = rates(outcomes, t, m)
    return Tuned(t, m, k, u, len(known), len(unknown))


def goodness(tuned: Tuned, min_known: float = 0.95, min_unknown: float = 0.90) -> float:
    """How well a tuned pair meets both targets: 1.0 when both are met (tune()'s criterion)."""
    return min(tuned.known_accuracy / min_known, tuned.unknown_flag_rate / min_unknown, 1.0)


@dataclass(frozen=True)
class TrackingTrial:
    """One tracker setting replayed over the tuning videos, with the open-set pair tuned for it."""

    high_score: float
    appearance_gate: float | None
    tuned: Tuned
    tracks: int  # tracks that overlapped a ground-truth fish
    value: float  # goodness() of the tuned pair
    uncovered: float = float("nan")  # share of the ground-truth fish instances under no reported track

    def rank_key(self) -> tuple[float, float, int]:
        # Best value; then the larger sum of both rates; then fewer tracks (each decision sees more frames).
        return (-self.value, -(self.tuned.known_accuracy + self.tuned.unknown_flag_rate), self.tracks)


def choose_min_hits(trials: dict[int, TrackingTrial]) -> int:
    """Of trials at several `min_hits`, the fewest frames unless more meet the targets strictly better (a better
    goodness(), or as good with a larger sum of both rates). Fewer tracks alone never wins here, as it does for
    the other tracker settings: waiting longer drops brief sightings, so it must pay for itself in right names."""
    chosen = min(trials)
    for hits in sorted(trials):
        if trials[hits].rank_key()[:2] < trials[chosen].rank_key()[:2]:
            chosen = hits
    return chosen


def replay_trial(
    videos: list[LabelledVideo], gallery: Gallery, tracking: TrackingConfig, min_known: float = 0.95, min_unknown: float = 0.90,
) -> TrackingTrial | None:
    """One tracker setting and gallery replayed over the videos, its open-set pair tuned (None when the
    tracks hold no enrolled fish or no stranger)."""
    from finprint.tune.score import replay_outcomes

    covered: Counter = Counter()
    outcomes = [o for v in videos for o in replay_outcomes(v, gallery, tracking, covered=covered)[0]]
    try:
        tuned = tune(outcomes, min_known, min_unknown)
    except ValueError:
        return None
    return TrackingTrial(tracking.high_score, tracking.appearance_gate, tuned, len(outcomes),
                         goodness(tuned, min_known, min_unknown), covered[0] / max(covered.total(), 1))


def tune_tracking(
    videos: list[LabelledVideo],
    gallery: Gallery,
    base: TrackingConfig,
    high_scores: tuple[float, ...] = HIGH_SCORES,
    gates: tuple[float | None, ...] = APPEARANCE_GATES,
    min_known: float = 0.95,
    min_unknown: float = 0.90,
) -> list[TrackingTrial]:
    """Every (high_score, appearance_gate) pair replayed over the videos, its open-set pair tuned; best first.
    A pair whose tracks hold no enrolled fish or no stranger is left out."""
    trials = [replay_trial(videos, gallery, base.model_copy(update={"high_score": high, "appearance_gate": gate}),
                           min_known, min_unknown) for high in high_scores for gate in gates]
    return sorted((t for t in trials if t is not None), key=TrackingTrial.rank_key)
