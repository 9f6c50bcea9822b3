import json
from collections import Counter

import cv2
import numpy as np

from finprint.runtime.config import TrackingConfig
from finprint.runtime.identity import Gallery
from finprint.runtime.pipeline import Pipeline
from finprint.runtime.store import Store
from finprint.testing import make_toy_detector, make_toy_embedder
from finprint.tune.score import (
    ChainFrame,
    LabelledVideo,
    MaskCheck,
    detection_report,
    detector_recall,
    length_split,
    main,
    replay_outcomes,
    score_outcomes,
)
from finprint.tune.search import TrackOutcome


def test_length_split_counts_tracks_under_and_over_the_split_by_each_videos_fps():
    at_10_fps = [
        TrackOutcome("fish000", False, "fish000", 0.9, 0.3, 4),  # 0.4 s, named right
        TrackOutcome("fish001", False, "fish001", 0.6, 0.3, 9),  # 0.9 s, below the threshold: called unknown
        TrackOutcome("fish000", False, "fish000", 0.9, 0.3, 10),  # 1.0 s: long, named right
        TrackOutcome("unk000", True, "fish000", 0.9, 0.01, 5),  # short stranger, lead below the margin: flagged
        TrackOutcome("unk001", True, "fish001", 0.9, 0.3, 40),  # long confident stranger: missed
    ]
    at_25_fps = [TrackOutcome("fish001", False, "fish000", 0.9, 0.3, 20)]  # 0.8 s, misnamed
    split = length_split([(10.0, at_10_fps), (25.0, at_25_fps)], threshold=0.7, margin=0.05, seconds=1.0)
    short, long = split.short, split.long
    assert (short.known_tracks, short.known_correct, short.unknown_tracks, short.unknown_flagged) == (3, 1, 1, 1)
    assert (long.known_tracks, long.known_correct, long.unknown_tracks, long.unknown_flagged) == (1, 1, 1, 0)
    assert split.report() == ("by track length: under 1 s known named right 33.3% of 3, strangers flagged 100.0% of 1; "
                              "1 s or longer 100.0% of 1 and 0.0% of 1")
    assert split.to_json()["short"]["known_accuracy"] == 1 / 3 and split.to_json()["long"]["unknown_flag_rate"] == 0.0
    assert "none" in length_split([], 0.7, 0.05).report()


def test_score_outcomes_counts_known_unknown_and_unmatched():
    outcomes = [
        TrackOutcome("fish000", False, "fish000", 0.9, 0.3, 9),  # named right
        TrackOutcome("fish000", False, "fish001", 0.9, 0.3, 6),  # named wrong
        TrackOutcome("unk000", True, "fish000", 0.5, 0.3, 4),  # below the threshold: flagged
        TrackOutcome("unk001", True, "fish000", 0.9, 0.3, 3),  # a confident stranger: missed
    ]
    r = score_outcomes(outcomes, threshold=0.7, margin=0.0, unmatched=1)
    assert (r.known_tracks, r.known_correct, r.unknown_tracks, r.unknown_flagged, r.unmatched_tracks) == (2, 1, 2, 1, 1)
    assert r.known_accuracy == 0.5 and "50.0% (1/2)" in r.report()
    assert score_outcomes(outcomes, threshold=0.7, margin=0.5).unknown_flagged == 2  # no lead big enough: all unknown


def test_score_weights_tracks_by_their_frames_too():
    outcomes = [
        TrackOutcome("fish000", False, "fish000", 0.9, 0.3, 90),  # one long track, named right
        TrackOutcome("fish000", False, "fish001", 0.9, 0.3, 5),  # two short pieces, named wrong
        TrackOutcome("fish000", False, "fish001", 0.9, 0.3, 5),
        TrackOutcome("unk000", True, "fish000", 0.5, 0.3, 30),  # flagged
        TrackOutcome("unk000", True, "fish000", 0.9, 0.3, 10),  # missed
    ]
    r = score_outcomes(outcomes, threshold=0.7, margin=0.0)
    assert (r.known_correct, r.known_tracks) == (1, 3)  # a third of the tracks ...
    assert (r.known_frames_right, r.known_frames, r.unknown_frames_flagged, r.unknown_frames) == (90, 100, 30, 40)
    assert ("weighted by track length: known fish named right in 90.0% of their 100 track-frames, "
            "strangers flagged in 75.0% of 40") in r.report()  # ... but nine in ten of the frames
    assert "strangers flagged in -" in score_outcomes(outcomes[:3], threshold=0.7, margin=0.0).report()


