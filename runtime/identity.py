"""Who is this fish: gallery matching with open-set rejection, identity along tracks, per-fish records.

A single frame's embedding is noisy (pose, occlusion, turbidity, a fish half out of the frame); a
track is one fish most of the time, so the identity is decided over the whole track. Each frame votes
for its closest known fish (by the closest of that fish's enrolled embeddings); the fish with the most
votes is the track's candidate. It is judged on its own frames only: its score is the mean of the
better half of its similarities there (a fish entering the frame, edge-on or behind another spends
the other half looking like nobody in particular), and its lead is the mean of the better half of how
far it led the runner-up in those frames. A score below the open-set threshold is an unknown fish, and
so is a lead below the open-set margin (an ambiguous match: a stranger that resembles two known fish
sits between them, where a known fish is clearly its own).

Votes first: at a crossing a track can leave one fish for the one in front and hold both; judged on its own
frames, the majority fish keeps its lead, and the track is named after the fish it showed most, as the
sighting record and the scorer (docs/CONTRACTS.md) count it. Evidence: experiments/2026-11-27-track-identity.

Per track and fish the votes are counted and the similarities and leads of its frames are kept as
histograms of 0.01-wide bins, so a track's state stays bounded however long the fish stays in view.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from finprint.runtime.tracker import ByteTracker, Track

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
Similarities = tuple[list[str], np.ndarray]  # (individuals, (N, K) similarity of each row to each), Gallery.similarities
# The margin used when the gallery has not been tuned (finprint tune-open-set) and the config sets none: a
# starting point, not a measurement; tuning replaces it (experiments/2026-11-27-track-identity).
DEFAULT_OPEN_SET_MARGIN = 0.03
# Gallery whitening's regularisation (see `within_class_whitening`): the share of the mean within-fish
# variance added to every direction (experiments/2026-11-28-gallery-whitening-and-splitting).
WHITENING_STRENGTH = 0.3


def within_class_whitening(embeddings: np.ndarray, owner: np.ndarray, strength: float) -> np.ndarray | None:
    """(D, D) transform that evens out how much each direction varies within one fish (within-class
    covariance normalisation), fitted on the gallery's own enrolled embeddings.

    The embedder was trained on other fish; among the farm's own, some directions move with pose, water
    and occlusion more than with identity. Dividing them down (x -> (Sw + s * tr(Sw)/D * I)^-1/2 x, then
    unit length) makes the cosine listen to the directions that tell these fish apart. `strength` keeps
    directions the gallery barely varies in from being blown up. None when no fish has two embeddings."""
    x = _l2(np.asarray(embeddings, np.float64))
    dim = x.shape[1]
    scatter, fish = np.zeros((dim, dim)), 0
    for k in np.unique(owner):
        own = x[owner == k]
        if len(own) < 2:
            continue
        centred = own - own.mean(axis=0)
        scatter += centred.T @ centred / len(own)
        fish += 1
    if fish == 0:
        return None
    scatter /= fish
    scatter += strength * np.trace(scatter) / dim * np.eye(dim)
    values, vectors = np.linalg.eigh(scatter)
    return (vectors @ np.diag(values ** -0.5) @ vectors.T).astype(np.float32)


class Gallery:
    """Known individuals' embeddings (several per fish); a query matches its most similar fish.

    `whitening` (a strength, None = off): similarities are measured after `within_class_whitening`
    fitted on these embeddings (refitted when fish are added or removed); `finprint tune-open-set`
    decides whether a gallery uses it."""

    def __init__(
        self, names: list[str] | None = None, embeddings: np.ndarray | None = None, threshold: float = 0.5,
        whitening: float | None = None,
    ) -> None:
        self.threshold = threshold
        self.whitening = whitening
        self._names: list[str] = list(names or [])
        dim = embeddings.shape[1] if embeddings is not None and embeddings.ndim == 2 else 0
        self._emb = _l2(np.asarray(embeddings, np.float32)) if embeddings is not None and len(self._names) else np.zeros((0, dim), np.float32)
        if len(self._names) != len(self._emb):
            raise ValueError(f"{len(self._names)} names for {len(self._emb)} embeddings")
        self._reindex()

    def _reindex(self) -> None:
        """Individuals (sorted) and which one owns each embedding: kept with the gallery, not rebuilt per frame."""
        self._individuals = sorted(set(self._names))
        column = {n: k for k, n in enumerate(self._individuals)}
        owner = np.fromiter((column[n] for n in self._names), np.int64, len(self._names))
        # Each fish's embeddings side by side (in their order): its closest one is then a max over one slice
        # (np.maximum.reduceat), several times faster per frame than scattering into columns.
        order = np.argsort(owner, kind="stable")
        self._emb, self._owner = self._emb[order], owner[order]
        self._names = [self._names[i] for i in order]
        self._starts = np.flatnonzero(np.r_[True, self._owner[1:] != self._owner[:-1]]) if len(order) else order
        self._transform = (
            within_class_whitening(self._emb, self._owner, self.whitening) if self.whitening is not None and len(self._emb) else None
        )
        self._space = self._emb if self._transform is None else _l2(self._emb @ self._transform)

    def with_whitening(self, whitening: float | None) -> Gallery:
        """The same fish and embeddings matched with another whitening (None = plain cosine)."""
        return Gallery(self._names, self._emb, self.threshold, whitening)

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        """Embeddings into the space the gallery is matched in (unit length)."""
        unit = _l2(embeddings)
        return unit if self._transform is None else _l2(unit @ self._transform)

    def __len__(self) -> int:
        return len(self._names)

    @property
    def dim(self) -> int | None:
        """Embedding size of the enrolled vectors (None when empty)."""
        return int(self._emb.shape[1]) if len(self._emb) else None

    def check_embedder(self, embedder_dim: int | None, where: str) -> None:
        """A gallery enrolled with another embedder cannot be matched against: say so before any frame."""
        if self.dim is not None and embedder_dim is not None and self.dim != embedder_dim:
            raise ValueError(f"{where}: the gallery holds {self.dim}-dim embeddings but the embedder gives {embedder_dim}; "
                             "it was enrolled with another embedder: enroll the fish again with this one")

    @property
    def individuals(self) -> list[str]:
        return list(self._individuals)

    def add(self, name: str, embeddings: np.ndarray) -> None:
        emb = _l2(np.asarray(embeddings, np.float32).reshape(-1, embeddings.shape[-1]))
        self._emb = emb if len(self._emb) == 0 else np.concatenate([self._emb, emb])
        self._names += [name] * len(emb)
        self._reindex()

    def remove(self, name: str) -> int:
        keep = [i for i, n in enumerate(self._names) if n != name]
        removed = len(self._names) - len(keep)
        self._emb = self._emb[keep]
        self._names = [self._names[i] for i in keep]
        self._reindex()
        return removed

    def similarities(self, embeddings: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(N, D) embeddings -> (individuals, (N, K) cosine similarity to each one's closest embedding)."""
        embeddings = np.asarray(embeddings, np.float32).reshape(len(embeddings), -1)
        names = self.individuals
        if not names or len(embeddings) == 0:
            return names, np.zeros((len(embeddings), len(names)), np.float32)
        sims = self.project(embeddings) @ self._space.T
        return names, np.maximum.reduceat(sims, self._starts, axis=1)  # per individual: the closest of its embeddings

    def match(self, embeddings: np.ndarray) -> list[tuple[str, float]]:
        """(N, D) embeddings -> [(name or UNKNOWN, best cosine similarity)] per row."""
        embeddings = np.asarray(embeddings, np.float32).reshape(len(embeddings), -1)
        if len(embeddings) == 0:
            return []
        if len(self._emb) == 0:
            return [(UNKNOWN, -1.0)] * len(embeddings)
        sims = self.project(embeddings) @ self._space.T
        best = sims.argmax(axis=1)
        out = []
        for row, j in enumerate(best):
            sim = float(sims[row, j])
            out.append((self._names[j] if sim >= self.threshold else UNKNOWN, sim))
        return out


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def mask_length_px(mask: np.ndarray) -> float | None:
    """A fish's body length in pixels: the long side of the mask's minimum-area rectangle."""
    pts = cv2.findNonZero(mask.astype(np.uint8))
    if pts is None or len(pts) < 3:
        return None
    (_, _), (w, h), _ = cv2.minAreaRect(pts)
    return float(max(w, h))


