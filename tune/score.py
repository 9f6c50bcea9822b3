"""Score what the daemon's recognition finds on a farm video against its ground truth JSON.

Runs the daemon's own per-camera chain offline (pipeline -> `CameraChain`: tracker, identity voting) over
`videos/<name>.mp4`, matches each track to the ground-truth fish it overlaps most
(docs/CONTRACTS.md section 1), and reports:
  * known-track identity accuracy: tracks of known fish whose voted identity is the right fish
  * unknown tracks flagged: tracks of unknown fish (unk...) that ended as "unknown"
Acceptance in the demo: >= 95 % and >= 90 %.

    python -m finprint.tune.score --video FARM/videos/cam0.mp4 --gallery gallery.db \
        --detector det.int8.onnx --embedder emb.int8.onnx
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from finprint.errors import FinprintError
from finprint.runtime.chain import CameraChain, ChainFrame
from finprint.runtime.config import TrackingConfig
from finprint.runtime.identity import UNKNOWN, Gallery
from finprint.runtime.tracker import iou_matrix
from finprint.runtime.tuned import OpenSetRule
from finprint.tune.search import TrackOutcome

if TYPE_CHECKING:
    from collections.abc import Iterator

    from finprint.runtime.pipeline import Pipeline
    from finprint.runtime.tracker import Track

log = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    known_tracks: int
    known_correct: int
    unknown_tracks: int
    unknown_flagged: int
    unmatched_tracks: int  # tracks that overlap no ground-truth fish (false detections)
    # Tracks named wrong, as "truth -> name" (name = unknown for a known fish rejected): which fish the
    # embedder takes for which, and which stranger passes as whom, tell a lookalike pair from a general weakness.
    mistakes: Counter = field(default_factory=Counter)
    # Wrongly named tracks that followed more than one fish (purity under MIXED_PURITY): those are the tracker's
    # to fix, the rest the embedder's or the open-set rule's.
    mixed_wrong: int = 0
    # The same rates with each track weighted by its frames. Counted per track, a fish cut into several tracks
    # (pieces of a large fish, or two boxes on one) counts once per piece; per frame it counts once per frame.
    known_frames: int = 0
    known_frames_right: int = 0
    unknown_frames: int = 0
    unknown_frames_flagged: int = 0
    # Ground-truth fish instances by how many tracks were on them at once: none, one, several.
    covered: tuple[int, int, int] = (0, 0, 0)

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
            + (f"\nmistakes (truth -> named, tracks): {self.mistakes_text()}" if self.mistakes else "")
            + (f"\n{mixed_sentence(self.mixed_wrong, self.mistakes.total())}" if self.mistakes else "")
            + "".join(f"\n{line}" for line in self.fragmentation_lines())
        )

    def fragmentation_lines(self) -> list[str]:
        """The rates weighted by track length and the fish under no/one/several tracks, where counted."""
        return [
            *([frames_sentence(self.known_frames_right, self.known_frames, self.unknown_frames_flagged, self.unknown_frames)]
              if self.known_frames or self.unknown_frames else []),
            *([covered_sentence(self.covered)] if sum(self.covered) else []),
        ]

    def mistakes_text(self, most: int = 8) -> str:
        top = self.mistakes.most_common(most)
        rest = self.mistakes.total() - sum(n for _, n in top)
        return ", ".join(f"{pair} {n}" for pair, n in top) + (f", {rest} more" if rest else "")


# A track with less than this share of its frames on one ground-truth fish followed several fish.
MIXED_PURITY = 0.8


def mixed_sentence(mixed_wrong: int, wrong: int) -> str:
    """The report line that says how many wrongly named tracks the tracker is to blame for."""
    return (f"wrongly named tracks that followed more than one fish (under {100 * MIXED_PURITY:.0f}% of their frames "
            f"on one): {mixed_wrong} of {wrong}")


def frames_sentence(known_right: int, known: int, unknown_flagged: int, unknown: int) -> str:
    """The report line with the rates weighted by track length."""
    def rate(part: int, whole: int) -> str:
        return f"{100 * part / whole:.1f}%" if whole else "-"

    return (f"weighted by track length: known fish named right in {rate(known_right, known)} of their {known} track-frames, "
            f"strangers flagged in {rate(unknown_flagged, unknown)} of {unknown}")


def covered_sentence(covered: tuple[int, int, int]) -> str:
    """The report line that says how often a fish had no track, one, or several at once (each piece a track)."""
    total = max(sum(covered), 1)
    none, one, several = (100 * n / total for n in covered)
    return (f"fish instances with no track on them {none:.1f}%, one {one:.1f}%, several at once {several:.1f}% "
            f"(of {sum(covered)}; several = a fish cut into pieces or followed twice, each piece scored as a track)")


def score_outcomes(outcomes: list[TrackOutcome], threshold: float, margin: float, unmatched: int = 0,
                   covered: Counter | None = None) -> ScoreResult:
    """The tracks' outcomes at an open-set rule -> ScoreResult (`covered`: replay_outcomes' tally, if kept)."""
    # What each track should be called: its own fish, or unknown for a stranger.
    named = [(o, o.predicted(threshold, margin), UNKNOWN if o.truth_unknown else o.truth) for o in outcomes]
    right = Counter(o.truth_unknown for o, name, should in named if name == should)
    frames, frames_right = Counter(), Counter()
    for o, name, should in named:
        frames[o.truth_unknown] += o.frames
        frames_right[o.truth_unknown] += o.frames if name == should else 0
    strangers = sum(o.truth_unknown for o in outcomes)
    wrong = [(o, name) for o, name, should in named if name != should]
    return ScoreResult(
        len(outcomes) - strangers, right[False], strangers, right[True], unmatched,
        Counter(f"{o.truth} -> {name}" for o, name in wrong), sum(o.purity < MIXED_PURITY for o, _ in wrong),
        frames[False], frames_right[False], frames[True], frames_right[True],
        tuple((covered or Counter())[k] for k in range(3)),
    )


@dataclass(frozen=True)
class LabelledVideo:
    """A labelled video's chain outputs, once: tuning replays trackers and identity rules over them."""

    name: str
    camera: str
    fps: float
    px_per_cm: float
    frames: list[ChainFrame]
    truth: dict[int, list[dict]]  # frame index -> ground-truth instances