def test_replay_counts_fish_with_no_track_one_or_several():
    # One fish in 12 frames: no box in the first 2, one box in the next 5, then two boxes on it (a fish cut in
    # two halves that each overlap it at IoU 0.5, as a coarse detector does) in the last 5.
    gallery = Gallery(["fishA"], np.eye(3, dtype=np.float32)[:1])
    fish = np.array([0, 0, 40, 20], np.float32)
    frames, truth = [], {}
    for i in range(12):
        boxes = [] if i < 2 else [fish] if i < 7 else [np.array([0, 0, 20, 20], np.float32), np.array([20, 0, 40, 20], np.float32)]
        boxes = np.array(boxes, np.float32).reshape(-1, 4)
        emb = np.tile(np.array([1.0, 0, 0], np.float32), (len(boxes), 1))
        frames.append(ChainFrame(boxes, np.ones(len(boxes), np.float32), emb))
        truth[i] = [{"individual_id": "fishA", "unknown": False, "visible_fraction": 1.0, "box_xyxy": fish.tolist()}]
    video = LabelledVideo("v.mp4", "1", 10.0, 1.0, frames, truth)
    covered: Counter = Counter()
    outcomes, unmatched = replay_outcomes(video, gallery, TrackingConfig(min_hits=1, match_iou=0.1), match_iou=0.5,
                                          covered=covered)
    # Halves overlap the fish at IoU 0.5 exactly: both count as on it.
    assert covered == {0: 2, 1: 5, 2: 5}
    r = score_outcomes(outcomes, threshold=0.5, margin=0.0, unmatched=unmatched, covered=covered)
    assert r.covered == (2, 5, 5)
    assert "no track on them 16.7%, one 41.7%, several at once 41.7% (of 12;" in r.report()
    assert "several at once" not in score_outcomes(outcomes, threshold=0.5, margin=0.0).report()  # not tallied


def test_score_says_which_fish_was_taken_for_which():
    lookalike = [TrackOutcome("unk001", True, "fish004", 0.9, 0.1, 30) for _ in range(3)]
    outcomes = [
        TrackOutcome("fish004", False, "fish007", 0.9, 0.2, 50),  # confused with another enrolled fish
        TrackOutcome("fish004", False, "fish007", 0.9, 0.2, 40),
        TrackOutcome("fish008", False, "fish008", 0.6, 0.2, 20),  # its own fish, but below the threshold
        TrackOutcome("fish001", False, "fish001", 0.9, 0.2, 20),  # right: no mistake
        TrackOutcome("unk002", True, "fish001", 0.5, 0.2, 20),  # flagged: no mistake
        *lookalike,
    ]
    r = score_outcomes(outcomes, threshold=0.7, margin=0.05)
    assert r.mistakes == {"unk001 -> fish004": 3, "fish004 -> fish007": 2, "fish008 -> unknown": 1}
    assert "\nmistakes (truth -> named, tracks): unk001 -> fish004 3, fish004 -> fish007 2, fish008 -> unknown 1\n" in r.report()
    assert r.mistakes_text(most=1) == "unk001 -> fish004 3, 3 more"
    assert "mistakes" not in score_outcomes(outcomes[3:5], threshold=0.7, margin=0.05).report()  # nothing wrong


def test_score_tells_wrong_tracks_that_followed_several_fish_from_wrong_names():
    outcomes = [
        TrackOutcome("fish004", False, "fish007", 0.9, 0.2, 50, purity=0.55),  # went on to fish007: the tracker's fault
        TrackOutcome("unk001", True, "fish004", 0.9, 0.2, 40, purity=0.6),  # a stranger, then fish004
        TrackOutcome("unk001", True, "fish004", 0.9, 0.2, 40),  # all on the stranger: the embedder's fault
        TrackOutcome("fish001", False, "fish001", 0.9, 0.2, 20, purity=0.5),  # mixed but named right: no mistake
        TrackOutcome("fish008", False, "fish008", 0.9, 0.2, 20, purity=0.8),  # at the bound: one fish
    ]
    r = score_outcomes(outcomes, threshold=0.7, margin=0.05)
    assert (r.mistakes.total(), r.mixed_wrong) == (3, 2)
    assert "\nwrongly named tracks that followed more than one fish (under 80% of their frames on one): 2 of 3\n" in r.report()
    assert score_outcomes(outcomes[3:], threshold=0.7, margin=0.05).mixed_wrong == 0


