"""Detector post-processing (torch-free): raw outputs of one image -> fish in original pixels.

The detector's outputs are those of docs/CONTRACTS.md section 3 (before NMS). This module is the
one place that thresholds, runs NMS, assembles prototype masks and undoes the letterbox, so
evaluation, the export gate and the daemon see identical detections.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from finprint.runtime.preprocess import LetterboxInfo

log = logging.getLogger(__name__)


@dataclass
class Detections:
    boxes_xyxy: np.ndarray  # (N, 4) float32, original pixels
    scores: np.ndarray  # (N,) float32
    masks: np.ndarray | None  # (N, H, W) bool at original resolution, or None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty(info: LetterboxInfo, with_masks: bool) -> Detections:
        masks = np.zeros((0, info.orig_h, info.orig_w), bool) if with_masks else None
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), masks)


def box_iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float, max_det: int) -> np.ndarray:
    """Greedy NMS in numpy; returns kept indices, best first (ties broken by index: deterministic)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_det:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        ious = box_iou_one_to_many(boxes_xyxy[i], boxes_xyxy[order[1:]])
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def assemble_masks(
    coefs: np.ndarray, protos: np.ndarray, boxes_orig: np.ndarray, info: LetterboxInfo
) -> np.ndarray:
    """sigmoid(coefs @ protos) -> input size -> strip the letterbox -> original size, cropped to the box."""
    m, ph, pw = protos.shape
    n = coefs.shape[0]
    out = np.zeros((n, info.orig_h, info.orig_w), dtype=bool)
    if n == 0:
        return out
    logits = (coefs.astype(np.float32) @ protos.reshape(m, -1).astype(np.float32)).reshape(n, ph, pw)
    # Net input size from the proto stride, the region the original image occupies inside it.
    new_w = max(1, round(info.orig_w * info.scale))
    new_h = max(1, round(info.orig_h * info.scale))
    stride_x = (2 * info.pad_x + new_w) / pw
    stride_y = (2 * info.pad_y + new_h) / ph
    # Crop the proto map to the image region first (cheaper than upsampling the padding).
    x0, y0 = info.pad_x / stride_x, info.pad_y / stride_y
    x1, y1 = (info.pad_x + new_w) / stride_x, (info.pad_y + new_h) / stride_y
    for k in range(n):
        # Affine warp: original pixel (u, v) <- proto cell ((u+0.5)*sx - 0.5 + x0, ...)
        sx = (x1 - x0) / info.orig_w
        sy = (y1 - y0) / info.orig_h
        warp = np.array([[sx, 0, x0 + 0.5 * sx - 0.5], [0, sy, y0 + 0.5 * sy - 0.5]], dtype=np.float64)
        up = cv2.warpAffine(
            logits[k], warp, (info.orig_w, info.orig_h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
        )
        mask = up > 0.0  # sigmoid(x) > 0.5  <=>  x > 0
        bx0, by0, bx1, by1 = boxes_orig[k]
        crop = np.zeros_like(mask)
        ix0, iy0 = int(np.floor(bx0)), int(np.floor(by0))
        ix1, iy1 = int(np.ceil(bx1)), int(np.ceil(by1))
        crop[max(iy0, 0) : max(iy1, 0), max(ix0, 0) : max(ix1, 0)] = True
        out[k] = mask & crop
    return out


def decode(
    boxes: np.ndarray,
    scores: np.ndarray,
    mask_coefs: np.ndarray | None,
    protos: np.ndarray | None,
    info: LetterboxInfo,
    score_threshold: float = 0.25,
    iou_threshold: float = 0.5,
    max_det: int = 100,
) -> Detections:
    """One image's raw detector outputs (with or without a leading batch dim of 1) -> Detections.

    boxes [A,4] xyxy input pixels, scores [A] probabilities, mask_coefs [A,M], protos [M,S/4,S/4].
    Pass mask_coefs/protos as None for a box-only decode.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if boxes.ndim == 3:
        boxes = boxes[0]
    if scores.ndim == 2:
        scores = scores[0]
    with_masks = mask_coefs is not None and protos is not None
    if with_masks:
        mask_coefs = np.asarray(mask_coefs, dtype=np.float32)
        protos = np.asarray(protos, dtype=np.float32)
        if mask_coefs.ndim == 3:
            mask_coefs = mask_coefs[0]
        if protos.ndim == 4:
            protos = protos[0]
    if boxes.shape[0] != scores.shape[0] or boxes.shape[-1] != 4:
        raise ValueError(f"boxes {boxes.shape} and scores {scores.shape} do not describe the same anchors")

    candidates = np.flatnonzero(scores >= score_threshold)
    if candidates.size == 0:
        return Detections.empty(info, with_masks)
    cand_boxes = boxes[candidates]
    keep = candidates[nms(cand_boxes, scores[candidates], iou_threshold, max_det)]
    boxes_in = boxes[keep]
    boxes_orig = info.to_original_xyxy(boxes_in)
    masks = assemble_masks(mask_coefs[keep], protos, boxes_orig, info) if with_masks else None
    return Detections(boxes_orig.astype(np.float32), scores[keep].astype(np.float32), masks)
