"""A ByteTrack-style multi-object tracker: one small numpy class, `update(detections) -> tracks`.

Two association passes (confident detections first, then low-score ones against the tracks left
over), a constant-velocity Kalman filter per track, and bounded state: a lost track is kept for
`max_lost_frames` and then forgotten, never parked in an ever-growing removed list.

Appearance (as BoT-SORT/DeepSORT do, optional): given each detection's embedding, a track keeps a
running mean of its own, and the confident pass refuses a pair whose cosine similarity is below
`appearance_gate` and prefers, among overlapping candidates, the one that looks like the track. Fish
cross each other far more than pedestrians: with boxes alone a track that follows one fish into a
crossing often leaves it following the other, and a track that shows two fish has no single identity. A
purer track is what a sighting record needs, so the gate is on by default (experiments/2026-11-27-track-identity).

The tracker compares whatever vectors it is given. `IdentityResolver.associate` gives it the embedder's, or
with `tracking.appearance_space: gallery` the gallery's whitened ones (runtime/identity.py), where two of
the farm's fish that look alike in the raw space can look apart; `finprint tune-open-set` chooses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment


def iou_matrix(tlbr_a: np.ndarray, tlbr_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of boxes in (x1, y1, x2, y2)."""
    if len(tlbr_a) == 0 or len(tlbr_b) == 0:
        return np.zeros((len(tlbr_a), len(tlbr_b)), np.float32)
    a = tlbr_a[:, None, :]
    b = tlbr_b[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return (inter / np.maximum(area_a + area_b - inter, 1e-9)).astype(np.float32)


def _tlbr_to_cxcywh(tlbr: np.ndarray) -> np.ndarray:
    return np.array([(tlbr[0] + tlbr[2]) / 2, (tlbr[1] + tlbr[3]) / 2, tlbr[2] - tlbr[0], tlbr[3] - tlbr[1]], np.float64)


def _cxcywh_to_tlbr(cxcywh: np.ndarray) -> np.ndarray:
    cx, cy, w, h = cxcywh[:4]
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)


class _KalmanCV:
    """Constant-velocity Kalman filter on (cx, cy, w, h) with noise scaled by box size (as ByteTrack)."""

    _F = np.eye(8)
    _F[:4, 4:] = np.eye(4)
    _H = np.eye(4, 8)

    def __init__(self, cxcywh: np.ndarray) -> None:
        self.x = np.concatenate([cxcywh, np.zeros(4)])
        s = max(cxcywh[2], cxcywh[3], 1.0)
        self.P = np.diag(np.array([0.1, 0.1, 0.1, 0.1, 1.0, 1.0, 1.0, 1.0]) * s) ** 2

    def predict(self) -> None:
        s = max(self.x[2], self.x[3], 1.0)
        q = np.diag(np.array([0.05, 0.05, 0.05, 0.05, 0.00625, 0.00625, 0.00625, 0.00625]) * s) ** 2
        self.x = self._F @ self.x
        self.x[2:4] = np.maximum(self.x[2:4], 1.0)
        self.P = self._F @ self.P @ self._F.T + q

    def update(self, cxcywh: np.ndarray) -> None:
        s = max(cxcywh[2], cxcywh[3], 1.0)
        r = np.diag(np.array([0.05, 0.05, 0.05, 0.05]) * s) ** 2
        y = cxcywh - self._H @ self.x
        S = self._H @ self.P @ self._H.T + r
        K = self.P @ self._H.T @ np.linalg.inv(S)
        self.x = self.x + K @ y
        self.P = (np.eye(8) - K @ self._H) @ self.P


@dataclass
class Track:
    track_id: int
    tlbr: np.ndarray  # (4,) float32, current box in pixels
    score: float
    hits: int = 1  # frames with a matched detection
    age: int = 1  # frames since the track began
    frames_lost: int = 0  # consecutive frames without a detection
    det_index: int = -1  # index into this frame's detections, -1 when not matched this frame
    confirmed: bool = False
    appearance: np.ndarray | None = field(default=None, repr=False)  # running mean of unit embeddings
    _kf: _KalmanCV | None = field(default=None, repr=False)


