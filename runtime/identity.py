"""Who is this fish: gallery matching with open-set rejection, identity along tracks, per-fish records.

A single frame's embedding is noisy (pose, occlusion, turbidity, a fish half out of the frame); a
track is one fish, so the identity is decided over the whole track. Each known fish's similarity
(to the closest of its enrolled embeddings) is gathered over the track's frames and summarised by
the mean of its better half (the frames where the fish is seen well; a fish entering the frame, edge-on
or behind another spends the other half looking like nobody in particular). The fish with the
highest score is the track's identity; a track whose best score stays below the open-set threshold
is an unknown fish, and so is one whose closest fish leads the next by less than the open-set margin
(an ambiguous match: a stranger that resembles two known fish sits between them, where a known fish
is clearly its own). Chosen on the results farm's open-set tuning videos (calib/, not the scored
videos; appearance-gated tracker; best threshold and margin for each rule; score = the smaller of
known-accuracy / 0.95 and unknown-rate / 0.90): the better-half mean 0.82 / 0.83 / 0.82 for the
no-aux INT8 student, the aux-trained student and the aux-trained teacher, the plain mean 0.73 / 0.81 /
0.77, the median 0.78 / 0.79 / 0.77 (a scratch comparison over the tracks of
`finprint.runtime.score.track_outcomes`, not a repo command).

Per track and fish the similarities are kept as a histogram of 0.01-wide bins, so a track's state
stays bounded however long the fish stays in view.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
# The margin used when the gallery has not been tuned (finprint tune-open-set) and the config sets none.
# It was picked on the results-preset farm's scored videos in an earlier version (0.02-0.07 all did as
# well there), so it is a starting point, not a measurement; tuning replaces it.
DEFAULT_OPEN_SET_MARGIN = 0.03


class Gallery:
    """Known individuals' embeddings (several per fish); a query matches its most similar fish."""

    def __init__(self, names: list[str] | None = None, embeddings: np.ndarray | None = None, threshold: float = 0.5) -> None:
        self.threshold = threshold
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
        self._owner = np.fromiter((column[n] for n in self._names), np.int64, len(self._names))

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
        sims = _l2(embeddings) @ self._emb.T
        out = np.full((len(embeddings), len(names)), -1.0, np.float32)
        np.maximum.at(out.T, self._owner, sims.T)  # per individual: the closest of its embeddings
        return names, out

    def match(self, embeddings: np.ndarray) -> list[tuple[str, float]]:
        """(N, D) embeddings -> [(name or UNKNOWN, best cosine similarity)] per row."""
        embeddings = np.asarray(embeddings, np.float32).reshape(len(embeddings), -1)
        if len(embeddings) == 0:
            return []
        if len(self._emb) == 0:
            return [(UNKNOWN, -1.0)] * len(embeddings)
        sims = _l2(embeddings) @ self._emb.T
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
    """The evidence gathered along one track."""

    camera: str
    track_id: int
    first_ts: float
    last_ts: float
    threshold: float  # open set: a mean similarity below it is an unknown fish
    margin: float = 0.0  # open set: a lead over the runner-up below it is an unknown fish
    fish: dict[str, int] = field(default_factory=dict)  # known fish -> its row in `histogram`
    histogram: np.ndarray = field(default_factory=lambda: np.zeros((0, SIMILARITY_BINS), np.int32))
    frames: int = 0
    lengths_cm: list[float] = field(default_factory=list)
    path_cm: float = 0.0  # distance the box centre travelled
    last_centre_px: tuple[float, float] | None = None
    announced_as: str | None = None  # identity last reported in an event
    _scores: dict[str, float] | None = field(default=None, repr=False)  # cache, cleared by add()

    def add(self, names: list[str], sims: np.ndarray) -> None:
        """One frame: this track's similarity to each known fish."""
        for name in names:
            if name not in self.fish:
                self.fish[name] = len(self.fish)
        if len(self.histogram) < len(self.fish):
            grown = np.zeros((len(self.fish), SIMILARITY_BINS), np.int32)
            grown[: len(self.histogram)] = self.histogram
            self.histogram = grown
        rows = np.fromiter((self.fish[n] for n in names), np.int64, len(names))
        self.histogram[rows, _similarity_bin(sims)] += 1
        self.frames += 1
        self._scores = None

    @property
    def scores(self) -> dict[str, float]:
        """Known fish -> the track's similarity to it (mean of the better half of its frames)."""
        if self._scores is None:
            values = better_half_mean(self.histogram) if len(self.fish) else np.zeros(0)
            self._scores = {name: float(values[row]) for name, row in self.fish.items()}
        return self._scores

    @property
    def closest(self) -> str | None:
        scores = self.scores
        return max(scores, key=scores.__getitem__) if scores and self.frames else None

    @property
    def similarity(self) -> float:
        """The track's score for its closest known fish."""
        best = self.closest
        return self.scores[best] if best is not None else 0.0

    @property
    def lead(self) -> float:
        """How far the closest fish's score leads the next one's (inf with one known fish)."""
        if not self.frames or len(self.fish) < 2:
            return float("inf")
        first, second = heapq.nlargest(2, self.scores.values())
        return first - second

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
            "similarity": round(self.similarity, 4),
            "lead": None if self.lead == float("inf") else round(self.lead, 4),
            "frames": self.frames,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "length_cm": None if self.length_cm is None else round(self.length_cm, 2),
            "speed_cm_s": None if self.speed_cm_s is None else round(self.speed_cm_s, 3),
        }


class IdentityResolver:
    """Per camera: feed each frame's tracked detections; get events when a track's identity settles,
    changes, or the track ends. State is bounded by the tracker's live tracks."""

    def __init__(
        self, gallery: Gallery, px_per_cm: dict[str, float], min_frames: int = 3, margin: float = DEFAULT_OPEN_SET_MARGIN
    ) -> None:
        self.gallery = gallery
        self.margin = margin
        self.px_per_cm = px_per_cm
        self.min_frames = min_frames
        self._tracks: dict[tuple[str, int], TrackIdentity] = {}

    def observe(
        self,
        camera: str,
        ts: float,
        track_ids: list[int],
        boxes_xyxy: np.ndarray,
        embeddings: np.ndarray,
        masks: list[np.ndarray | None],
    ) -> list[dict]:
        """One frame's tracked fish (rows aligned) -> events ("identified" / "reidentified")."""
        events: list[dict] = []
        names, sims = self.gallery.similarities(embeddings) if len(track_ids) else ([], None)
        scale = self.px_per_cm.get(camera, 1.0)
        for i, tid in enumerate(track_ids):
            key = (camera, tid)
            rec = self._tracks.get(key)
            if rec is None:
                rec = self._tracks[key] = TrackIdentity(camera, tid, ts, ts, self.gallery.threshold, self.margin)
            rec.add(names, sims[i])  # type: ignore[index]
            rec.last_ts = ts
            box = boxes_xyxy[i]
            centre = (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2)
            if rec.last_centre_px is not None:
                rec.path_cm += float(np.hypot(centre[0] - rec.last_centre_px[0], centre[1] - rec.last_centre_px[1])) / scale
            rec.last_centre_px = centre
            if masks[i] is not None:
                length_px = mask_length_px(masks[i])
                if length_px:
                    rec.lengths_cm.append(length_px / scale)
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
