"""crop_fish: the one crop the embedder sees, torch-free."""

from __future__ import annotations

import numpy as np
import pytest
from finprint.runtime.crops import crop_fish, embedder_preprocess, expand_box
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

