"""decode(): thresholds, NMS, letterbox undo and prototype masks, on hand-made raw outputs."""

from __future__ import annotations

import numpy as np

from finprint.runtime.detect_post import decode, nms
from finprint.runtime.preprocess import letterbox


def _info(orig_w=200, orig_h=100, size=64):
    _, info = letterbox(np.zeros((orig_h, orig_w, 3), np.uint8), size, size)
    return info


def test_nms_keeps_best_of_overlapping_and_separate_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.8, 0.9, 0.7], np.float32)
    assert nms(boxes, scores, 0.5, 100).tolist() == [1, 2]
    assert nms(boxes, scores, 0.5, 1).tolist() == [1]


def test_decode_boxes_to_original_pixels_and_threshold():
    info = _info()  # 200x100 -> 64x64: scale 0.32, pad_y 16
    assert info.pad_y == 16 and info.pad_x == 0
    boxes = np.array([[[0, 16, 32, 32], [32, 32, 64, 48], [0, 16, 32, 32]]], np.float32)
    scores = np.array([[0.9, 0.6, 0.1]], np.float32)
    det = decode(boxes, scores, None, None, info, score_threshold=0.25)
    assert len(det) == 2 and det.masks is None
    np.testing.assert_allclose(det.boxes_xyxy[0], [0, 0, 100, 50], atol=1e-4)
    np.testing.assert_allclose(det.boxes_xyxy[1], [100, 50, 200, 100], atol=1e-4)
    np.testing.assert_allclose(det.scores, [0.9, 0.6])


def test_decode_masks_follow_prototypes_and_are_cropped_to_box():
    info = _info()
    # One prototype: positive on the left half of the input, negative elsewhere.
    protos = np.full((1, 1, 16, 16), -5.0, np.float32)
    protos[0, 0, :, :8] = 5.0
    boxes = np.array([[[0, 16, 64, 48]]], np.float32)  # whole image
    det = decode(boxes, np.array([[0.9]], np.float32), np.ones((1, 1, 1), np.float32), protos, info)
    assert det.masks is not None and det.masks.shape == (1, 100, 200)
    m = det.masks[0]
    assert m[:, :95].all() and not m[:, 105:].any()
    # The same mask cropped to a box covering only the right part of the left half.
    boxes2 = np.array([[[16, 16, 64, 48]]], np.float32)  # original x from 50
    det2 = decode(boxes2, np.array([[0.9]], np.float32), np.ones((1, 1, 1), np.float32), protos, info)
    m2 = det2.masks[0]
    assert not m2[:, :49].any() and m2[:, 51:95].all()


def test_decode_empty_when_nothing_passes():
    info = _info()
    det = decode(np.zeros((5, 4), np.float32), np.zeros(5, np.float32), np.zeros((5, 2)), np.zeros((2, 16, 16)), info)
    assert len(det) == 0 and det.masks.shape == (0, 100, 200) and det.boxes_xyxy.shape == (0, 4)
