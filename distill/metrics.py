"""Accuracy metrics, torch-free: COCO mAP for the detector, re-ID and open-set scores for the embedder.

Everything here takes plain numpy arrays and finprint's data types, so the same numbers come out
whether the predictions were made by a torch model, ONNX Runtime or TensorRT.

- `coco_metrics`: box and mask mAP50-95 / mAP50 through pycocotools' COCOeval on in-memory COCO
  dicts (its printing silenced). A dataset without polygons (DeepFish) reports mask metrics as
  None (absent), never 0.
- `reid_metrics`: rank-1, rank-5 and mAP by the Market-1501 protocol.
- `open_set_metrics`: AUROC and FPR at 95 % TPR of "how known" scores (known fish should score high).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from finprint.data.types import Frame

if TYPE_CHECKING:  # the runtime type only; importing it here would pull cv2 for nothing
    from finprint.runtime.detect_post import Detections

log = logging.getLogger(__name__)

FISH_CATEGORY_ID = 1  # COCO category ids start at 1 (CONTRACTS.md section 1: 1 = "fish")


# --------------------------------------------------------------------------------------------
# Detection: COCO mAP
# --------------------------------------------------------------------------------------------


class PackedMasks:
    """One frame's detection masks as COCO run-length encodings, read like the dense (N, H, W) bool array.

    Evaluation keeps every detection down to score 0.001 (100 a frame): dense, 727 DeepFish frames of an untrained
    student's masks took 9 GB and got the results runner killed for memory; an RLE takes a few hundred bytes."""

    def __init__(self, masks: np.ndarray) -> None:
        from pycocotools import mask as mask_utils

        n, self.height, self.width = masks.shape
        self.rles = mask_utils.encode(np.asfortranarray(masks.astype(np.uint8).transpose(1, 2, 0))) if n else []

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.rles), self.height, self.width

    def __len__(self) -> int:
        return len(self.rles)

    def __getitem__(self, k: int) -> np.ndarray:
        from pycocotools import mask as mask_utils

        return mask_utils.decode(self.rles[k]).astype(bool)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        dense = np.stack([self[k] for k in range(len(self))]) if self.rles else np.zeros(self.shape, bool)
        return dense if dtype is None else dense.astype(dtype)


def _polygon_to_coco(polygons: list[np.ndarray]) -> list[list[float]]:
    return [np.asarray(p, dtype=np.float64).reshape(-1).tolist() for p in polygons]


def _box_to_xywh(box_xyxy: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box_xyxy).reshape(4))
    return [x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)]


def _ground_truth_dict(frames: Sequence[Frame], with_masks: bool) -> dict:
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    for image_id, frame in enumerate(frames, start=1):
        images.append({"id": image_id, "width": int(frame.width), "height": int(frame.height)})
        for inst in frame.instances:
            xywh = _box_to_xywh(inst.box_xyxy)
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": FISH_CATEGORY_ID,
                "bbox": xywh,
                "area": xywh[2] * xywh[3],
                "iscrowd": 0,
            }
            if with_masks:
                polys = _polygon_to_coco(inst.polygons or [])
                ann["segmentation"] = polys
                rles = mask_utils.frPyObjects(polys, int(frame.height), int(frame.width))
                ann["area"] = float(mask_utils.area(mask_utils.merge(rles)))
            annotations.append(ann)
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": FISH_CATEGORY_ID, "name": "fish"}],
    }


def _prediction_dict(gt: dict, predictions: Sequence[Detections], with_masks: bool) -> dict:
    from pycocotools import mask as mask_utils

    annotations = []
    for image_id, det in enumerate(predictions, start=1):
        boxes = np.asarray(det.boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(det.scores, dtype=np.float64).reshape(-1)
        rles = []
        if with_masks and len(scores):
            image = gt["images"][image_id - 1]
            if det.masks.shape != (len(scores), image["height"], image["width"]):
                raise ValueError(
                    f"image {image_id}: masks of shape {det.masks.shape}, expected "
                    f"({len(scores)}, {image['height']}, {image['width']}) (one per box, original size)"
                )
            if isinstance(det.masks, PackedMasks):
                rles = det.masks.rles
            else:  # pycocotools wants Fortran-ordered uint8 (H, W, N).
                rles = mask_utils.encode(np.asfortranarray(np.asarray(det.masks, dtype=np.uint8).transpose(1, 2, 0)))
        for k in range(len(scores)):
            xywh = _box_to_xywh(boxes[k])
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": FISH_CATEGORY_ID,
                "bbox": xywh,
                "score": float(scores[k]),
                "area": xywh[2] * xywh[3],
                "iscrowd": 0,
            }
            if with_masks:
                rle = rles[k]
                ann["area"] = float(mask_utils.area(rle))
                ann["segmentation"] = rle
            annotations.append(ann)
    return {"images": gt["images"], "annotations": annotations, "categories": gt["categories"]}


