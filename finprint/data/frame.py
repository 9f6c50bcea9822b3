"""Compose one frame: background water, fish painted back to front, water effects; visible instance masks.

Shared by the farm's still images, its videos and the quick re-ID views, so all three look alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from finprint.data.fish import Pose, warp_into_frame
from finprint.data.scene import WaterStyle, attenuate, composite, finish, render_background

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    key: int  # caller's index of the individual
    texture: np.ndarray
    pose: Pose
    depth: float  # 0 near the camera .. 1 far


@dataclass
class Visible:
    key: int
    mask: np.ndarray  # (H, W) bool, the part of the fish the camera sees
    full_area: int  # pixels the whole fish would cover, unoccluded and uncut by the frame edge


def render_frame(
    placements: list[Placement], style: WaterStyle, width: int, height: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[Visible]]:
    """Paint fish far to near; a nearer fish removes what it covers from the masks of those behind it."""
    image = render_background(style, width, height)
    visible: list[Visible] = []
    for p in sorted(placements, key=lambda p: (-p.depth, p.key)):
        warped = warp_into_frame(p.texture, p.pose, width, height)
        if warped is None:
            continue
        patch, x0, y0 = warped
        patch = patch.copy()
        patch[..., :3] = attenuate(patch[..., :3], style, p.depth)
        mask = composite(image, patch, x0, y0)
        for v in visible:
            v.mask &= ~mask
        scale = p.pose.length_px / p.texture.shape[1]
        full_area = int(max(mask.sum(), (p.texture[..., 3] > 0.5).sum() * scale * scale))
        visible.append(Visible(p.key, mask, full_area))
    return finish(image, style, rng), visible


def mask_box_xyxy(mask: np.ndarray) -> np.ndarray:
    """Tight box around a mask, xyxy in pixels (x1, y1 exclusive)."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def mask_polygons(mask: np.ndarray, min_area: float = 4.0) -> list[np.ndarray]:
    """Outer contours of a mask as (K, 2) float32 polygons of >= 3 points, largest first."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= 3 and cv2.contourArea(c) >= min_area:
            approx = cv2.approxPolyDP(c, 0.8, True)
            pts = approx if len(approx) >= 3 else c
            polys.append(pts.reshape(-1, 2).astype(np.float32))
    polys.sort(key=lambda p: -abs(cv2.contourArea(p)))
    return polys
