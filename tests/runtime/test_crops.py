"""crop_fish: the one crop the embedder sees, torch-free."""

from __future__ import annotations

import numpy as np
import pytest

from finprint.runtime.crops import MASK_FILL_BGR, crop_fish, embedder_preprocess, expand_box, mask_background
from finprint.runtime.preprocess import preprocess_image


def _frame(h: int = 100, w: int = 200) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs % 256, ys % 256, (xs + ys) % 256], axis=2).astype(np.uint8)


def test_margin_grows_the_box_by_ten_percent_centred() -> None:
    assert expand_box(np.array([50, 20, 150, 70]), 200, 100, margin=0.1) == (45, 17, 155, 73)


def test_crop_holds_the_frame_pixels_of_the_expanded_box() -> None:
    frame = _frame()
    crop = crop_fish(frame, np.array([50, 20, 150, 70], np.float32))
    assert crop.shape == (56, 110, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, frame[17:73, 45:155])
    assert crop.flags["C_CONTIGUOUS"]


def test_box_at_the_border_is_clipped() -> None:
    crop = crop_fish(_frame(), np.array([-30, -10, 60, 120]))
    assert crop.shape == (100, 65, 3)


def test_degenerate_box_still_gives_one_pixel() -> None:
    assert crop_fish(_frame(), np.array([10, 10, 10, 10])).shape == (1, 1, 3)


@pytest.mark.parametrize("box", [[300, 10, 400, 50], [np.nan, 0, 10, 10], [1, 2, 3]])
def test_bad_boxes_are_refused(box: list[float]) -> None:
    with pytest.raises(ValueError):
        crop_fish(_frame(), np.array(box, np.float32))


def test_crop_preprocesses_to_the_embedder_input() -> None:
    pre = embedder_preprocess()
    tensor, _ = preprocess_image(crop_fish(_frame(), np.array([50, 20, 150, 70])), pre)
    assert tensor.shape == (3, 64, 128) and tensor.dtype == np.float32



def test_a_mask_blanks_everything_but_its_fish() -> None:
    frame = np.full((100, 200, 3), 50, np.uint8)
    frame[30:60, 60:140] = (0, 0, 255)  # the fish
    frame[30:60, 140:180] = (0, 255, 0)  # the fish in front of it, inside the grown box
    mask = np.zeros((100, 200), bool)
    mask[30:60, 60:140] = True
    plain = crop_fish(frame, np.array([60, 30, 170, 60]))
    masked = crop_fish(frame, np.array([60, 30, 170, 60]), mask=mask)
    assert masked.shape == plain.shape
    green = (plain == (0, 255, 0)).all(axis=2).sum()
    # The mask grows by two pixels (a predicted mask is a little tight at the fins): two columns of the
    # other fish stay, the rest of it is blanked.
    assert green > 20 * 30 and (masked == (0, 255, 0)).all(axis=2).sum() == 2 * 30
    assert (masked == (0, 0, 255)).all(axis=2).sum() == 30 * 80  # every pixel of the fish kept
    assert (masked == MASK_FILL_BGR).all(axis=2).sum() == 34 * 122 - 34 * 84  # the crop less the grown fish
    exact = mask_background(plain, mask[28:62, 54:176], dilate_px=0)
    assert not (exact == (0, 255, 0)).all(axis=2).any()


def test_a_mask_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="mask"):
        crop_fish(_frame(), np.array([50, 20, 150, 70]), mask=np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="mask"):
        mask_background(np.zeros((8, 8, 3), np.uint8), np.ones((4, 4), bool))


def _slanted_fish(angle_deg: float, shape: tuple[int, int] = (160, 240)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 120x24 px fish at `angle_deg` (clockwise on screen) around (120, 80): its mask, a frame where the half
    above its axis on screen is red and the half below blue (shows which way up it was turned), and its box."""
    import cv2

    h, w = shape
    centre, size = (120.0, 80.0), (120.0, 24.0)
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (centre, size, angle_deg), 1, -1)
    ys, xs = np.mgrid[0:h, 0:w]
    t = np.radians((angle_deg + 90) % 180 - 90)  # the same line, pointing right
    across = -(xs - centre[0]) * np.sin(t) + (ys - centre[1]) * np.cos(t)  # > 0: below the axis on screen
    frame = np.full((h, w, 3), 40, np.uint8)
    frame[(mask > 0) & (across < 0)] = (0, 0, 255)
    frame[(mask > 0) & (across >= 0)] = (255, 0, 0)
    rows, cols = np.nonzero(mask)
    return mask.astype(bool), frame, np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)


@pytest.mark.parametrize("angle", [0.0, 30.0, -55.0, 150.0])
def test_an_aligned_crop_lays_the_fish_along_its_width_the_same_way_up(angle: float) -> None:
    mask, frame, box = _slanted_fish(angle)
    crop = crop_fish(frame, box, align=mask)
    # The crop spans the fish's length and width plus the 10 % margin, not its (much squarer) box.
    assert abs(crop.shape[1] - 120 * 1.1) <= 3 and abs(crop.shape[0] - 24 * 1.1) <= 3, crop.shape
    red = (crop == (0, 0, 255)).all(axis=2)
    blue = (crop == (255, 0, 0)).all(axis=2)
    mid = crop.shape[0] // 2
    # Upper half red, lower half blue whatever the slant: the axis points right and "across" points down.
    assert red[:mid].sum() > 0.9 * red.sum() and blue[mid:].sum() > 0.9 * blue.sum()
    assert red.sum() > 0.3 * crop.shape[0] * crop.shape[1] / 2  # the fish fills the crop


def test_a_fish_heading_the_other_way_gives_the_mirrored_crop() -> None:
    """Mirrored on screen, a fish's aligned crop is mirrored too (the embedder's mirror sum treats both alike),
    not turned upside down."""
    mask, frame, box = _slanted_fish(30.0)
    w = frame.shape[1]
    flipped = crop_fish(frame[:, ::-1].copy(), np.array([w - box[2], box[1], w - box[0], box[3]]), align=mask[:, ::-1].copy())
    a = crop_fish(frame, box, align=mask)
    assert a.shape == flipped.shape and np.abs(a[:, ::-1].astype(int) - flipped.astype(int)).mean() < 3


def test_aligning_with_too_small_a_mask_keeps_the_plain_crop() -> None:
    frame = _frame()
    mask = np.zeros((100, 200), bool)
    mask[40:43, 90:93] = True  # 9 pixels: no trustworthy axis
    box = np.array([50, 20, 150, 70], np.float32)
    np.testing.assert_array_equal(crop_fish(frame, box, align=mask), crop_fish(frame, box))
    with pytest.raises(ValueError, match="align"):
        crop_fish(frame, box, align=np.ones((10, 10), bool))


def test_an_aligned_masked_crop_blanks_what_lies_outside_the_fish() -> None:
    import cv2

    mask, frame, box = _slanted_fish(30.0)
    crop = crop_fish(frame, box, mask=mask, align=mask)
    fish = (crop == (0, 0, 255)).all(axis=2) | (crop == (255, 0, 0)).all(axis=2)
    fill = (crop == MASK_FILL_BGR).all(axis=2)
    water = (crop == 40).all(axis=2)
    near = cv2.dilate(fish.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    # Open water is blanked, but for the two pixels the mask grows by around the fish.
    assert fill.sum() > 0 and not (water & ~near).any()
    assert fish.sum() + fill.sum() + water.sum() > 0.8 * crop.shape[0] * crop.shape[1]  # the rest: pixels the turn blends