# A ground-truth fish at least this visible counts as in clear view in the per-detection report.
CLEAR_VIEW = 0.9


@dataclass(frozen=True)
class DetectionReport:
    """The embedder alone, per detector box matched to a ground-truth fish (no tracker, no voting): how often
    the closest enrolled fish is the right one, for fish in clear view and partly hidden ones, and how well
    the closest similarity tells a stranger's box from a rightly named known fish's (AUROC). When tracks do
    worse than this, the tracker or the rule loses accuracy; when they do no better, the embedder sets it."""

    known_boxes: int
    known_right: int
    clear_boxes: int
    clear_right: int
    stranger_boxes: int
    auroc: float

    @property
    def rank1(self) -> float:
        return self.known_right / self.known_boxes if self.known_boxes else float("nan")

    @property
    def clear_rank1(self) -> float:
        return self.clear_right / self.clear_boxes if self.clear_boxes else float("nan")

    @property
    def hidden_rank1(self) -> float:
        hidden = self.known_boxes - self.clear_boxes
        return (self.known_right - self.clear_right) / hidden if hidden else float("nan")

    def to_json(self) -> dict:
        return {"known_boxes": self.known_boxes, "rank1": self.rank1, "clear_view_boxes": self.clear_boxes,
                "clear_view_rank1": self.clear_rank1, "partly_hidden_rank1": self.hidden_rank1,
                "stranger_boxes": self.stranger_boxes, "stranger_auroc": self.auroc}

    def report(self) -> str:
        return (f"per detection ({self.known_boxes} boxes of enrolled fish, {self.stranger_boxes} of strangers): closest "
                f"enrolled fish right {100 * self.rank1:.1f}% (in clear view {100 * self.clear_rank1:.1f}%, partly hidden "
                f"{100 * self.hidden_rank1:.1f}%); stranger vs named-right AUROC {self.auroc:.3f}")