def test_score_a_video_end_to_end(tmp_path, capsys):
    det = make_toy_detector(tmp_path / "det.onnx", fish_xyxy=[[8, 8, 40, 20], [8, 40, 40, 52]], fish_scores=[0.9, 0.9])
    emb = make_toy_embedder(tmp_path / "emb.onnx", open_set_threshold=0.95)
    frames = []
    writer = cv2.VideoWriter(str(tmp_path / "cam0.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for i in range(12):
        img = np.full((64, 64, 3), 30, np.uint8)
        img[8:20, 8:40] = (200, 60, 20)  # known fish
        img[40:52, 8:40] = (20, 200, 60)  # a stranger
        writer.write(img)
        frames.append({"frame": i, "instances": [
            {"individual_id": "fish000", "unknown": False, "box_xyxy": [8, 8, 40, 20], "polygon": [], "length_cm": 3.2},
            {"individual_id": "unk000", "unknown": True, "box_xyxy": [8, 40, 40, 52], "polygon": [], "length_cm": 3.2},
        ]})
    writer.release()
    (tmp_path / "cam0.json").write_text(json.dumps({"fps": 10, "width": 64, "height": 64, "camera": "0",
                                                    "px_per_cm": 10, "frames": frames}))
    pipeline = Pipeline(det, emb, "cpu")
    img = cv2.VideoCapture(str(tmp_path / "cam0.avi")).read()[1]
    store = Store(tmp_path / "g.db")
    store.enroll("fish000", pipeline.embed_crops([img[8:20, 8:40]]))
    store.close()
    code = main(["--video", str(tmp_path / "cam0.avi"), "--gallery", str(tmp_path / "g.db"),
                 "--detector", str(det), "--embedder", str(emb), "--backend", "cpu"])
    out = capsys.readouterr().out
    assert "100.0% (1/1)" in out and "unknown: 100.0% (1/1)" in out
    assert code == 0


def test_detection_report_scores_each_matched_box_by_visibility_and_strangers_by_auroc() -> None:
    a, b, c = np.eye(3, dtype=np.float32)
    gallery = Gallery(["fishA", "fishB"], np.stack([a, b]))
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10], [80, 0, 90, 10]], np.float32)
    # fishA in clear view, named right; fishB half hidden, taken for fishA; a stranger closer to nobody; a
    # box on no fish at all; fishB in clear view, named right.
    embeddings = np.stack([a, 0.9 * a + 0.1 * b, 0.5 * a + 0.5 * c, a, b]).astype(np.float32)
    truth = [
        {"individual_id": "fishA", "unknown": False, "visible_fraction": 1.0, "box_xyxy": [0, 0, 10, 10]},
        {"individual_id": "fishB", "unknown": False, "visible_fraction": 0.5, "box_xyxy": [20, 0, 30, 10]},
        {"individual_id": "str000", "unknown": True, "visible_fraction": 1.0, "box_xyxy": [40, 0, 50, 10]},
        {"individual_id": "fishB", "unknown": False, "visible_fraction": 0.95, "box_xyxy": [80, 0, 90, 10]},
    ]
    video = LabelledVideo("v.mp4", "1", 10.0, 1.0, [ChainFrame(boxes, np.ones(5, np.float32), embeddings)], {0: truth})
    report = detection_report([video], gallery)
    assert (report.known_boxes, report.known_right, report.clear_boxes, report.clear_right) == (3, 2, 2, 2)
    assert report.clear_rank1 == 1.0 and report.hidden_rank1 == 0.0
    assert report.stranger_boxes == 1 and report.auroc == 1.0  # the stranger's 0.71 is below both right names' 1.0
    assert "66.7%" in report.report() and report.to_json()["stranger_auroc"] == 1.0