def _coco_from_dict(data: dict):
    from pycocotools.coco import COCO

    # Built directly rather than through COCO.loadRes, which fails on an empty prediction list.
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _summarise(coco_eval) -> tuple[float, float]:
    """(mAP50-95, mAP50) at area 'all', maxDets 100: what COCOeval.summarize prints first."""
    precision = coco_eval.eval["precision"]  # [T IoU thresholds, R recalls, K classes, A areas, M maxDets]
    all_area, max_dets = 0, len(coco_eval.params.maxDets) - 1
    p = precision[:, :, :, all_area, max_dets]
    p50 = precision[0, :, :, all_area, max_dets]
    mean = float(np.mean(p[p > -1])) if np.any(p > -1) else 0.0
    mean50 = float(np.mean(p50[p50 > -1])) if np.any(p50 > -1) else 0.0
    return mean, mean50


def _run_cocoeval(gt: dict, dt: dict, iou_type: str) -> tuple[float, float]:
    from pycocotools.cocoeval import COCOeval

    coco_gt, coco_dt = _coco_from_dict(gt), _coco_from_dict(dt)
    coco_eval = COCOeval(coco_gt, coco_dt, iouType=iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
    return _summarise(coco_eval)


def coco_metrics(
    frames: Sequence[Frame],
    predictions: Sequence[Detections],
    iou_types: Sequence[str] = ("bbox", "segm"),
) -> dict:
    """Box and mask mAP of `predictions` (one Detections per frame, same order) against `frames`.

    Returns box_map (mAP50-95), box_map50, mask_map, mask_map50, images, instances, detections.
    A metric that cannot be measured (no polygons in the ground truth, no masks in the predictions,
    or not asked for) is None. With no ground-truth fish at all every mAP is None: COCO leaves it
    undefined rather than zero.
    """
    if len(frames) != len(predictions):
        raise ValueError(f"{len(frames)} frames but {len(predictions)} predictions")
    unknown_types = set(iou_types) - {"bbox", "segm"}
    if unknown_types:
        raise ValueError(f"unknown iou_types {sorted(unknown_types)}; use 'bbox' and/or 'segm'")

    instances = [inst for f in frames for inst in f.instances]
    gt_has_masks = bool(instances) and all(inst.polygons for inst in instances)
    pred_has_masks = all(det.masks is not None for det in predictions)
    if "segm" in iou_types and instances and not gt_has_masks:
        log.info("not every ground-truth fish has a polygon (boxes only): mask mAP is not measured")
    elif "segm" in iou_types and gt_has_masks and not pred_has_masks:
        log.warning("the predictions carry no masks: mask mAP is not measured")
    with_masks = "segm" in iou_types and gt_has_masks and pred_has_masks

    result: dict = {
        "box_map": None,
        "box_map50": None,
        "mask_map": None,
        "mask_map50": None,
        "images": len(frames),
        "instances": len(instances),
        "detections": int(sum(len(np.asarray(d.scores).reshape(-1)) for d in predictions)),
    }
    if not instances:
        log.warning("no ground-truth fish in %d frames: mAP is undefined", len(frames))
        return result

    gt = _ground_truth_dict(frames, with_masks)
    dt = _prediction_dict(gt, predictions, with_masks)
    if "bbox" in iou_types:
        result["box_map"], result["box_map50"] = _run_cocoeval(gt, dt, "bbox")
    if with_masks:
        result["mask_map"], result["mask_map50"] = _run_cocoeval(gt, dt, "segm")
    return result


# Boxes the daemon tracks with confidence (tune-open-set's high_score on the results farm).
MASK_CROP_MIN_SCORE = 0.35
# A fish is crowded when other fish cover more than this share of its box.
CROWDED_SHARE = 0.05


def _visible_mask(inst, h: int, w: int) -> np.ndarray:
    # Rasterised as the mask mAP rasterises ground truth (pycocotools), not with runtime.crops.polygon_mask,
    # whose cv2 fill takes one more pixel row and column at the edges.
    from pycocotools import mask as mask_utils

    rles = mask_utils.frPyObjects(_polygon_to_coco([p for p in inst.polygons if len(p) >= 3]), h, w)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool) if rles else np.zeros((h, w), bool)