def _frames_against_truth(videos: list[LabelledVideo]) -> Iterator[tuple[ChainFrame, list[dict], np.ndarray]]:
    """Every frame of the chains with its ground-truth fish and the IoU of each box (rows) with each fish."""
    for video in videos:
        for index, frame in enumerate(video.frames):
            truth = video.truth.get(index, [])
            boxes = frame.boxes_xyxy
            if len(boxes) and truth:
                overlap = iou_matrix(boxes, np.array([t["box_xyxy"] for t in truth], np.float32))
            else:
                overlap = np.zeros((len(boxes), len(truth)), np.float32)
            yield frame, truth, overlap


def detection_report(videos: list[LabelledVideo], gallery: Gallery, match_iou: float = 0.5) -> DetectionReport:
    """Per-box identity quality of the chain's embeddings against the gallery (see DetectionReport)."""
    from scipy.stats import mannwhitneyu

    known = right = clear = clear_right = 0
    right_sims: list[float] = []
    stranger_sims: list[float] = []
    for frame, truth, overlap in _frames_against_truth(videos):
        if not overlap.size:
            continue
        names, sims = gallery.similarities(frame.embeddings)
        for row in range(len(frame.boxes_xyxy)):
            fish = int(overlap[row].argmax())
            if overlap[row, fish] < match_iou or not names:
                continue
            best = int(sims[row].argmax())
            inst = truth[fish]
            if inst["unknown"]:
                stranger_sims.append(float(sims[row, best]))
                continue
            ok = names[best] == inst["individual_id"]
            in_clear = inst.get("visible_fraction", 1.0) >= CLEAR_VIEW
            known += 1
            right += ok
            clear += in_clear
            clear_right += ok and in_clear
            if ok:
                right_sims.append(float(sims[row, best]))
    auroc = float("nan")
    if right_sims and stranger_sims:
        auroc = float(mannwhitneyu(right_sims, stranger_sims).statistic) / (len(right_sims) * len(stranger_sims))
    return DetectionReport(known, right, clear, clear_right, len(stranger_sims), auroc)


LENGTH_BANDS_PX = (90, 160)  # long side of a fish's box: small / middle / large on the farm's cameras


@dataclass(frozen=True)
class DetectorRecall:
    """The detector alone on labelled video (no tracker): how often a fish in clear view is found as one box
    (IoU >= 0.5 with its ground truth), by its length in pixels, and how many boxes per frame match no fish.
    A detector that cuts a large fish into pieces shows here as a low rate for large fish and many stray boxes;
    each piece becomes a track of its own."""

    frames: int
    stray_boxes: int
    fish: tuple[int, ...]  # fish in clear view per length band (LENGTH_BANDS_PX)
    found: tuple[int, ...]

    @property
    def recall(self) -> float:
        return sum(self.found) / sum(self.fish) if sum(self.fish) else float("nan")

    @property
    def stray_per_frame(self) -> float:
        return self.stray_boxes / self.frames if self.frames else float("nan")

    def _bands(self) -> list[str]:
        edges = LENGTH_BANDS_PX
        return [f"<{edges[0]} px", *(f"{a}-{b} px" for a, b in zip(edges, edges[1:], strict=False)), f">={edges[-1]} px"]

    def to_json(self) -> dict:
        return {"frames": self.frames, "stray_boxes_per_frame": self.stray_per_frame, "clear_view_fish": sum(self.fish),
                "clear_view_found": self.recall,
                "by_length": [{"band": band, "fish": n, "found": f / n if n else None}
                              for band, n, f in zip(self._bands(), self.fish, self.found, strict=True)]}

    def report(self) -> str:
        bands = ", ".join(f"{band} {100 * f / n:.1f}%" for band, n, f in zip(self._bands(), self.fish, self.found, strict=True) if n)
        return (f"detector alone: {100 * self.recall:.1f}% of {sum(self.fish)} fish in clear view found as one box "
                f"(IoU >= 0.5; {bands}); {self.stray_per_frame:.2f} boxes per frame match no fish")


