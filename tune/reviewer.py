"""A reviewer who knows the ground truth: measures tuning from reviews on labelled videos (issue 32).

The daemon's chain runs over a labelled video and keeps each ended track for review exactly as the daemon does
(`CameraChain` + `TrackSamples`). The reviewer then works through the review queue as a careful person on the
page would: a track on a known fish is "this is <fish>", a track on a stranger is "new fish" the first time and
"this is <that fish>" after, a track on no fish is "ignore". Tracks the queue never shows (named with a clear
lead) are never judged, as on a farm. Only the judgement comes from the ground truth; what is stored and how
`finprint tune-open-set --from-reviews` uses it is the page's own code.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2

from finprint.errors import FinprintError
from finprint.runtime.chain import CameraChain
from finprint.runtime.config import TrackingConfig
from finprint.runtime.identity import Gallery
from finprint.runtime.review import DEFAULT_REVIEW_LEAD, decide, ensure_schema, queue
from finprint.runtime.store import Store
from finprint.runtime.track_samples import TrackSamples
from finprint.tune.score import LabelledVideo, truth_votes

WHO = "reviewer (ground truth)"


@dataclass
class ReviewTally:
    kept: int = 0  # ended tracks the daemon kept for review
    confirmed: int = 0  # "this is <fish>"
    new: int = 0  # "new fish <id>"
    ignored: int = 0  # on no fish
    not_shown: int = 0  # named with a clear lead: never in the queue

    def sentence(self) -> str:
        return (f"{self.kept} tracks kept, {self.kept - self.not_shown} shown in the review queue: {self.confirmed} "
                f"confirmed as a fish, {self.new} new fish, {self.ignored} ignored (on no fish)")


def keep_tracks(path: Path, video: LabelledVideo, gallery: Gallery, tracking: TrackingConfig, margin: float,
                store: Store, samples: TrackSamples, match_iou: float = 0.5) -> dict[str, tuple[str, bool] | None]:
    """The daemon's chain and track keeping over one recorded video; {kept track uid: (true fish, is a stranger)
    or None on no fish}."""
    samples.folder.mkdir(parents=True, exist_ok=True)
    ensure_schema(store)
    chain = CameraChain(video.camera, tracking, gallery, margin, px_per_cm=video.px_per_cm)
    votes: dict[int, Counter] = defaultdict(Counter)
    stranger: dict[str, bool] = {}
    truth: dict[str, tuple[str, bool] | None] = {}

    def finish(events: list[dict]) -> None:
        for ev in events:
            if ev["type"] == "track_end" and samples.finish(store, ev) is not None:
                top = votes[ev["track_id"]].most_common(1)
                truth[samples.uid(video.camera, ev["track_id"])] = (top[0][0], stranger[top[0][0]]) if top else None

    cap = cv2.VideoCapture(str(path))
    try:
        for index, frame in enumerate(video.frames):
            ok, image = cap.read()
            if not ok:
                raise FinprintError(f"{path}: ends at frame {index}, but its recording has {len(video.frames)} frames")
            tracks, events = chain.step(frame, index / video.fps)
            for t in tracks:
                samples.observe(video.camera, t.track_id, frame.embeddings[t.det_index], image, frame.boxes_xyxy[t.det_index])
            for track_id, fish, unknown in truth_votes(frame, tracks, video.truth.get(index, []), match_iou):
                votes[track_id][fish] += 1
                stranger[fish] = unknown
            finish(events)
            for t in chain.tracker.ended:  # ended too short to be reported, as in the daemon
                samples.drop(video.camera, t.track_id)
        finish(chain.close(len(video.frames) / video.fps))
    finally:
        cap.release()
    return truth


def judge_queue(store: Store, truth: dict[str, tuple[str, bool] | None], lead: float = DEFAULT_REVIEW_LEAD) -> ReviewTally:
    """Work through the review queue until it is empty, judging each track by `truth`."""
    ensure_schema(store)
    tally = ReviewTally(kept=len(truth))
    shown = 0
    while batch := queue(store, lead, limit=200):
        for track in batch:
            shown += 1
            fact = truth.get(track.uid)
            if fact is None:
                decide(store, track.uid, "ignore", None, WHO)
                tally.ignored += 1
                continue
            fish, is_stranger = fact
            name = f"new-{fish}" if is_stranger else fish
            if is_stranger and not store.query("SELECT 1 FROM individuals WHERE id = ?", (name,)):
                decide(store, track.uid, "new", name, WHO)
                tally.new += 1
            else:
                decide(store, track.uid, "confirm", name, WHO)
                tally.confirmed += 1
    tally.not_shown = tally.kept - shown
    return tally