def mask_crop_quality(
    frames: Sequence[Frame], predictions: Sequence[Detections], min_score: float = MASK_CROP_MIN_SCORE
) -> dict:
    """How well the masks cut a fish out for a masked re-ID crop (what mAP does not say).

    Each ground-truth fish with a polygon takes the best-scoring unused detection (score >= `min_score`) whose
    box overlaps its box by IoU >= 0.5. mask_iou: mean IoU of that detection's mask with the fish's visible
    mask; mask_leak: over crowded fish (other fish cover > 5 % of its box), the mean share of the mask that lies
    on other fish (their pixels then vote in the crop); crowded_fish: how many. None where nothing matched.
    """
    from finprint.runtime.detect_post import box_iou_one_to_many

    ious, leaks = [], []
    for frame, det in zip(frames, predictions, strict=True):
        fish = [inst for inst in frame.instances if inst.polygons]
        if not fish or det.masks is None or len(det) == 0:
            continue
        visible = [_visible_mask(inst, frame.height, frame.width) for inst in fish]
        everyone = np.any(visible, axis=0)
        scores = np.asarray(det.scores)
        free = scores >= min_score
        for inst, own in zip(fish, visible, strict=True):
            overlap = box_iou_one_to_many(np.asarray(inst.box_xyxy, np.float32), np.asarray(det.boxes_xyxy, np.float32))
            candidates = np.flatnonzero(free & (overlap >= 0.5))
            if candidates.size == 0 or not own.any():
                continue
            k = candidates[np.argmax(scores[candidates])]
            free[k] = False
            mask = det.masks[k]
            ious.append((mask & own).sum() / max((mask | own).sum(), 1))
            others = everyone & ~own
            x0, y0, x1, y1 = (int(round(v)) for v in inst.box_xyxy)
            box_others = others[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)]
            if box_others.size and box_others.mean() > CROWDED_SHARE:
                leaks.append((mask & others).sum() / max(mask.sum(), 1))
    return {
        "mask_iou": float(np.mean(ious)) if ious else None,
        "mask_leak": float(np.mean(leaks)) if leaks else None,
        "crowded_fish": len(leaks),
    }


