"""The detector's training augmentation: colour shifts change the water's colour, never where the fish is."""

from __future__ import annotations

import numpy as np

from finprint.distill.detect_data import Augment, DetectionDataset
from finprint.distill.detect_task import train_augment
from finprint.distill.options import DetectOptions


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.full((64, 64, 3), (150, 120, 40), np.uint8)  # a blue-green cast (BGR)
    image[20:40, 10:50] = rng.integers(0, 255, (20, 40, 3))
    return image


def _box_points() -> list[tuple[np.ndarray, bool]]:
    return [(np.array([[10, 20], [50, 20], [50, 40], [10, 40]], np.float32), True)]


def _augment(aug: Augment, seed: int) -> tuple[np.ndarray, list]:
    ds = DetectionDataset([], 64, aug)
    return ds._augment(_image(), _box_points(), np.random.default_rng(seed))


def test_colour_gains_shift_the_cast_and_keep_the_fish_in_place():
    still = Augment.off()
    out_plain, polys_plain = _augment(still, 0)
    ratios = []
    for seed in range(8):
        out, polys = _augment(Augment(**{**still.__dict__, "colour": 0.4}), seed)
        np.testing.assert_allclose(polys[0][0], polys_plain[0][0])
        b, g, r = out[5, 5].astype(float)  # background pixel
        ratios.append(b / max(g, 1.0))
    assert np.ptp(ratios) > 0.2, ratios  # the water's colour changes from frame to frame
    assert np.array_equal(out_plain, _image())


def test_gray_frames_have_equal_channels():
    out, _ = _augment(Augment(**{**Augment.off().__dict__, "gray": 1.0}), 0)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_options_reach_the_augmentation():
    aug = train_augment(DetectOptions(aug_colour=0.3, aug_gray=0.1, aug_hue=0.05))
    assert (aug.colour, aug.gray, aug.hsv[0]) == (0.3, 0.1, 0.05)
    assert train_augment(DetectOptions(no_augment=True)) == Augment.off()
    default = train_augment(DetectOptions())
    assert (default.colour, default.gray, default.hsv) == (0.0, 0.0, Augment().hsv)