def decide_identity(closest: str | None, score: float, lead: float, threshold: float, margin: float) -> str:
    """The open-set rule: the closest fish, unless its score is below the threshold or its lead below the margin."""
    if closest is None or score < threshold or lead < margin:
        return UNKNOWN
    return closest


SIMILARITY_BINS = 200  # histogram bins over cosine similarity [-1, 1]: 0.01 wide
_BIN_CENTRES = -1.0 + (np.arange(SIMILARITY_BINS) + 0.5) * (2.0 / SIMILARITY_BINS)


def _similarity_bin(sims: np.ndarray) -> np.ndarray:
    return np.clip(((np.asarray(sims, np.float64) + 1.0) * (SIMILARITY_BINS / 2.0)).astype(np.int64), 0, SIMILARITY_BINS - 1)


def _grow(hist: np.ndarray, rows: int) -> np.ndarray:
    grown = np.zeros((rows, SIMILARITY_BINS), np.int32)
    grown[: len(hist)] = hist
    return grown


def better_half_mean(hist: np.ndarray) -> np.ndarray:
    """(K, BINS) per-fish similarity histograms -> (K,) mean of each fish's upper half of frames."""
    hist = np.atleast_2d(hist).astype(np.float64)
    n = hist.sum(axis=1)
    want = np.ceil(n / 2.0)
    above = np.cumsum(hist[:, ::-1], axis=1)  # frames in this bin or higher, from the top bin down
    taken = np.clip(np.minimum(hist[:, ::-1], want[:, None] - (above - hist[:, ::-1])), 0, None)
    return (taken * _BIN_CENTRES[::-1]).sum(axis=1) / np.maximum(want, 1.0)


