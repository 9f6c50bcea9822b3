"""Score what the daemon's recognition finds on a farm video against its ground truth JSON.

Runs exactly the daemon's per-camera chain offline (pipeline -> tracker -> identity voting) over
`videos/<name>.mp4`, matches each track to the ground-truth fish it overlaps most
(docs/CONTRACTS.md section 1), and reports:
  * known-track identity accuracy: tracks of known fish whose voted identity is the right fish
  * unknown tracks flagged: tracks of unknown fish (unk...) that ended as "unknown"
Acceptance in the demo: >= 95 % and >= 90 %.

    python -m finprint.runtime.score --video FARM/videos/cam0.mp4 --gallery gallery.db \
        --detector det.int8.onnx --embedder emb.int8.onnx
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from finprint.runtime.config import TrackingConfig
from finprint.runtime.tracker import iou_matrix

from finprint.errors import FinprintError

log = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    known_tracks: int
    known_correct: int
    unknown_tracks: int
    unknown_flagged: int
    unmatched_tracks: int  # tracks that overlap no ground-truth fish (false detections)

    @property
    def known_accuracy(self) -> float:
        return self.known_correct / self.known_tracks if self.known_tracks else float("nan")

    @property
    def unknown_flag_rate(self) -> float:
        return self.unknown_flagged / self.unknown_tracks if self.unknown_tracks else float("nan")

    def report(self) -> str:
        return (
            f"known-track identity accuracy: {100 * self.known_accuracy:.1f}% ({self.known_correct}/{self.known_tracks})\n"
            f"unknown tracks flagged unknown: {100 * self.unknown_flag_rate:.1f}% ({self.unknown_flagged}/{self.unknown_tracks})\n"
            f"tracks matching no ground-truth fish: {self.unmatched_tracks}"
        )


def score_tracks(
    predicted: dict[int, str | None], gt_votes: dict[int, Counter], gt_unknown: dict[str, bool]
) -> ScoreResult:
    """predicted: track -> individual id (None = unknown); gt_votes: track -> Counter of GT ids it overlapped."""
    known = correct = unknown = flagged = unmatched = 0
    for track, pred in predicted.items():
        votes = gt_votes.get(track)
        if not votes:
            unmatched += 1
            continue
        truth = votes.most_common(1)[0][0]
        if gt_unknown[truth]:
            unknown += 1
            flagged += pred is None
        else:
            known += 1
            correct += pred == truth
    return ScoreResult(known, correct, unknown, flagged, unmatched)


def score_video(
    video: Path,
    truth_json: Path,
    gallery_db: Path,
    detector: Path,
    embedder: Path,
    backend: str = "auto",
    tracking: TrackingConfig | None = None,
    match_iou: float = 0.5,
    margin: float | None = None,
) -> ScoreResult:
    import cv2
    from finprint.runtime.identity import DEFAULT_OPEN_SET_MARGIN, IdentityResolver
    from finprint.runtime.pipeline import Pipeline
    from finprint.runtime.store import Store
    from finprint.runtime.tracker import ByteTracker

    truth = json.loads(Path(truth_json).read_text())
    frames_gt = {f["frame"]: f["instances"] for f in truth["frames"]}
    fps = float(truth.get("fps", 25.0))
    camera = str(truth.get("camera", "cam"))
    tr = tracking or TrackingConfig()
    pipeline = Pipeline(detector, embedder, backend, max_batch=1)
    store = Store(gallery_db)
    gallery = store.load_gallery(pipeline.open_set_threshold)
    store.close()
    resolver = IdentityResolver(gallery, {camera: float(truth.get("px_per_cm", 1.0))}, min_frames=tr.min_hits,
                                margin=DEFAULT_OPEN_SET_MARGIN if margin is None else margin)
    tracker = ByteTracker(tr.high_score, tr.low_score, tr.match_iou, tr.max_lost_frames, tr.min_hits)
    gt_votes: dict[int, Counter] = defaultdict(Counter)
    gt_unknown: dict[str, bool] = {}
    predicted: dict[int, str | None] = {}

    def collect(events: list[dict]) -> None:
        for ev in events:
            if ev["type"] == "track_end":
                predicted[ev["track_id"]] = ev["individual_id"]

    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise FinprintError(f"{video}: cannot open video")
    index = 0
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            ts = index / fps
            res = pipeline.process([image])[0]
            det = res.detections
            tracks = [t for t in tracker.update(det.boxes_xyxy, det.scores) if t.confirmed]
            idx = [t.det_index for t in tracks]
            masks = [det.masks[i] if det.masks is not None else None for i in idx]
            collect(resolver.observe(camera, ts, [t.track_id for t in tracks], det.boxes_xyxy[idx], res.embeddings[idx], masks))
            collect(resolver.end(camera, [t.track_id for t in tracker.ended], ts))
            instances = frames_gt.get(index, [])
            if tracks and instances:
                gt_boxes = np.array([inst["box_xyxy"] for inst in instances], np.float32)
                ious = iou_matrix(det.boxes_xyxy[idx], gt_boxes)
                for row, t in enumerate(tracks):
                    j = int(ious[row].argmax())
                    if ious[row, j] >= match_iou:
                        gid = str(instances[j]["individual_id"])
                        gt_votes[t.track_id][gid] += 1
                        gt_unknown[gid] = bool(instances[j]["unknown"])
            index += 1
    finally:
        cap.release()
        pipeline.close()
    collect(resolver.end_all(index / fps))
    return score_tracks(predicted, gt_votes, gt_unknown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finprint.runtime.score", description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True, type=Path)
    parser.add_argument("--truth", type=Path, help="ground truth JSON (default: the video's .json)")
    parser.add_argument("--gallery", required=True, type=Path)
    parser.add_argument("--detector", required=True, type=Path)
    parser.add_argument("--embedder", required=True, type=Path)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--margin", type=float, default=None, help="open-set margin (default: the daemon's default)")
    parser.add_argument("--min-known", type=float, default=0.95)
    parser.add_argument("--min-unknown", type=float, default=0.90)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        result = score_video(args.video, args.truth or args.video.with_suffix(".json"), args.gallery,
                             args.detector, args.embedder, args.backend, margin=args.margin)
    except FinprintError as exc:
        print(f"finprint: error: {exc}", file=sys.stderr)
        return 2
    print(result.report())
    ok = result.known_accuracy >= args.min_known and (result.unknown_tracks == 0 or result.unknown_flag_rate >= args.min_unknown)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
