"""The one preprocessing implementation: letterbox, colour order, mean/std, layout.

Evaluation, calibration and the daemon all call this, driven by the manifest's `Preprocess`
block, so an engine sees in the field exactly the tensors it was calibrated and measured on.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from finprint.runtime.manifest import Preprocess


@dataclass(frozen=True)
class LetterboxInfo:
    """How an original image maps into the network input: input = original * scale + pad."""

    scale: float
    pad_x: float
    pad_y: float
    orig_w: int
    orig_h: int

    def to_original_xyxy(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        out = boxes_xyxy.astype(np.float32).copy()
        out[..., [0, 2]] = (out[..., [0, 2]] - self.pad_x) / self.scale
        out[..., [1, 3]] = (out[..., [1, 3]] - self.pad_y) / self.scale
        out[..., [0, 2]] = out[..., [0, 2]].clip(0, self.orig_w)
        out[..., [1, 3]] = out[..., [1, 3]].clip(0, self.orig_h)
        return out


def letterbox(image_bgr: np.ndarray, width: int, height: int, pad_value: int = 114) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize keeping aspect ratio, pad to (height, width), centred."""
    h, w = image_bgr.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR if scale < 1 else cv2.INTER_CUBIC)
    pad_x, pad_y = (width - new_w) / 2, (height - new_h) / 2
    left, top = int(np.floor(pad_x)), int(np.floor(pad_y))
    out = np.full((height, width, 3), pad_value, dtype=np.uint8)
    out[top : top + new_h, left : left + new_w] = resized
    return out, LetterboxInfo(scale=scale, pad_x=float(left), pad_y=float(top), orig_w=w, orig_h=h)


def to_tensor(image_bgr_u8: np.ndarray, pre: Preprocess) -> np.ndarray:
    """HWC uint8 BGR (already at network size) -> CHW float32 normalised, colour order per manifest."""
    img = image_bgr_u8
    if pre.color_order == "RGB":
        img = img[..., ::-1]
    x = img.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(pre.mean, dtype=np.float32)
    x /= np.asarray(pre.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_image(image_bgr: np.ndarray, pre: Preprocess) -> tuple[np.ndarray, LetterboxInfo]:
    """One decoded BGR frame -> (CHW float32 tensor, letterbox mapping)."""
    if image_bgr is None or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {getattr(image_bgr, 'shape', None)}")
    if pre.resize == "letterbox":
        boxed, info = letterbox(image_bgr, pre.width, pre.height, pre.pad_value)
    else:  # "stretch": crops for the embedder, where aspect is already normalised by cropping
        h, w = image_bgr.shape[:2]
        boxed = cv2.resize(image_bgr, (pre.width, pre.height), interpolation=cv2.INTER_LINEAR)
        info = LetterboxInfo(scale=pre.width / w, pad_x=0.0, pad_y=0.0, orig_w=w, orig_h=h)
    return to_tensor(boxed, pre), info


def preprocess_batch(images_bgr: list[np.ndarray], pre: Preprocess) -> tuple[np.ndarray, list[LetterboxInfo]]:
    if not images_bgr:
        return np.zeros((0, 3, pre.height, pre.width), np.float32), []
    pairs = [preprocess_image(im, pre) for im in images_bgr]
    return np.stack([tensor for tensor, _ in pairs]), [info for _, info in pairs]