class ByteTracker:
    """`update(boxes_tlbr, scores) -> list[Track]`: tracks matched (or still coasting) in this frame.

    Made by `TrackingConfig.make_tracker` (runtime/config.py), which holds the one set of defaults."""

    def __init__(
        self,
        *,
        high_score: float,
        low_score: float,
        match_iou: float,
        max_lost_frames: int,
        min_hits: int,
        appearance_gate: float | None,
        appearance_weight: float,
        appearance_momentum: float,
    ) -> None:
        self.appearance_gate = appearance_gate
        self.appearance_weight = appearance_weight
        self.appearance_momentum = appearance_momentum
        self.high_score = high_score
        self.low_score = low_score
        self.match_iou = match_iou
        self.max_lost_frames = max_lost_frames
        self.min_hits = min_hits
        self._tracks: list[Track] = []
        self._next_id = 1
        self.ended: list[Track] = []  # tracks forgotten in the last update; replaced each call

    @property
    def live_tracks(self) -> list[Track]:
        return list(self._tracks)

    def _associate(
        self, tracks: list[Track], dets_tlbr: np.ndarray, min_iou: float, dets_emb: np.ndarray | None = None
    ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        if not tracks or len(dets_tlbr) == 0:
            return [], list(range(len(tracks))), list(range(len(dets_tlbr)))
        ious = iou_matrix(np.stack([t.tlbr for t in tracks]), dets_tlbr)
        allowed = ious >= min_iou
        gain = ious.astype(np.float64)
        if dets_emb is not None and self.appearance_gate is not None:
            known = np.array([t.appearance is not None for t in tracks])
            if known.any():
                track_emb = np.stack([t.appearance if t.appearance is not None else np.zeros(dets_emb.shape[1], np.float32) for t in tracks])
                sim = track_emb @ dets_emb.T  # 0 for a track with no appearance yet
                allowed &= ~known[:, None] | (sim >= self.appearance_gate)
                gain += self.appearance_weight * sim
        rows, cols = linear_sum_assignment(np.where(allowed, -gain, 1e6))
        pairs = [(r, c) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]
        matched_t = {r for r, _ in pairs}
        matched_d = {c for _, c in pairs}
        return (
            pairs,
            [i for i in range(len(tracks)) if i not in matched_t],
            [j for j in range(len(dets_tlbr)) if j not in matched_d],
        )

    def _apply(self, track: Track, tlbr: np.ndarray, score: float, det_index: int, emb: np.ndarray | None = None) -> None:
        assert track._kf is not None
        if emb is not None:
            m = self.appearance_momentum
            mixed = emb if track.appearance is None else m * track.appearance + (1 - m) * emb
            track.appearance = mixed / max(float(np.linalg.norm(mixed)), 1e-12)
        track._kf.update(_tlbr_to_cxcywh(tlbr))
        track.tlbr = _cxcywh_to_tlbr(track._kf.x)
        track.score = score
        track.hits += 1
        track.frames_lost = 0
        track.det_index = det_index
        if track.hits >= self.min_hits:
            track.confirmed = True

    def update(self, boxes_tlbr: np.ndarray, scores: np.ndarray, embeddings: np.ndarray | None = None) -> list[Track]:
        """One frame's detections (and, for appearance association, their embeddings, rows aligned)."""
        boxes_tlbr = np.asarray(boxes_tlbr, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        emb = None
        if embeddings is not None and self.appearance_gate is not None and len(boxes_tlbr):
            emb = np.asarray(embeddings, np.float32).reshape(len(boxes_tlbr), -1)
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        for t in self._tracks:
            assert t._kf is not None
            t._kf.predict()
            t.tlbr = _cxcywh_to_tlbr(t._kf.x)
            t.age += 1
            t.det_index = -1

        high = np.flatnonzero(scores >= self.high_score)
        low = np.flatnonzero((scores >= self.low_score) & (scores < self.high_score))

        # Pass 1: every track against confident detections.
        pairs, rest_t, rest_d = self._associate(self._tracks, boxes_tlbr[high], self.match_iou, None if emb is None else emb[high])
        for ti, di in pairs:
            self._apply(self._tracks[ti], boxes_tlbr[high[di]], float(scores[high[di]]), int(high[di]), None if emb is None else emb[high[di]])
        unmatched_high = [int(high[d]) for d in rest_d]

        # Pass 2: tracks still unmatched against low-score detections (occluded fish score low).
        leftover = [self._tracks[i] for i in rest_t]
        pairs2, rest_t2, _ = self._associate(leftover, boxes_tlbr[low], 0.5)
        for ti, di in pairs2:
            self._apply(leftover[ti], boxes_tlbr[low[di]], float(scores[low[di]]), int(low[di]))
        for i in rest_t2:
            leftover[i].frames_lost += 1

        # New tracks from confident detections nobody claimed.
        for di in unmatched_high:
            kf = _KalmanCV(_tlbr_to_cxcywh(boxes_tlbr[di]))
            track = Track(self._next_id, boxes_tlbr[di].copy(), float(scores[di]), det_index=di,
                          appearance=None if emb is None else emb[di].copy(), _kf=kf)
            track.confirmed = self.min_hits <= 1
            self._next_id += 1
            self._tracks.append(track)

        self.ended = [t for t in self._tracks if t.frames_lost > self.max_lost_frames]
        self._tracks = [t for t in self._tracks if t.frames_lost <= self.max_lost_frames]
        return [t for t in self._tracks if t.det_index >= 0]

    def relabel(self, track: Track) -> int:
        """Give a live track a new id from here on (its box, motion and looks go on): the identity resolver
        ends a track this way when it has come to follow another fish (runtime/identity.py)."""
        track.track_id = self._next_id
        self._next_id += 1
        return track.track_id
