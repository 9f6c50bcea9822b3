"""Cut a fish out of a frame for the embedder: the one crop used by training, evaluation and the daemon.

The box grows by `margin` of its width and height (half on each side), is clipped to the image and
cut out at native resolution; stretching to the embedder's 64x128 input is the preprocessing's job
(`embedder_preprocess()`, resize "stretch"), so the crop keeps every pixel the camera gave.
"""

from __future__ import annotations

import cv2
import numpy as np
from finprint.runtime.manifest import Preprocess

EMBED_HEIGHT = 64
EMBED_WIDTH = 128
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def embedder_preprocess() -> Preprocess:
    """The embedder's input contract (docs/CONTRACTS.md section 3): 64x128 stretched, RGB, ImageNet mean/std."""
    return Preprocess(
        width=EMBED_WIDTH,
        height=EMBED_HEIGHT,
        resize="stretch",
        color_order="RGB",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


def expand_box(box_xyxy: np.ndarray, width: int, height: int, margin: float = 0.1) -> tuple[int, int, int, int]:
    """Grow a box by `margin` of its size (centred), clip to the image; integer pixel bounds x0, y0, x1, y1."""
    box = np.asarray(box_xyxy, dtype=np.float64).reshape(-1)
    if box.shape[0] != 4 or not np.all(np.isfinite(box)):
        raise ValueError(f"expected a finite xyxy box, got {box_xyxy!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x0, y0, x1, y1 = box
    if x1 < x0:
        x0, x1 = x1, x0
    if y1 < y0:
        y0, y1 = y1, y0
    grow_x, grow_y = (x1 - x0) * margin / 2, (y1 - y0) * margin / 2
    x0, x1 = x0 - grow_x, x1 + grow_x
    y0, y1 = y0 - grow_y, y1 + grow_y
    ix0, iy0 = int(np.floor(max(0.0, x0))), int(np.floor(max(0.0, y0)))
    ix1, iy1 = int(np.ceil(min(float(width), x1))), int(np.ceil(min(float(height), y1)))
    if ix0 >= width or iy0 >= height or ix1 <= 0 or iy1 <= 0:
        raise ValueError(f"box {box.tolist()} lies outside the {width}x{height} image")
    # A degenerate (zero-area) box still yields one pixel, so a tracker's sliver never crashes the daemon.
    ix1, iy1 = max(ix1, ix0 + 1), max(iy1, iy0 + 1)
    return ix0, iy0, min(ix1, width), min(iy1, height)


# Where a masked crop shows no fish: the embedder's mean colour, so it normalises to zero.
MASK_FILL_BGR = tuple(round(255 * m) for m in reversed(IMAGENET_MEAN))
MASK_DILATE_PX = 2  # a predicted mask is a little tight at the fins and tail


def mask_background(crop_bgr: np.ndarray, mask: np.ndarray, dilate_px: int = MASK_DILATE_PX) -> np.ndarray:
    """Set the crop's pixels outside the fish's (slightly grown) mask to MASK_FILL_BGR; mask has the crop's size."""
    if mask.shape[:2] != crop_bgr.shape[:2]:
        raise ValueError(f"mask {mask.shape[:2]} does not match the crop {crop_bgr.shape[:2]}")
    keep = mask.astype(np.uint8)
    if dilate_px > 0:
        keep = cv2.dilate(keep, np.ones((2 * dilate_px + 1, 2 * dilate_px + 1), np.uint8))
    out = crop_bgr.copy()
    out[keep == 0] = MASK_FILL_BGR
    return out


def polygon_mask(polygons: list, shape: tuple[int, ...]) -> np.ndarray:
    """A fish's visible parts as pixel polygons ([[x, y], ...] each) -> its HxW bool mask in a frame of `shape`."""
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(p, np.float64)).astype(np.int32).reshape(-1, 1, 2) for p in polygons], 1)
    return mask.astype(bool)


def crop_fish(image_bgr: np.ndarray, box_xyxy: np.ndarray, margin: float = 0.1, mask: np.ndarray | None = None) -> np.ndarray:
    """HxWx3 uint8 BGR frame + xyxy box in its pixels -> the fish crop (a contiguous copy, BGR).

    With `mask` (the fish's HxW instance mask in the frame) the crop shows only that fish: another fish
    in front of it or beside it is blanked out (`mask_background`), so its pattern does not vote."""
    if image_bgr is None or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {getattr(image_bgr, 'shape', None)}")
    h, w = image_bgr.shape[:2]
    x0, y0, x1, y1 = expand_box(box_xyxy, w, h, margin)
    if mask is not None:
        if mask.shape[:2] != (h, w):
            raise ValueError(f"mask {mask.shape[:2]} does not match the frame {(h, w)}")
        return mask_background(image_bgr[y0:y1, x0:x1], mask[y0:y1, x0:x1])
    return np.ascontiguousarray(image_bgr[y0:y1, x0:x1])
