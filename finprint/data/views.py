"""Quick re-ID crops without a whole farm: each view is a fresh small scene (pose, water, light, occluder).

`render_reid_views` is what identity tests and quick embedder experiments use; the farm's reid/
folder holds crops cut the same way from full frames.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from finprint.data.fish import Individual, Pose, make_population, render_texture
from finprint.data.frame import Placement, mask_box_xyxy, render_frame
from finprint.data.scene import WaterStyle, sample_view_style

log = logging.getLogger(__name__)

VIEW_W, VIEW_H = 224, 140  # the small scene one view is rendered in
MIN_VISIBLE = 0.6  # a view keeps at least this fraction of its fish unoccluded


@dataclass
class ReidViews:
    crops: np.ndarray  # (N, H, W, 3) uint8 BGR, stretched to `size`
    labels: np.ndarray  # (N,) int, index into `individuals`
    view_index: np.ndarray  # (N,) int, the view's number within its individual (0..views-1)
    individuals: list[Individual]


def random_pose(rng: np.random.Generator, cx: float, cy: float, length_px: float) -> Pose:
    return Pose(
        cx=cx,
        cy=cy,
        length_px=length_px,
        angle=float(rng.uniform(-0.35, 0.35)),
        facing_right=bool(rng.random() < 0.5),
        bend=float(rng.uniform(-0.09, 0.09)),
        bend_phase=float(rng.uniform(0, 2 * np.pi)),
    )


def crop_and_stretch(image: np.ndarray, box_xyxy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The embedder crop (box + 10 %, clipped) stretched to size = (width, height)."""
    from finprint.runtime.crops import crop_fish

    return cv2.resize(crop_fish(image, box_xyxy), size, interpolation=cv2.INTER_AREA)


def render_view(
    texture: np.ndarray,
    occluders: Sequence[np.ndarray],
    style: WaterStyle,
    length_px: float,
    rng: np.random.Generator,
    scene: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One fish in a small scene of its own (sometimes behind one of `occluders`) -> (image, its box xyxy,
    its visible mask).

    `scene` (width, height) defaults to a size proportional to the fish, framed as VIEW_W x VIEW_H
    frames a 147 px fish.
    """
    width, height = scene or (int(length_px * VIEW_W / 147) + 1, int(length_px * VIEW_H / 147) + 1)
    jitter_x, jitter_y = 10 * width / VIEW_W, 8 * height / VIEW_H
    target = Placement(0, texture, random_pose(rng, width / 2 + rng.uniform(-jitter_x, jitter_x),
                                               height / 2 + rng.uniform(-jitter_y, jitter_y), length_px), 0.5)
    placements = [target]
    if rng.random() < 0.4 and len(occluders) > 0:  # another fish swims in front of part of it
        other = occluders[int(rng.choice(len(occluders)))]
        side = 1.0 if rng.random() < 0.5 else -1.0
        occ = random_pose(rng, target.pose.cx + side * rng.uniform(0.55, 0.8) * length_px,
                          target.pose.cy + rng.uniform(-30, 30) * height / VIEW_H, length_px * rng.uniform(0.8, 1.1))
        placements.append(Placement(1, other, occ, 0.2))
    image, visible = render_frame(placements, style, width, height, rng)
    tgt = next(v for v in visible if v.key == 0)
    if tgt.mask.sum() < MIN_VISIBLE * tgt.full_area and len(placements) > 1:
        image, visible = render_frame([target], style, width, height, rng)
        tgt = visible[0]
    return image, mask_box_xyxy(tgt.mask), tgt.mask


def render_reid_views(
    n_individuals: int, views_per_individual: int, seed: int, size: tuple[int, int] = (128, 64)
) -> ReidViews:
    """Views of n individuals, each in its own water, light, pose and (sometimes) behind another fish."""
    rng = np.random.default_rng(seed)
    individuals = make_population(n_individuals, rng)
    textures = [render_texture(ind) for ind in individuals]
    crops, labels, index = [], [], []
    for i in range(n_individuals):
        others = [textures[j] for j in range(n_individuals) if j != i]
        for k in range(views_per_individual):
            style = sample_view_style(rng)
            length = float(rng.uniform(120, 175))
            image, box, _ = render_view(textures[i], others, style, length, rng, scene=(VIEW_W, VIEW_H))
            crops.append(crop_and_stretch(image, box, size))
            labels.append(i)
            index.append(k)
    return ReidViews(np.stack(crops), np.asarray(labels), np.asarray(index), individuals)