def detector_recall(videos: list[LabelledVideo], match_iou: float = 0.5) -> DetectorRecall:
    """See DetectorRecall; the boxes are the chain's (the daemon's score threshold and NMS)."""
    bands = len(LENGTH_BANDS_PX) + 1
    fish, found = [0] * bands, [0] * bands
    frames = stray = 0
    for _, truth, overlap in _frames_against_truth(videos):
        frames += 1
        stray += int((overlap.max(axis=1, initial=0.0) < match_iou).sum())
        for col, inst in enumerate(truth):
            if inst.get("visible_fraction", 1.0) < CLEAR_VIEW:
                continue
            x0, y0, x1, y1 = inst["box_xyxy"]
            band = int(np.searchsorted(LENGTH_BANDS_PX, max(x1 - x0, y1 - y0), side="right"))
            fish[band] += 1
            found[band] += float(overlap[:, col].max(initial=0.0)) >= match_iou
    return DetectorRecall(frames, stray, tuple(fish), tuple(found))


@dataclass(frozen=True)
class LengthSplit:
    """The tracks at one setting, split by how long each was followed: fragments under `seconds` (a fish
    seen briefly at a crossing or the frame's edge) carry few frames of evidence (experiments/2026-11-28-min-hits);
    when short tracks do much worse than long ones, the tracker's continuity through crossings limits identity,
    not the open-set rule."""

    seconds: float
    short: ScoreResult
    long: ScoreResult

    def to_json(self) -> dict:
        def side(r: ScoreResult) -> dict:
            return {"known_tracks": r.known_tracks, "known_accuracy": r.known_accuracy,
                    "unknown_tracks": r.unknown_tracks, "unknown_flag_rate": r.unknown_flag_rate}

        return {"seconds": self.seconds, "short": side(self.short), "long": side(self.long)}

    def report(self) -> str:
        def part(right: int, n: int) -> str:
            return f"{100 * right / n:.1f}% of {n}" if n else "none"

        s, lg = self.short, self.long
        return (f"by track length: under {self.seconds:g} s known named right {part(s.known_correct, s.known_tracks)}, "
                f"strangers flagged {part(s.unknown_flagged, s.unknown_tracks)}; {self.seconds:g} s or longer "
                f"{part(lg.known_correct, lg.known_tracks)} and {part(lg.unknown_flagged, lg.unknown_tracks)}")


def length_split(per_video: list[tuple[float, list[TrackOutcome]]], threshold: float, margin: float,
                 seconds: float = 1.0) -> LengthSplit:
    """(fps, that video's track outcomes) pairs -> LengthSplit at the open-set rule (threshold, margin)."""
    short = [o for fps, outcomes in per_video for o in outcomes if o.frames < seconds * fps]
    long = [o for fps, outcomes in per_video for o in outcomes if o.frames >= seconds * fps]
    return LengthSplit(seconds, score_outcomes(short, threshold, margin), score_outcomes(long, threshold, margin))


@dataclass(frozen=True)
class MaskCheck:
    """An embedder trained on masked or aligned crops, box by box: the closest enrolled fish with each box cut by
    the detector's mask, and cut by the ground-truth mask instead. The gap is what better masks would buy."""

    boxes: int
    right_detector_masks: int
    right_truth_masks: int
    # Aligned crops (preprocess.crop_align): per box, the angle between the fish's axis read from the detector's
    # mask and from the ground truth's (degrees), and the ratio of the widths the two crops span.
    axis_errors_deg: tuple[float, ...] = ()
    width_ratios: tuple[float, ...] = ()

    def report(self) -> str:
        if self.boxes == 0:
            return ("crops cut by masks, box by box: no box of the detector matched an enrolled fish in the frames checked "
                    "(nothing to compare; is the detector trained?)")
        n = self.boxes
        line = (f"crops cut by masks, box by box ({self.boxes} boxes of enrolled fish): closest enrolled fish right "
                f"{100 * self.right_detector_masks / n:.1f}% with the detector's masks, "
                f"{100 * self.right_truth_masks / n:.1f}% with the ground-truth masks")
        if self.axis_errors_deg:
            angle = np.percentile(self.axis_errors_deg, [50, 90])
            width = np.percentile(self.width_ratios, [50, 90])
            line += (f"; the axis read from the detector's masks is off by {angle[0]:.1f} deg at the median and "
                     f"{angle[1]:.1f} at the 90th percentile, the width its crop spans x{width[0]:.2f} and x{width[1]:.2f} "
                     f"({len(self.axis_errors_deg)} boxes with both axes)")
        return line


