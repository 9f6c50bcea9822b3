"""What the daemon keeps of a live track for the review queue: a few embeddings, a few crops, one whole frame.

Samples are thinned as a track grows (every frame, then every 2nd, 4th, ...), so a fish that stays in view for
an hour costs the same memory as one that passed by. When the track ends its crops and frame are written as
JPEGs into the review folder and the track is recorded in the gallery database (runtime/review.py). The frame
is the calibration sample `finprint export-reviewed` hands on to the next model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from finprint.runtime.crops import crop_fish
from finprint.runtime.review import TrackRecord, record_track
from finprint.runtime.store import Store

log = logging.getLogger(__name__)

MAX_LIVE = 2048  # tracks sampled at once, all cameras: a bound, far above what a pen shows


@dataclass
class _Samples:
    embeddings: list[np.ndarray] = field(default_factory=list)
    crops: list[bytes] = field(default_factory=list)
    frame: bytes | None = None
    seen: int = 0
    stride: int = 1


class TrackSamples:
    """Per (camera, track id): `observe` each tracked box, `finish` with the track's "track_end" event."""

    def __init__(self, folder: Path, session: str, max_embeddings: int = 16, max_crops: int = 4,
                 embedder: str | None = None) -> None:
        self.folder = folder
        self.session = session
        self.max_embeddings = max_embeddings
        self.max_crops = max_crops
        self.embedder = embedder
        self._live: dict[tuple[str, int], _Samples] = {}

    def observe(self, camera: str, track_id: int, embedding: np.ndarray, image: np.ndarray, box: np.ndarray) -> None:
        s = self._live.get((camera, track_id))
        if s is None:
            if len(self._live) >= MAX_LIVE:  # tracks that ended unreported and were never dropped: oldest go
                del self._live[next(iter(self._live))]
            s = self._live[(camera, track_id)] = _Samples()
        s.seen += 1
        if (s.seen - 1) % s.stride:
            return
        s.embeddings.append(np.asarray(embedding, np.float32).copy())
        # The first crops, then one every 4th kept sample (the oldest goes): spread over the track, as its vectors are.
        if len(s.crops) < self.max_crops or len(s.embeddings) % 4 == 0:
            ok, jpg = cv2.imencode(".jpg", crop_fish(image, box), [cv2.IMWRITE_JPEG_QUALITY, 90])
            if ok:
                s.crops = (s.crops + [jpg.tobytes()])[-self.max_crops:]
        if s.frame is None:
            ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            s.frame = jpg.tobytes() if ok else None
        if len(s.embeddings) >= self.max_embeddings:  # thin out: keep every other one, sample half as often
            s.embeddings = s.embeddings[::2]
            s.stride *= 2

    def uid(self, camera: str, track_id: int) -> str:
        return f"{self.session}-{camera}-{track_id}"

    def finish(self, store: Store, event: dict) -> TrackRecord | None:
        """A "track_end" event -> its crops and frame on disk and its record in the database (None: nothing kept)."""
        s = self._live.pop((event["camera"], event["track_id"]), None)
        if s is None or not s.embeddings:
            return None
        uid = self.uid(event["camera"], event["track_id"])
        crops = []
        for k, jpg in enumerate(s.crops):
            name = f"{uid}_{k}.jpg"
            (self.folder / name).write_bytes(jpg)
            crops.append(name)
        frame = None
        if s.frame is not None:
            frame = f"{uid}_frame.jpg"
            (self.folder / frame).write_bytes(s.frame)
        record = TrackRecord(uid, event["camera"], event["track_id"], event["first_ts"], event["last_ts"], event["frames"],
                             event.get("individual_id"), event.get("closest_id"), event.get("similarity"), event.get("lead"),
                             self.embedder, tuple(crops), frame)
        record_track(store, record, np.stack(s.embeddings))
        return record

    def drop(self, camera: str, track_id: int) -> None:
        """A track that ended too short to be reported: forget its samples."""
        self._live.pop((camera, track_id), None)

    def __len__(self) -> int:
        return len(self._live)
