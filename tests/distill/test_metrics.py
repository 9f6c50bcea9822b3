"""Metrics against answers worked out by hand (COCO mAP, Market-1501 re-ID, open-set AUROC/FPR95)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from finprint.data.types import Frame, Instance
from finprint.distill.metrics import (
    PackedMasks,
    coco_metrics,
    cross_camera_applicable,
    mask_crop_quality,
    open_set_metrics,
    reid_metrics,
    threshold_at_tpr,
)
from finprint.runtime.detect_post import Detections

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def _rect_polygon(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def _rasterise(polygon: np.ndarray, h: int, w: int) -> np.ndarray:
    rles = mask_utils.frPyObjects([polygon.reshape(-1).tolist()], h, w)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


# Two frames, two fish each; every fish a 100x50 rectangle.
BOXES = [
    [[10, 10, 110, 60], [120, 100, 220, 150]],
    [[30, 20, 130, 70], [40, 120, 140, 170]],
]
H, W = 200, 300


def _frames(with_polygons: bool = True) -> list[Frame]:
    frames = []
    for i, boxes in enumerate(BOXES):
        instances = [
            Instance(
                box_xyxy=np.array(b, dtype=np.float32),
                polygons=[_rect_polygon(*b)] if with_polygons else None,
            )
            for b in boxes
        ]
        frames.append(Frame(image_path=Path(f"f{i}.jpg"), width=W, height=H, instances=instances, group="g"))
    return frames


def _predictions(shift_x: float = 0.0, with_masks: bool = True) -> list[Detections]:
    preds = []
    for boxes in BOXES:
        shifted = np.array(boxes, dtype=np.float32) + np.array([shift_x, 0, shift_x, 0], dtype=np.float32)
        masks = np.stack([_rasterise(_rect_polygon(*b), H, W) for b in shifted]) if with_masks else None
        preds.append(Detections(shifted, np.array([0.9, 0.8], np.float32), masks))
    return preds


def test_perfect_predictions_score_one():
    m = coco_metrics(_frames(), _predictions())
    assert m["box_map"] == pytest.approx(1.0)
    assert m["box_map50"] == pytest.approx(1.0)
    assert m["mask_map"] == pytest.approx(1.0)
    assert m["mask_map50"] == pytest.approx(1.0)
    assert (m["images"], m["instances"], m["detections"]) == (2, 4, 4)


def test_known_shift_gives_known_map():
    # Shifting a 100x50 box by 24 px along x: IoU = (76*50) / (124*50) = 0.6129.
    # Of COCO's thresholds 0.50..0.95 only 0.50, 0.55, 0.60 pass -> mAP50-95 = 3/10, mAP50 = 1.
    m = coco_metrics(_frames(), _predictions(shift_x=24))
    assert m["box_map"] == pytest.approx(0.3)
    assert m["box_map50"] == pytest.approx(1.0)
    # The masks are the same rectangles rasterised; their IoU is computed from the pixels.
    gt = _rasterise(_rect_polygon(*BOXES[0][0]), H, W)
    shifted = np.array(BOXES[0][0], np.float32) + [24, 0, 24, 0]
    pred = _rasterise(_rect_polygon(*shifted), H, W)
    mask_iou = (gt & pred).sum() / (gt | pred).sum()
    expected = np.sum(COCO_IOU_THRESHOLDS <= mask_iou) / 10
    assert m["mask_map"] == pytest.approx(expected)
    assert m["mask_map50"] == pytest.approx(1.0)


def test_run_length_packed_masks_score_and_read_like_dense_ones():
    dense = _predictions(shift_x=24)
    packed = [Detections(d.boxes_xyxy, d.scores, PackedMasks(d.masks)) for d in dense]
    assert coco_metrics(_frames(), packed) == coco_metrics(_frames(), dense)
    assert mask_crop_quality(_frames(), packed) == mask_crop_quality(_frames(), dense)
    masks = packed[0].masks
    assert masks.shape == dense[0].masks.shape and np.array_equal(masks[1], dense[0].masks[1])
    assert np.array_equal(np.asarray(masks), dense[0].masks)
    assert PackedMasks(np.zeros((0, H, W), bool)).shape == (0, H, W)


def test_confident_false_positive_halves_ap():
    # One fish; a wrong box scored above the right one: precision 0 at rank 1, 1/2 at rank 2
    # (recall 1), so the interpolated precision is 0.5 at every recall level -> AP 0.5.
    frame = Frame(Path("a.jpg"), W, H, [Instance(np.array([10, 10, 110, 60], np.float32))])
    det = Detections(
        np.array([[200, 120, 290, 190], [10, 10, 110, 60]], np.float32), np.array([0.9, 0.5], np.float32), None
    )
    m = coco_metrics([frame], [det])
    assert m["box_map"] == pytest.approx(0.5)
    assert m["box_map50"] == pytest.approx(0.5)


def test_boxes_only_ground_truth_marks_mask_metrics_absent():
    m = coco_metrics(_frames(with_polygons=False), _predictions(with_masks=False))
    assert m["box_map"] == pytest.approx(1.0)
    assert m["mask_map"] is None and m["mask_map50"] is None


def test_predictions_without_masks_leave_mask_metrics_absent():
    m = coco_metrics(_frames(), _predictions(with_masks=False))
    assert m["box_map"] == pytest.approx(1.0)
    assert m["mask_map"] is None


def test_no_predictions_scores_zero_and_no_fish_is_undefined():
    empty = [Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, H, W), bool))] * 2
    m = coco_metrics(_frames(), empty)
    assert m["box_map"] == 0.0 and m["mask_map"] == 0.0
    no_fish = [Frame(Path("e.jpg"), W, H, [])]
    m = coco_metrics(no_fish, empty[:1])
    assert m["box_map"] is None


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="frames"):
        coco_metrics(_frames(), _predictions()[:1])
    bad = _predictions()
    bad[0].masks = bad[0].masks[:, :10, :10]
    with pytest.raises(ValueError, match="masks of shape"):
        coco_metrics(_frames(), bad)


def _unit(angle: float) -> list[float]:
    return [float(np.cos(angle)), float(np.sin(angle))]


# Gallery on the unit circle; a query at angle t ranks the gallery by |t - angle| (cosine similarity).
GALLERY_ANGLES = [0.0, 0.3, 0.6, 1.0, 1.5]
GALLERY_IDS = ["A", "B", "A", "C", "A"]
GALLERY_CAMS = ["1", "2", "2", "1", "3"]


def _gallery() -> np.ndarray:
    return np.array([_unit(a) for a in GALLERY_ANGLES], np.float32)


def test_reid_hand_computed_case():
    # q0: A, cam 1, angle 0. g0 (A, cam 1) is excluded (same identity, same camera). Ranking of the
    #     rest: g1 B, g2 A, g3 C, g4 A -> true matches at ranks 2 and 4: AP = (1/2 + 2/4) / 2 = 0.5.
    # q1: B, cam 1, angle 1.0. Ranking: g3 (0), g2 (.4), g4 (.5), g1 (.7), g0 (1.0) -> B at rank 4:
    #     AP = 1/4; not rank-1, within rank-5.
    # q2: D, cam 1 -> no D in the gallery: skipped.
    # q3: C, cam 2, angle 1.0 -> g3 (C, cam 1) first: AP = 1, rank-1 hit.
    # rank1 = 1/3, rank5 = 3/3, mAP = (0.5 + 0.25 + 1) / 3 = 0.58333.
    queries = np.array([_unit(0.0), _unit(1.0), _unit(0.2), _unit(1.0)], np.float32)
    m = reid_metrics(queries, ["A", "B", "D", "C"], ["1", "1", "1", "2"], _gallery(), GALLERY_IDS, GALLERY_CAMS)
    assert m["rank1"] == pytest.approx(1 / 3)
    assert m["rank5"] == pytest.approx(1.0)
    assert m["map"] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert (m["queries"], m["skipped"]) == (3, 1)


def test_same_camera_exclusion_can_be_switched_off():
    # Without the exclusion q0 matches g0 first: ranks 1, 3, 5 -> AP = (1/1 + 2/3 + 3/5) / 3.
    q = np.array([_unit(0.0)], np.float32)
    m = reid_metrics(q, ["A"], ["1"], _gallery(), GALLERY_IDS, GALLERY_CAMS, cross_camera=False)
    assert m["rank1"] == 1.0
    assert m["map"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # Unknown cameras: nothing is excluded either.
    m = reid_metrics(q, ["A"], None, _gallery(), GALLERY_IDS, None)
    assert m["rank1"] == 1.0
    # The only A in the gallery seen by the same camera: the query has no valid match.
    m = reid_metrics(q, ["A"], ["1"], _gallery()[:2], GALLERY_IDS[:2], GALLERY_CAMS[:2])
    assert m["rank1"] is None and m["skipped"] == 1


def test_a_query_never_matches_itself():
    # One set used as both queries and gallery: A at 0.0, A at 1.0, B at 0.2.
    emb = np.array([_unit(0.0), _unit(1.0), _unit(0.2)], np.float32)
    ids = ["A", "A", "B"]
    m = reid_metrics(emb, ids, None, emb, ids, None)
    # q0: rest ranked B (0.2), A (1.0) -> AP 1/2. q1: B (0.8), A (1.0) -> AP 1/2. q2 (B): no other B.
    assert m["map"] == pytest.approx(0.5)
    assert m["rank1"] == 0.0 and m["skipped"] == 1
    assert reid_metrics(emb, ids, None, emb.copy(), ids, None, same_set=True) == m


def test_open_set_auroc_extremes():
    known, unknown = np.array([0.9, 0.8, 0.95]), np.array([0.1, 0.2])
    assert open_set_metrics(known, unknown)["auroc"] == 1.0
    assert open_set_metrics(unknown, known)["auroc"] == 0.0
    same = np.array([0.3, 0.5, 0.7])
    assert open_set_metrics(same, same)["auroc"] == pytest.approx(0.5)
    assert open_set_metrics(np.full(4, 0.5), np.full(3, 0.5))["auroc"] == pytest.approx(0.5)


def test_fpr95_hand_checked():
    # Knowns 0.05, 0.10, ..., 1.00 (20). Accepting 95 % = 19 of them needs threshold 0.10 (19th highest).
    # Unknowns 0.00, 0.07, 0.12, 0.50: two of four are >= 0.10 -> FPR95 = 0.5.
    known = np.arange(1, 21) / 20
    unknown = np.array([0.0, 0.07, 0.12, 0.5])
    m = open_set_metrics(known, unknown)
    assert m["threshold95"] == pytest.approx(0.10)
    assert m["fpr95"] == pytest.approx(0.5)
    # AUROC by counting (known, unknown) pairs the known wins: 0.00 loses to all 20 knowns, 0.07 to 19
    # (not to 0.05), 0.12 to 18 (0.15..1.00), 0.50 to 10 (0.55..1.00) and ties one (0.50, half a win).
    assert m["auroc"] == pytest.approx((20 + 19 + 18 + 10.5) / 80)


def test_open_set_without_unknowns_is_absent():
    m = open_set_metrics(np.array([0.9, 0.8]), np.array([]))
    assert m["auroc"] is None and m["fpr95"] is None
    assert m["threshold95"] == pytest.approx(0.8)
    assert threshold_at_tpr(np.array([0.1, 0.2, 0.3, 0.4]), 0.5) == pytest.approx(0.3)


def test_cross_camera_applicable():
    assert cross_camera_applicable(["A"], ["2"], ["A", "B"], ["1", "2"])
    assert not cross_camera_applicable(["A"], ["1"], ["A", "B"], ["1", "2"])  # A only on the query's camera
    assert not cross_camera_applicable(["A"], None, ["A"], ["1"])
    assert not cross_camera_applicable(["A"], [""], ["A"], ["1"])


def test_deepfish_boxes_only_perfect_and_jittered(deepfish):
    # Real labels (one habitat): perfect predictions score 1.0, jittered ones less; masks are absent.
    from finprint.data import load_detection

    dataset, _ = load_detection(deepfish)
    frames = [f for f in dataset.frames if f.group == "7398"]
    assert frames
    perfect = [
        Detections(
            np.array([i.box_xyxy for i in f.instances], np.float32).reshape(-1, 4),
            np.full(len(f.instances), 0.9, np.float32),
            None,
        )
        for f in frames
    ]
    m = coco_metrics(frames, perfect)
    assert m["box_map"] == pytest.approx(1.0) and m["mask_map"] is None
    rng = np.random.default_rng(0)
    jittered = []
    for det in perfect:
        size = np.tile(det.boxes_xyxy[:, 2:] - det.boxes_xyxy[:, :2], 2)
        noise = rng.normal(0, 0.1, det.boxes_xyxy.shape).astype(np.float32) * size
        jittered.append(Detections(det.boxes_xyxy + noise, det.scores, None))
    assert 0.1 < coco_metrics(frames, jittered)["box_map"] < 0.9


def test_mask_crop_quality_measures_the_share_of_a_mask_on_the_fish_in_front():
    """Fish A half hidden behind fish B; A's mask covers its whole box (B's part too), B's mask is exact."""
    a_box, b_box, lone_box = [10, 10, 110, 60], [60, 20, 160, 70], [200, 120, 280, 160]
    a_full, b = _rasterise(_rect_polygon(*a_box), H, W), _rasterise(_rect_polygon(*b_box), H, W)
    a_visible = a_full & ~b
    a_polys = [_rect_polygon(10, 10, 60, 60), _rect_polygon(60, 10, 110, 20)]  # left of B, and the strip above it
    assert np.array_equal(np.any([_rasterise(q, H, W) for q in a_polys], axis=0), a_visible)
    lone = _rasterise(_rect_polygon(*lone_box), H, W)
    frame = Frame(image_path=Path("f.jpg"), width=W, height=H, group="g", instances=[
        Instance(box_xyxy=np.array(a_box, np.float32), polygons=a_polys),
        Instance(box_xyxy=np.array(b_box, np.float32), polygons=[_rect_polygon(*b_box)]),
        Instance(box_xyxy=np.array(lone_box, np.float32), polygons=[_rect_polygon(*lone_box)]),
    ])
    boxes = np.array([a_box, b_box, lone_box, lone_box], np.float32)
    # The lone fish's confident detection has an exact mask; a weaker duplicate below the score floor is ignored.
    det = Detections(boxes, np.array([0.9, 0.8, 0.7, 0.2], np.float32), np.stack([a_full, b, lone, np.zeros_like(lone)]))
    m = mask_crop_quality([frame], [det], min_score=0.35)
    a_iou = a_visible.sum() / a_full.sum()
    assert m["mask_iou"] == pytest.approx((a_iou + 1.0 + 1.0) / 3)
    # Only A is crowded: B covers half its box, while none of A's visible pixels lie in B's box.
    assert m["crowded_fish"] == 1
    assert m["mask_leak"] == pytest.approx((a_full & b).sum() / a_full.sum())
    assert mask_crop_quality([frame], [det], min_score=0.95) == {"mask_iou": None, "mask_leak": None, "crowded_fish": 0}