def mask_check(video: Path, truth_json: Path, pipeline: Pipeline, gallery: Gallery, every: int = 1,
               match_iou: float = 0.5) -> MaskCheck:
    """Every `every`-th frame of a labelled video: each box on an enrolled fish (IoU >= match_iou) embedded
    with the detector's mask and with the fish's ground-truth polygon."""
    import cv2

    from finprint.runtime.crops import crop_fish, expand_box, fish_axis, polygon_mask

    masked, aligned = pipeline.emb_pre.crop_mask, pipeline.emb_pre.crop_align
    if not (masked or aligned):
        raise FinprintError("the embedder reads plain crops (its manifest's preprocess.crop_mask and crop_align are off); "
                            "the mask check is for an embedder trained on masked or aligned crops")
    truth = {f["frame"]: f["instances"] for f in json.loads(Path(truth_json).read_text())["frames"]}
    counts = [0, 0, 0]
    angles: list[float] = []
    widths: list[float] = []
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise FinprintError(f"{video}: cannot open video")
    try:
        index = -1
        while True:
            ok, image = cap.read()
            index += 1
            if not ok:
                break
            known = [inst for inst in truth.get(index, []) if not inst["unknown"] and len(inst.get("polygon") or []) >= 3]
            if index % every or not known:
                continue
            det = pipeline.process([image])[0].detections
            if not len(det) or det.masks is None:
                continue
            ious = iou_matrix(det.boxes_xyxy, np.array([inst["box_xyxy"] for inst in known], np.float32))
            for k, box in enumerate(det.boxes_xyxy):
                j = int(ious[k].argmax())
                if ious[k, j] < match_iou:
                    continue
                truth_mask = polygon_mask([known[j]["polygon"]], image.shape)
                names, sims = gallery.similarities(pipeline.embed_crops(
                    [crop_fish(image, box, mask=m if masked else None, align=m if aligned else None) for m in (det.masks[k], truth_mask)]))
                if aligned:
                    bounds = expand_box(box, image.shape[1], image.shape[0])
                    got, true = fish_axis(det.masks[k], bounds), fish_axis(truth_mask, bounds)
                    if got is not None and true is not None:
                        cos = min(1.0, abs(float(got.direction @ true.direction)))
                        angles.append(float(np.degrees(np.arccos(cos))))
                        widths.append(got.width / true.width)
                right = [names[int(s.argmax())] == str(known[j]["individual_id"]) for s in sims]
                counts[0] += 1
                counts[1] += right[0]
                counts[2] += right[1]
    finally:
        cap.release()
    return MaskCheck(*counts, tuple(angles), tuple(widths))


def run_chain(video: Path, truth_json: Path, pipeline: Pipeline) -> LabelledVideo:
    """Detector and embedder over every frame of a labelled video (the expensive part, done once)."""
    truth = json.loads(Path(truth_json).read_text())
    frames = [ChainFrame.from_detections(res.detections, res.embeddings) for res in pipeline.process_video(video)]
    return LabelledVideo(Path(video).name, str(truth.get("camera", "cam")), float(truth.get("fps", 25.0)),
                         float(truth.get("px_per_cm", 1.0)), frames, {f["frame"]: f["instances"] for f in truth["frames"]})


def replay(
    video: LabelledVideo, gallery: Gallery, tracking: TrackingConfig | None = None, margin: float = 0.0,
) -> Iterator[tuple[int, list[Track], list[dict]]]:
    """The daemon's `CameraChain` over a video's recorded model outputs: (frame index, its tracks, its events) per
    frame, then (number of frames, [], the events of the tracks still open at the end). `margin`: the open-set
    margin the events' names are decided with (tuning judges the recorded scores at every margin later)."""
    chain = CameraChain(video.camera, tracking or TrackingConfig(), gallery, margin, px_per_cm=video.px_per_cm)
    for index, frame in enumerate(video.frames):
        yield index, *chain.step(frame, index / video.fps)
    yield len(video.frames), [], chain.close(len(video.frames) / video.fps)


