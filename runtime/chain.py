"""One camera's chain after the models: a frame's detections and embeddings in, its tracks and events out.

The daemon, the scorer (`python -m finprint.tune.score`, `finprint tune-open-set`) and enrolment from a
video all run this one step, so what tuning measures is what the field runs. It owns the camera's
tracker and identity resolver, both made from one `TrackingConfig` (one set of defaults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from finprint.runtime.identity import mask_length_px

if TYPE_CHECKING:
    from finprint.runtime.config import TrackingConfig
    from finprint.runtime.detect_post import Detections
    from finprint.runtime.identity import Gallery
    from finprint.runtime.tracker import Track


@dataclass(frozen=True)
class ChainFrame:
    """What the detector and embedder gave for one frame, rows aligned: all the chain needs. A fish's length is
    read from its mask here (one number per box), so a recorded video's frames stay small enough to replay."""

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray
    lengths_px: tuple[float | None, ...] | None = None  # per box, its mask's long side (None: no mask)

    @classmethod
    def from_detections(cls, det: Detections, embeddings: np.ndarray) -> ChainFrame:
        lengths = None if det.masks is None else tuple(mask_length_px(m) for m in det.masks)
        return cls(det.boxes_xyxy, det.scores, embeddings, lengths)


class CameraChain:
    """One camera: `step(frame, ts) -> (confirmed tracks of this frame, events)`; `close(ts)` ends every track."""

    def __init__(self, camera: str, tracking: TrackingConfig, gallery: Gallery, margin: float, px_per_cm: float = 1.0) -> None:
        self.camera = camera
        self.tracker = tracking.make_tracker()
        self.resolver = tracking.make_resolver(gallery, {camera: px_per_cm}, margin)

    def step(self, frame: ChainFrame, ts: float) -> tuple[list[Track], list[dict]]:
        """Track the frame's detections, split tracks that came to follow another fish, vote each tracked box's
        identity, and end the tracks the tracker forgot; events in that order."""
        tracks, events, measured = self.resolver.associate(self.camera, self.tracker, frame.boxes_xyxy, frame.scores,
                                                           frame.embeddings, ts)
        idx = [t.det_index for t in tracks]
        lengths = [None] * len(idx) if frame.lengths_px is None else [frame.lengths_px[i] for i in idx]
        events += self.resolver.observe(self.camera, ts, [t.track_id for t in tracks], frame.boxes_xyxy[idx],
                                        frame.embeddings[idx], lengths, measured)
        if self.tracker.ended:
            events += self.resolver.end(self.camera, [t.track_id for t in self.tracker.ended], ts)
        return tracks, events

    def use_gallery(self, gallery: Gallery) -> None:
        """Match against another gallery from the next frame on (a review decision enrolled or removed a fish);
        live tracks keep the votes they have."""
        self.resolver.gallery = gallery

    def close(self, ts: float) -> list[dict]:
        """"track_end" events for every live track (the end of a video, or the daemon stopping)."""
        return self.resolver.end_all(ts)