def test_detector_recall_counts_whole_boxes_by_fish_length_and_boxes_on_no_fish() -> None:
    # Frame 0: a small fish found whole; a 200 px fish cut into three pieces (none overlaps it at IoU 0.5);
    # a partly hidden fish (not counted either way). Frame 1: a 200 px fish found whole. Frame 2: no fish, a box.
    small = {"individual_id": "a", "unknown": False, "visible_fraction": 1.0, "box_xyxy": [0, 0, 60, 20]}
    large = {"individual_id": "b", "unknown": False, "visible_fraction": 0.95, "box_xyxy": [0, 100, 200, 160]}
    hidden = {"individual_id": "c", "unknown": True, "visible_fraction": 0.4, "box_xyxy": [300, 0, 400, 50]}
    frames = [
        np.array([[0, 0, 60, 20], [0, 100, 70, 160], [70, 100, 140, 160], [140, 100, 200, 160]], np.float32),
        np.array([[2, 102, 198, 158]], np.float32),
        np.array([[10, 10, 50, 50]], np.float32),
    ]
    chain = [ChainFrame(b, np.ones(len(b), np.float32), np.zeros((len(b), 3), np.float32)) for b in frames]
    video = LabelledVideo("v.mp4", "1", 10.0, 1.0, chain, {0: [small, large, hidden], 1: [large]})
    found = detector_recall([video])
    assert (found.fish, found.found) == ((1, 0, 2), (1, 0, 1))
    assert found.frames == 3 and found.stray_boxes == 4  # the three pieces and the box on open water
    assert "66.7% of 3 fish" in found.report() and ">=160 px 50.0%" in found.report()
    assert found.to_json()["by_length"][1] == {"band": "90-160 px", "fish": 0, "found": None}