def truth_votes(frame: ChainFrame, tracks: list[Track], instances: list[dict], match_iou: float = 0.5,
                with_index: bool = False) -> list[tuple]:
    """The ground-truth fish each tracked box of a frame lies on: (track id, fish id, is a stranger) per box whose
    best IoU with a fish reaches `match_iou` (with_index: and the fish's row in `instances`)."""
    if not tracks or not instances:
        return []
    ious = iou_matrix(frame.boxes_xyxy[[t.det_index for t in tracks]],
                      np.array([inst["box_xyxy"] for inst in instances], np.float32))
    votes = []
    for row, t in enumerate(tracks):
        j = int(ious[row].argmax())
        if ious[row, j] >= match_iou:
            vote = (t.track_id, str(instances[j]["individual_id"]), bool(instances[j]["unknown"]))
            votes.append((*vote, j) if with_index else vote)
    return votes


def replay_outcomes(
    video: LabelledVideo, gallery: Gallery, tracking: TrackingConfig | None = None, match_iou: float = 0.5,
    covered: Counter | None = None,
) -> tuple[list[TrackOutcome], int]:
    """`replay` against the video's ground truth -> (one outcome per track that overlaps a ground-truth fish,
    the number of tracks that overlap none). `covered`, if given, counts each ground-truth fish instance under
    how many reported tracks were on it (0, 1, 2 = two or more)."""
    gt_votes: dict[int, Counter] = defaultdict(Counter)
    gt_unknown: dict[str, bool] = {}
    ended: dict[int, dict] = {}
    for index, tracks, events in replay(video, gallery, tracking):
        ended.update((ev["track_id"], ev) for ev in events if ev["type"] == "track_end")
        if index == len(video.frames):
            break
        instances = video.truth.get(index, [])
        on_fish = np.zeros(len(instances), int)
        for track_id, gid, unknown, j in truth_votes(video.frames[index], tracks, instances, match_iou, with_index=True):
            gt_votes[track_id][gid] += 1
            gt_unknown[gid] = unknown
            on_fish[j] += 1
        if covered is not None:
            covered.update(np.minimum(on_fish, 2).tolist())
    outcomes, unmatched = [], 0
    for track_id, ev in sorted(ended.items()):
        votes = gt_votes.get(track_id)
        if not votes:
            unmatched += 1
            continue
        truth_id, on_truth = votes.most_common(1)[0]
        lead = float("inf") if ev["lead"] is None else float(ev["lead"])
        outcomes.append(TrackOutcome(truth_id, gt_unknown[truth_id], ev["closest_id"], float(ev["similarity"]), lead,
                                     ev["frames"], on_truth / votes.total()))
    return outcomes, unmatched


def track_outcomes(
    video: Path,
    truth_json: Path,
    pipeline: Pipeline,
    gallery: Gallery,
    tracking: TrackingConfig | None = None,
    match_iou: float = 0.5,
    covered: Counter | None = None,
) -> tuple[list[TrackOutcome], int]:
    """Run the daemon's per-camera chain over a labelled video -> (one outcome per track that overlaps a
    ground-truth fish, the number of tracks that overlap none); `covered` as in replay_outcomes."""
    return replay_outcomes(run_chain(video, truth_json, pipeline), gallery, tracking, match_iou, covered)


def open_pipeline_and_gallery(
    gallery_db: Path, detector: Path, embedder: Path, backend: str = "auto",
    threshold: float | None = None, margin: float | None = None, tracking: TrackingConfig | None = None,
) -> tuple[Pipeline, Gallery, OpenSetRule, TrackingConfig]:
    """The daemon's models, its gallery, and the open-set rule and tracker settings it would use (config
    values = the arguments; a TrackingConfig's explicitly set fields count as config)."""
    from finprint.runtime.pipeline import Pipeline

    if not Path(gallery_db).is_file():
        raise FinprintError(f"{gallery_db}: no such gallery")
    pipeline = Pipeline(detector, embedder, backend, max_batch=1)
    try:
        return pipeline, *gallery_rule_tracking(gallery_db, detector, embedder, pipeline, tracking, threshold, margin)
    except BaseException:
        pipeline.close()
        raise