@dataclass
class TrackIdentity:
    """The evidence gathered along one track: per known fish, the frames that voted for it."""

    camera: str
    track_id: int
    first_ts: float
    last_ts: float
    threshold: float  # open set: a score below it is an unknown fish
    margin: float = 0.0  # open set: a lead over the runner-up below it is an unknown fish
    fish: dict[str, int] = field(default_factory=dict)  # known fish -> its row in the arrays below
    votes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # frames closest to each fish
    similarity_hist: np.ndarray = field(default_factory=lambda: np.zeros((0, SIMILARITY_BINS), np.int32))
    lead_hist: np.ndarray = field(default_factory=lambda: np.zeros((0, SIMILARITY_BINS), np.int32))
    frames: int = 0
    lengths_cm: list[float] = field(default_factory=list)
    path_cm: float = 0.0  # distance the box centre travelled
    last_centre_px: tuple[float, float] | None = None
    announced_as: str | None = None  # identity last reported in an event
    continues: int | None = None  # the track id this one was split from (a track that came to follow another fish)
    recent: deque = field(default_factory=deque, repr=False)  # closest fish of the last frames (bounded by the resolver)
    _decision: tuple[str | None, float, float] | None = field(default=None, repr=False)  # cache, cleared by add()

    def add(self, names: list[str], sims: np.ndarray) -> None:
        """One frame: this track's similarity to each known fish; the closest one gets the frame's vote."""
        for name in names:
            if name not in self.fish:
                self.fish[name] = len(self.fish)
        if len(self.votes) < len(self.fish):
            k = len(self.fish)
            self.votes = np.concatenate([self.votes, np.zeros(k - len(self.votes), np.int64)])
            self.similarity_hist = _grow(self.similarity_hist, k)
            self.lead_hist = _grow(self.lead_hist, k)
        self.frames += 1
        self._decision = None
        if not names:
            return
        sims = np.asarray(sims, np.float64).reshape(-1)
        best = int(sims.argmax())
        row = self.fish[names[best]]
        if self.recent.maxlen:
            self.recent.append(names[best])
        self.votes[row] += 1
        self.similarity_hist[row, _similarity_bin(sims[best])] += 1
        if len(sims) > 1:
            lead = sims[best] - np.partition(sims, -2)[-2]
            self.lead_hist[row, _similarity_bin(lead)] += 1

    def _decide(self) -> tuple[str | None, float, float]:
        """(closest fish, its score, its lead): the most-voted fish, judged on the frames that voted for it."""
        if self._decision is None:
            if not self.frames or not self.votes.any():
                self._decision = (None, 0.0, float("inf"))
            else:
                # Most votes; a tie goes to the better-scoring fish (only the tied fish are scored).
                tied = np.flatnonzero(self.votes == self.votes.max())
                scores = better_half_mean(self.similarity_hist[tied])
                row = int(tied[np.flatnonzero(scores == scores.max())[-1]])  # as before: the last of equals
                name = next(n for n, r in self.fish.items() if r == row)
                lead = float(better_half_mean(self.lead_hist[row])[0]) if len(self.fish) > 1 else float("inf")
                self._decision = (name, float(scores.max()), lead)
        return self._decision

    @property
    def closest(self) -> str | None:
        return self._decide()[0]

    @property
    def similarity(self) -> float:
        """The track's score for its closest known fish."""
        return self._decide()[1]

    @property
    def lead(self) -> float:
        """How far the closest fish led the runner-up in its frames (inf with one known fish)."""
        return self._decide()[2]

    @property
    def identity(self) -> str:
        return decide_identity(self.closest, self.similarity, self.lead, self.threshold, self.margin)

    @property
    def unknown(self) -> bool:
        return self.identity == UNKNOWN

    @property
    def length_cm(self) -> float | None:
        return float(np.median(self.lengths_cm)) if self.lengths_cm else None

    @property
    def speed_cm_s(self) -> float | None:
        dt = self.last_ts - self.first_ts
        return self.path_cm / dt if dt > 0 else None

    def summary(self) -> dict:
        return {
            "camera": self.camera,
            "track_id": self.track_id,
            "individual_id": None if self.unknown else self.identity,
            "unknown": self.unknown,
            "closest_id": self.closest,  # the best-matching enrolled fish, named or not
            "votes": int(self.votes.max()) if len(self.votes) else 0,  # frames that voted for closest_id
            "similarity": round(self.similarity, 4),
            "lead": None if self.lead == float("inf") else round(self.lead, 4),
            "frames": self.frames,
            "continues": self.continues,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "length_cm": None if self.length_cm is None else round(self.length_cm, 2),
            "speed_cm_s": None if self.speed_cm_s is None else round(self.speed_cm_s, 3),
        }


