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