def gallery_rule_tracking(gallery_db: Path, detector: Path, embedder: Path, pipeline: Pipeline,
                          tracking: TrackingConfig | None = None, threshold: float | None = None,
                          margin: float | None = None) -> tuple[Gallery, OpenSetRule, TrackingConfig]:
    """A gallery database as the daemon opens it beside these models: its gallery, open-set rule and tracker."""
    from finprint.runtime.store import Store
    from finprint.runtime.tuned import open_gallery, resolve_tracking

    if not Path(gallery_db).is_file():
        raise FinprintError(f"{gallery_db}: no such gallery")
    store = Store(gallery_db)
    try:
        gallery, rule = open_gallery(store, embedder, pipeline.open_set_threshold, pipeline.embedding_dim, threshold, margin)
        resolved, source = resolve_tracking(tracking or TrackingConfig(), store.tracking(), detector, embedder)
    finally:
        store.close()
    log.info("tracker: %s", source)
    return gallery, rule, resolved


def score_recorded(videos: list[LabelledVideo], gallery: Gallery, tracking: TrackingConfig, threshold: float,
                   margin: float, match_iou: float = 0.5) -> ScoreResult:
    """Several recorded videos (`run_chain`) replayed through the chain and scored as one: the models run once,
    however many galleries or rules are compared on them."""
    covered: Counter = Counter()
    outcomes: list[TrackOutcome] = []
    unmatched = 0
    for video in videos:
        found, missed = replay_outcomes(video, gallery, tracking, match_iou, covered)
        outcomes += found
        unmatched += missed
    return score_outcomes(outcomes, threshold, margin, unmatched, covered)


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
    threshold: float | None = None,
) -> ScoreResult:
    pipeline, gallery, rule, resolved = open_pipeline_and_gallery(gallery_db, detector, embedder, backend, threshold, margin,
                                                                  tracking)
    try:
        covered: Counter = Counter()
        outcomes, unmatched = track_outcomes(video, truth_json, pipeline, gallery, resolved, match_iou, covered)
    finally:
        pipeline.close()
    log.info("open set: %s", rule.source)
    return score_outcomes(outcomes, rule.threshold, rule.margin, unmatched, covered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finprint.tune.score", description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True, type=Path)
    parser.add_argument("--truth", type=Path, help="ground truth JSON (default: the video's .json)")
    parser.add_argument("--gallery", required=True, type=Path)
    parser.add_argument("--detector", required=True, type=Path)
    parser.add_argument("--embedder", required=True, type=Path)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threshold", type=float, default=None,
                        help="open-set threshold (default: the gallery's tuned one, else the embedder manifest's)")
    parser.add_argument("--margin", type=float, default=None,
                        help="open-set margin (default: the gallery's tuned one, else the daemon's default)")
    parser.add_argument("--min-known", type=float, default=0.95)
    parser.add_argument("--min-unknown", type=float, default=0.90)
    parser.add_argument("--mask-check", type=int, default=0, metavar="EVERY",
                        help="for an embedder trained on masked crops: instead of scoring, name each box on an enrolled "
                             "fish in every EVERY-th frame cut with the detector's mask and with the ground-truth mask")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.mask_check:
        try:
            pipeline, gallery, _, _ = open_pipeline_and_gallery(args.gallery, args.detector, args.embedder, args.backend)
            try:
                check = mask_check(args.video, args.truth or args.video.with_suffix(".json"), pipeline, gallery, args.mask_check)
            finally:
                pipeline.close()
        except FinprintError as exc:
            print(f"finprint: error: {exc}", file=sys.stderr)
            return 2
        print(check.report())
        return 0
    try:
        result = score_video(args.video, args.truth or args.video.with_suffix(".json"), args.gallery,
                             args.detector, args.embedder, args.backend, margin=args.margin,
                             threshold=args.threshold)
    except FinprintError as exc:
        print(f"finprint: error: {exc}", file=sys.stderr)
        return 2
    print(result.report())
    ok = result.known_accuracy >= args.min_known and (result.unknown_tracks == 0 or result.unknown_flag_rate >= args.min_unknown)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
