"""Cut a fish out of a frame for the embedder: the one crop used by training, evaluation and the daemon.

The box grows by `margin` of its width and height (half on each side), is clipped to the image and
cut out at native resolution; stretching to the embedder's 64x128 input is the preprocessing's job
(`embedder_preprocess()`, resize "stretch"), so the crop keeps every pixel the camera gave.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# Fewer mask pixels than this inside the box give no trustworthy axis: the crop stays axis-aligned.
ALIGN_MIN_PIXELS = 24


@dataclass(frozen=True)
class FishAxis:
    """A fish's long axis in frame pixels: the centre of its extent, the unit direction (pointing right,
    x >= 0), and its length and width along and across that direction."""

    center: np.ndarray
    direction: np.ndarray
    length: float
    width: float


def fish_axis(mask: np.ndarray, bounds: tuple[int, int, int, int]) -> FishAxis | None:
    """The principal axis of the mask's pixels inside `bounds` (x0, y0, x1, y1); None when too few."""
    x0, y0, x1, y1 = bounds
    rows, cols = np.nonzero(mask[y0:y1, x0:x1])
    if len(rows) < ALIGN_MIN_PIXELS:
        return None
    pts = np.stack([cols + x0, rows + y0], axis=1).astype(np.float64)
    mean = pts.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((pts - mean).T))
    along = vectors[:, 1]  # eigh sorts ascending: the last vector is the long axis
    if along[0] < 0 or (along[0] == 0 and along[1] < 0):
        along = -along
    across = np.array([-along[1], along[0]])  # along turned a quarter clockwise on screen (y points down)
    u, v = (pts - mean) @ along, (pts - mean) @ across
    center = mean + along * (u.min() + u.max()) / 2 + across * (v.min() + v.max()) / 2
    return FishAxis(center, along, float(u.max() - u.min() + 1), float(v.max() - v.min() + 1))


def _turned(image: np.ndarray, axis: FishAxis, size: tuple[int, int], interpolation: int, border: int) -> np.ndarray:
    """The size=(w, h) window centred on the axis, with the axis along its x: one affine warp."""
    w, h = size
    across = np.array([-axis.direction[1], axis.direction[0]])
    origin = axis.center - axis.direction * (w - 1) / 2 - across * (h - 1) / 2
    dst_to_src = np.array([[axis.direction[0], across[0], origin[0]], [axis.direction[1], across[1], origin[1]]])
    return cv2.warpAffine(image, dst_to_src, (w, h), flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=border)


def crop_fish(
    image_bgr: np.ndarray, box_xyxy: np.ndarray, margin: float = 0.1, mask: np.ndarray | None = None,
    align: np.ndarray | None = None,
) -> np.ndarray:
    """HxWx3 uint8 BGR frame + xyxy box in its pixels -> the fish crop (a contiguous copy, BGR).

    With `mask` (the fish's HxW instance mask in the frame) the crop shows only that fish: another fish
    in front of it or beside it is blanked out (`mask_background`), so its pattern does not vote.
    With `align` (the same kind of mask) the crop is turned so that the fish's long axis lies along its
    width, and it spans the fish's length and width (plus `margin`) rather than its box: a fish swimming
    at a slant then fills the embedder's 64x128 input instead of a thin diagonal band of it, and every
    view of a fish shows its pattern the same way up (the embedder's mirror sum covers head left or
    right). Too small a mask inside the box leaves the crop axis-aligned."""
    if image_bgr is None or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {getattr(image_bgr, 'shape', None)}")
    h, w = image_bgr.shape[:2]
    bounds = expand_box(box_xyxy, w, h, margin)
    for name, m in (("mask", mask), ("align", align)):
        if m is not None and m.shape[:2] != (h, w):
            raise ValueError(f"{name} {m.shape[:2]} does not match the frame {(h, w)}")
    axis = fish_axis(align, bounds) if align is not None else None
    if axis is not None:
        size = (max(2, round(axis.length * (1 + margin))), max(2, round(axis.width * (1 + margin))))
        crop = _turned(image_bgr, axis, size, cv2.INTER_LINEAR, cv2.BORDER_REPLICATE)
        if mask is None:
            return crop
        keep = _turned(mask.astype(np.uint8), axis, size, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT)
        return mask_background(crop, keep)
    x0, y0, x1, y1 = bounds
    if mask is not None:
        return mask_background(image_bgr[y0:y1, x0:x1], mask[y0:y1, x0:x1])
    return np.ascontiguousarray(image_bgr[y0:y1, x0:x1])