class IdentityResolver:
    """Per camera: feed each frame's tracked detections; get events when a track's identity settles,
    changes, or the track ends. State is bounded by the tracker's live tracks."""

    def __init__(
        self, gallery: Gallery, px_per_cm: dict[str, float], *, min_frames: int, margin: float, appearance_space: str,
        split_window: int, split_share: float,
    ) -> None:
        """Made by `TrackingConfig.make_resolver` (runtime/config.py), which holds the one set of defaults; `margin`
        is the open-set rule's (runtime/tuned.py)."""
        self.gallery = gallery
        self.appearance_space = appearance_space  # "gallery": the tracker compares looks as the gallery matches
        # Track splitting (0 = off): a track whose last `split_window` frames voted for one other known fish in
        # at least `split_share` of them is ended there and goes on under a new id (see `associate`).
        self.split_window = split_window
        self.split_share = split_share
        self.margin = margin
        self.px_per_cm = px_per_cm
        self.min_frames = min_frames
        self._tracks: dict[tuple[str, int], TrackIdentity] = {}

    def associate(
        self, camera: str, tracker: ByteTracker, boxes_xyxy: np.ndarray, scores: np.ndarray, embeddings: np.ndarray, ts: float,
    ) -> tuple[list[Track], list[dict], Similarities | None]:
        """One frame's detections through a camera's tracker -> (its confirmed tracks, "track_end" events of
        tracks split here, the tracks' similarities to the gallery when splitting measured them, rows aligned
        with the tracks: hand them to `observe`, as `CameraChain.step` does, since matching against the gallery
        costs about as much per frame as the embedder). In the gallery's space (`appearance_space="gallery"`) the whitening that tells the
        farm's fish apart can also keep a track from jumping from one of them to another at a crossing
        (runtime/tracker.py).

        Splitting: at a crossing the tracker can leave one fish for another and follow it for minutes, and the
        track then has no single identity: the first fish's votes name it, and the second fish's sightings are
        lost. When the last `split_window` frames of a track voted for one fish in at least `split_share` of
        them, and that fish is not the one the track is named after, the track is ended before this frame and
        the tracker goes on with it under a new id (the new record's `continues` says which). A tuned choice
        (`finprint tune-open-set`), off by default (experiments/2026-11-28-gallery-whitening-and-splitting)."""
        looks = self.gallery.project(embeddings) if self.appearance_space == "gallery" else embeddings
        tracks = [t for t in tracker.update(boxes_xyxy, scores, looks) if t.confirmed]
        events: list[dict] = []
        measured: Similarities | None = None
        if self.split_window and tracks:
            names, sims = self.gallery.similarities(embeddings[[t.det_index for t in tracks]])
            for row, t in enumerate(tracks):
                rec = self._tracks.get((camera, t.track_id))
                if rec is None or rec.frames < self.split_window or not names:
                    continue
                recent = list(rec.recent)
                window = [*recent[max(0, len(recent) - self.split_window + 1):], names[int(sims[row].argmax())]]
                fish, n = Counter(window).most_common(1)[0]
                if n >= self.split_share * self.split_window and fish != rec.closest:
                    old_id = t.track_id
                    events += self.end(camera, [old_id], ts)
                    tracker.relabel(t)
                    self._record(camera, t.track_id, ts).continues = old_id
            measured = (names, sims)
        return tracks, events, measured

    def _record(self, camera: str, track_id: int, ts: float) -> TrackIdentity:
        key = (camera, track_id)
        rec = self._tracks.get(key)
        if rec is None:
            rec = self._tracks[key] = TrackIdentity(camera, track_id, ts, ts, self.gallery.threshold, self.margin,
                                                    recent=deque(maxlen=self.split_window or 0))
        return rec

    def observe(
        self,
        camera: str,
        ts: float,
        track_ids: list[int],
        boxes_xyxy: np.ndarray,
        embeddings: np.ndarray,
        lengths_px: list[float | None],
        similarities: Similarities | None = None,
    ) -> list[dict]:
        """One frame's tracked fish (rows aligned; `lengths_px`: each fish's length from its mask, see
        `mask_length_px`; `similarities`: as `associate` returns them, else measured here) -> events
        ("identified" / "reidentified")."""
        events: list[dict] = []
        if similarities is not None:
            names, sims = similarities
        else:
            names, sims = self.gallery.similarities(embeddings) if len(track_ids) else ([], None)
        scale = self.px_per_cm.get(camera, 1.0)
        for i, tid in enumerate(track_ids):
            rec = self._record(camera, tid, ts)
            rec.add(names, sims[i])  # type: ignore[index]
            rec.last_ts = ts
            box = boxes_xyxy[i]
            centre = (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2)
            if rec.last_centre_px is not None:
                rec.path_cm += float(np.hypot(centre[0] - rec.last_centre_px[0], centre[1] - rec.last_centre_px[1])) / scale
            rec.last_centre_px = centre
            if lengths_px[i]:
                rec.lengths_cm.append(lengths_px[i] / scale)
            identity = rec.identity
            if rec.frames >= self.min_frames and identity != rec.announced_as:
                kind = "identified" if rec.announced_as is None else "reidentified"
                rec.announced_as = identity
                events.append({"type": kind, "ts": ts, **rec.summary()})
        return events

    def end(self, camera: str, track_ids: list[int], ts: float) -> list[dict]:
        """Tracks the tracker forgot -> "track_end" events with the track's final summary."""
        events = []
        for tid in track_ids:
            rec = self._tracks.pop((camera, tid), None)
            if rec is not None and rec.frames >= self.min_frames:
                events.append({"type": "track_end", "ts": ts, **rec.summary()})
        return events

    def end_all(self, ts: float) -> list[dict]:
        events = []
        for camera, tid in list(self._tracks):
            events += self.end(camera, [tid], ts)
        return events

    def track(self, camera: str, track_id: int) -> TrackIdentity | None:
        return self._tracks.get((camera, track_id))

    def __len__(self) -> int:
        return len(self._tracks)