# --------------------------------------------------------------------------------------------
# Re-identification: Market-1501 rank-k and mAP
# --------------------------------------------------------------------------------------------


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected embeddings of shape (N, D), got {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _cams_known(cams: Sequence[str] | None, n: int) -> np.ndarray:
    """Per entry: is its camera known? (None, or an empty string, means unknown.)"""
    if cams is None:
        return np.zeros(n, dtype=bool)
    if len(cams) != n:
        raise ValueError(f"{len(cams)} cameras for {n} embeddings")
    return np.array([c is not None and str(c) != "" for c in cams], dtype=bool)


def reid_metrics(
    query_emb: np.ndarray,
    query_ids: Sequence[str],
    query_cams: Sequence[str] | None,
    gallery_emb: np.ndarray,
    gallery_ids: Sequence[str],
    gallery_cams: Sequence[str] | None,
    cross_camera: bool = True,
    same_set: bool = False,
) -> dict:
    """Rank-1, rank-5 and mAP of queries against a gallery by cosine similarity (Market-1501 protocol).

    - A query never matches itself: pass `same_set=True` (or the same array as query and gallery)
      when query i and gallery i are the same sample, and that pair is left out.
    - With `cross_camera` and both cameras known, gallery entries of the query's identity seen by
      the query's camera are left out (they are near-duplicates, not re-identification).
    - A query with no valid true match left in the gallery is skipped and counted in `skipped`.
    AP of one query is the mean of the precision at each true match's rank; mAP averages over queries.
    """
    q = _l2_normalise(query_emb)
    g = _l2_normalise(gallery_emb)
    same_set = same_set or query_emb is gallery_emb
    if len(query_ids) != q.shape[0] or len(gallery_ids) != g.shape[0]:
        raise ValueError("ids and embeddings differ in length")
    if same_set and q.shape[0] != g.shape[0]:
        raise ValueError("same_set needs as many queries as gallery entries")
    q_ids, g_ids = np.asarray(query_ids, dtype=object), np.asarray(gallery_ids, dtype=object)
    q_cam_known, g_cam_known = _cams_known(query_cams, len(q_ids)), _cams_known(gallery_cams, len(g_ids))
    q_cams = np.asarray(query_cams if query_cams is not None else [""] * len(q_ids), dtype=object)
    g_cams = np.asarray(gallery_cams if gallery_cams is not None else [""] * len(g_ids), dtype=object)

    similarity = q @ g.T if g.shape[0] else np.zeros((q.shape[0], 0), np.float32)
    rank1_hits, rank5_hits, aps, skipped = 0, 0, [], 0
    for i in range(q.shape[0]):
        valid = np.ones(g.shape[0], dtype=bool)
        if same_set:
            valid[i] = False
        if cross_camera and q_cam_known[i]:
            valid &= ~((g_ids == q_ids[i]) & g_cam_known & (g_cams == q_cams[i]))
        order = np.argsort(-similarity[i][valid], kind="stable")
        matches = (g_ids[valid] == q_ids[i])[order]
        num_rel = int(matches.sum())
        if num_rel == 0:
            skipped += 1
            continue
        first = int(np.argmax(matches))
        rank1_hits += first < 1
        rank5_hits += first < 5
        hits_so_far = np.cumsum(matches)
        precision_at_hits = hits_so_far[matches] / (np.flatnonzero(matches) + 1)
        aps.append(float(precision_at_hits.sum() / num_rel))

    evaluated = len(aps)
    if skipped:
        log.info("%d of %d queries have no valid match in the gallery and were skipped", skipped, q.shape[0])
    if evaluated == 0:
        return {"rank1": None, "rank5": None, "map": None, "queries": 0, "skipped": skipped}
    return {
        "rank1": rank1_hits / evaluated,
        "rank5": rank5_hits / evaluated,
        "map": float(np.mean(aps)),
        "queries": evaluated,
        "skipped": skipped,
    }


def cross_camera_applicable(
    query_ids: Sequence[str],
    query_cams: Sequence[str] | None,
    gallery_ids: Sequence[str],
    gallery_cams: Sequence[str] | None,
) -> bool:
    """Can the cross-camera protocol score every query? True when cameras are known and each query's
    identity has a gallery entry from another camera (Market-1501 is built that way).

    A farm whose gallery and query crops come from different frames of the same camera is not:
    excluding same-camera matches there would skip every query, so evaluate with cross_camera=False.
    """
    if query_cams is None or gallery_cams is None or not len(query_ids):
        return False
    if not all(query_cams) or not all(gallery_cams):
        return False
    cams_of: dict[str, set[str]] = {}
    for ident, cam in zip(gallery_ids, gallery_cams, strict=True):
        cams_of.setdefault(ident, set()).add(str(cam))
    return all(cams_of.get(ident, set()) - {str(cam)} for ident, cam in zip(query_ids, query_cams, strict=True))


def max_similarity(query_emb: np.ndarray, gallery_emb: np.ndarray) -> np.ndarray:
    """Each query's highest cosine similarity to the gallery: its open-set "how known" score."""
    q, g = _l2_normalise(query_emb), _l2_normalise(gallery_emb)
    if g.shape[0] == 0:
        raise ValueError("an empty gallery gives no similarity scores")
    return (q @ g.T).max(axis=1)


# --------------------------------------------------------------------------------------------
# Open set: known vs unknown individuals
# --------------------------------------------------------------------------------------------


def threshold_at_tpr(known_scores: np.ndarray, tpr: float = 0.95) -> float:
    """The highest threshold t such that at least `tpr` of known scores are >= t (accepted as known)."""
    known = np.sort(np.asarray(known_scores, dtype=np.float64).reshape(-1))[::-1]
    if known.size == 0:
        raise ValueError("no known scores")
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    k = max(1, math.ceil(tpr * known.size - 1e-9))
    return float(known[k - 1])


def open_set_metrics(known_scores: np.ndarray, unknown_scores: np.ndarray, tpr: float = 0.95) -> dict:
    """AUROC and FPR at 95 % TPR, where a score says "how known" a sample is (higher = more known).

    auroc: probability that a random known scores above a random unknown (ties count half).
    fpr95: the share of unknowns accepted (score >= threshold) at the threshold that accepts 95 % of
    knowns; threshold95 is that threshold (what the manifest's open_set_threshold should be).
    With no knowns or no unknowns the metrics are None.
    """
    from scipy.stats import rankdata

    known = np.asarray(known_scores, dtype=np.float64).reshape(-1)
    unknown = np.asarray(unknown_scores, dtype=np.float64).reshape(-1)
    result: dict = {
        "auroc": None,
        "fpr95": None,
        "threshold95": None,
        "known": int(known.size),
        "unknown": int(unknown.size),
    }
    if known.size == 0 or unknown.size == 0:
        log.info("open-set metrics need both known and unknown samples (%d known, %d unknown)", known.size, unknown.size)
        if known.size:
            result["threshold95"] = threshold_at_tpr(known, tpr)
        return result
    # Mann-Whitney U with average ranks for ties = the area under the ROC curve.
    ranks = rankdata(np.concatenate([known, unknown]))
    u = ranks[: known.size].sum() - known.size * (known.size + 1) / 2.0
    threshold = threshold_at_tpr(known, tpr)
    result["auroc"] = float(u / (known.size * unknown.size))
    result["threshold95"] = threshold
    result["fpr95"] = float(np.mean(unknown >= threshold))
    return result