def test_mask_check_names_boxes_with_the_detectors_and_the_true_masks(tmp_path, capsys):
    from finprint.runtime.crops import crop_fish

    # The detector's mask is its whole box; the fish (red) fills only its left quarter, another fish's colour
    # (green) the rest, as when a fish is half hidden behind another one.
    det = make_toy_detector(tmp_path / "det.onnx", fish_xyxy=[[8, 8, 56, 24]], fish_scores=[0.9])
    emb = make_toy_embedder(tmp_path / "emb.onnx", crop_mask=True)
    polygon = [[8, 8], [19, 8], [19, 23], [8, 23]]
    writer = cv2.VideoWriter(str(tmp_path / "cam0.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for _ in range(4):
        img = np.full((64, 64, 3), 30, np.uint8)
        img[8:24, 8:20] = (20, 60, 200)
        img[8:24, 20:56] = (20, 200, 60)
        writer.write(img)
    writer.release()
    frames = [{"frame": i, "instances": [{"individual_id": "fish000", "unknown": False, "box_xyxy": [8, 8, 56, 24],
                                          "polygon": polygon, "length_cm": 4.8}]} for i in range(4)]
    (tmp_path / "cam0.json").write_text(json.dumps({"fps": 10, "width": 64, "height": 64, "camera": "0", "px_per_cm": 10,
                                                    "frames": frames}))
    frame = cv2.VideoCapture(str(tmp_path / "cam0.avi")).read()[1]
    own = np.zeros((64, 64), bool)
    own[8:24, 8:20] = True
    other = np.zeros((64, 64), bool)
    other[8:24, 24:56] = True
    pipeline = Pipeline(det, emb, "cpu")
    store = Store(tmp_path / "g.db")
    store.enroll("fish000", pipeline.embed_crops([crop_fish(frame, np.array([8, 8, 20, 24]), mask=own)]))
    store.enroll("fish001", pipeline.embed_crops([crop_fish(frame, np.array([24, 8, 56, 24]), mask=other)]))
    store.close()
    pipeline.close()
    argv = ["--video", str(tmp_path / "cam0.avi"), "--gallery", str(tmp_path / "g.db"), "--detector", str(det),
            "--embedder", str(emb), "--backend", "cpu", "--mask-check", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(2 boxes of enrolled fish)" in out and "0.0% with the detector's masks, 100.0% with the ground-truth" in out
    assert "axis" not in out  # masked, not aligned: no axis to compare
    # Aligned crops: the detector's mask (the whole 48x16 box) lies along x, the fish's own (12x16) along y.
    aligned = make_toy_embedder(tmp_path / "aligned.onnx", crop_align=True)
    argv[argv.index(str(emb))] = str(aligned)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "off by 90.0 deg at the median and 90.0 at the 90th percentile, the width its crop spans x1.33" in out, out
    plain = make_toy_embedder(tmp_path / "plain.onnx")
    argv[argv.index(str(aligned))] = str(plain)
    assert main(argv) == 2
    assert "plain crops" in capsys.readouterr().err


def test_mask_check_with_no_matched_box_says_so_instead_of_zero_percent():
    assert "no box" in MaskCheck(boxes=0, right_detector_masks=0, right_truth_masks=0).report()
    assert "75.0% with the detector's masks, 100.0% with the ground-truth" in MaskCheck(4, 3, 4).report()


def _crossing_video(a: np.ndarray, b: np.ndarray) -> LabelledVideo:
    """fishA for 10 frames, then fishB right where fishA was heading for 10 more (one box, moving right)."""
    frames, truth = [], {}
    for i in range(20):
        box = np.array([[2.0 * i, 0, 2.0 * i + 40, 20]], np.float32)
        fish = "fishA" if i < 10 else "fishB"
        frames.append(ChainFrame(box, np.ones(1, np.float32), (a if i < 10 else b)[None].astype(np.float32)))
        truth[i] = [{"individual_id": fish, "unknown": False, "visible_fraction": 1.0, "box_xyxy": box[0].tolist()}]
    return LabelledVideo("v.mp4", "1", 10.0, 1.0, frames, truth)


def test_a_tracker_in_the_whitened_space_keeps_a_track_from_jumping_between_lookalike_fish() -> None:
    # Both fish vary a lot along the last axis (pose, water) and differ only along the first: raw cosine
    # 0.83 passes the appearance gate, in the whitened space they are orthogonal and it does not.
    enrolled = np.array([[0.3, 0, 1], [0.3, 0, -1], [-0.3, 0, 1], [-0.3, 0, -1]], np.float32)
    plain = Gallery(["fishA", "fishA", "fishB", "fishB"], enrolled)
    video = _crossing_video(np.array([0.3, 0, 1]), np.array([-0.3, 0, 1]))
    tracking = TrackingConfig(min_hits=1, appearance_gate=0.5, appearance_space="gallery")
    (one,), _ = replay_outcomes(video, plain, tracking)
    assert one.frames == 20  # one track over both fish
    whitened = plain.with_whitening(0.3)
    (one,), _ = replay_outcomes(video, whitened, tracking.model_copy(update={"appearance_space": "embedder"}))
    assert one.frames == 20  # whitened matching, but the tracker compares raw embeddings
    outcomes, _ = replay_outcomes(video, whitened, tracking)
    assert sorted((o.truth, o.frames) for o in outcomes) == [("fishA", 10), ("fishB", 10)]
    assert [o.closest for o in sorted(outcomes, key=lambda o: o.truth)] == ["fishA", "fishB"]


def test_a_track_that_came_to_follow_another_fish_is_split_where_its_votes_changed() -> None:
    # Boxes only: the tracker cannot tell the fish apart, so one track follows fishA and then fishB.
    gallery = Gallery(["fishA", "fishB"], np.eye(3, dtype=np.float32)[:2])
    video = _crossing_video(np.array([1.0, 0, 0]), np.array([0.0, 1, 0]))
    tracking = TrackingConfig(min_hits=1, appearance_gate=None)
    (one,), _ = replay_outcomes(video, gallery, tracking)
    assert one.frames == 20 and one.purity == 0.5  # one name for both fish: ten of its frames are on the wrong one
    outcomes, _ = replay_outcomes(video, gallery, tracking.model_copy(update={"split_window": 5}))
    # Split once 4 of the last 5 frames voted fishB: frame 13 starts the second track.
    assert [(o.truth, o.closest, o.frames) for o in outcomes] == [("fishA", "fishA", 13), ("fishB", "fishB", 7)]
    assert [o.purity for o in outcomes] == [10 / 13, 1.0]
    strict, _ = replay_outcomes(video, gallery, tracking.model_copy(update={"split_window": 5, "split_share": 1.0}))
    assert [o.frames for o in strict] == [14, 6]  # all 5 of the last frames must agree
