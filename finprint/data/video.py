"""Short farm videos: the same individuals swim smooth paths, cross and hide each other, leave and come back.

Each fish follows a slow sinusoid whose horizontal swing is wider than the view, so it swims out of
one side and later returns; its depth drifts too, so fish pass in front of one another. Per-frame
ground truth (box, visible polygon, identity, true length) goes into a JSON next to the mp4.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from finprint.data.fish import Individual, Pose
from finprint.data.frame import Placement, mask_box_xyxy, mask_polygons, render_frame
from finprint.data.scene import WaterStyle, jitter_style

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Swim:
    """One fish's path in one video, as smooth functions of time t (seconds)."""

    key: int
    amp_x: float
    omega_x: float
    phase_x: float
    cy: float
    amp_y: float
    omega_y: float
    phase_y: float
    depth_phase: float
    tailbeat_hz: float

    def pose(self, t: float, width: float, length_px: float) -> tuple[Pose, float]:
        cx = width / 2 + self.amp_x * np.sin(self.omega_x * t + self.phase_x)
        vx = self.amp_x * self.omega_x * np.cos(self.omega_x * t + self.phase_x)
        cy = self.cy + self.amp_y * np.sin(self.omega_y * t + self.phase_y)
        vy = self.amp_y * self.omega_y * np.cos(self.omega_y * t + self.phase_y)
        facing_right = bool(vx >= 0)
        tilt = float(np.clip(np.arctan2(-vy, abs(vx) + 1e-6), -0.5, 0.5))
        depth = float(0.5 + 0.4 * np.sin(0.7 * t + self.depth_phase))
        pose = Pose(
            cx=float(cx),
            cy=float(cy),
            length_px=length_px,
            angle=tilt if facing_right else -tilt,
            facing_right=facing_right,
            bend=0.07,
            bend_phase=float(2 * np.pi * self.tailbeat_hz * t),
        )
        return pose, depth


def plan_swims(n: int, width: int, height: int, seconds: float, rng: np.random.Generator) -> list[Swim]:
    swims = []
    for k in range(n):
        period = seconds * rng.uniform(0.6, 1.3)  # most fish leave and re-enter within the clip
        swims.append(Swim(
            key=k,
            amp_x=float(width * rng.uniform(0.6, 0.85)),
            omega_x=float(2 * np.pi / period),
            phase_x=float(rng.uniform(0, 2 * np.pi)),
            cy=float(height * rng.uniform(0.25, 0.75)),
            amp_y=float(height * rng.uniform(0.03, 0.15)),
            omega_y=float(rng.uniform(0.5, 1.5)),
            phase_y=float(rng.uniform(0, 2 * np.pi)),
            depth_phase=float(rng.uniform(0, 2 * np.pi)),
            tailbeat_hz=float(rng.uniform(0.8, 1.6)),
        ))
    return swims


def write_video(
    path_mp4: Path,
    camera: dict,
    style: WaterStyle,
    cast: list[tuple[Individual, np.ndarray]],
    seconds: float,
    fps: int,
    width: int,
    height: int,
    rng: np.random.Generator,
    min_visible_px: int,
) -> dict:
    """Render one camera's clip to `path_mp4` and its ground truth to the .json beside it; returns a summary."""
    n_frames = max(1, int(round(seconds * fps)))
    swims = plan_swims(len(cast), width, height, seconds, rng)
    px_per_cm = float(camera["px_per_cm"])
    writer = cv2.VideoWriter(str(path_mp4), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could not open an mp4v writer for {path_mp4}")
    frames_gt = []
    n_instances = 0
    try:
        for f in range(n_frames):
            t = f / fps
            placements = []
            for swim, (ind, texture) in zip(swims, cast, strict=True):
                pose, depth = swim.pose(t, width, ind.length_cm * px_per_cm)
                placements.append(Placement(swim.key, texture, pose, depth))
            frame_style = jitter_style(style, rng, amount=0.15)
            image, visible = render_frame(placements, frame_style, width, height, rng)
            writer.write(image)
            instances = []
            for v in sorted(visible, key=lambda v: v.key):
                polys = mask_polygons(v.mask, min_area=float(min_visible_px) / 2)
                if v.mask.sum() < min_visible_px or not polys:
                    continue
                ind = cast[v.key][0]
                instances.append({
                    "individual_id": ind.id,
                    "unknown": ind.unknown,
                    "box_xyxy": [float(x) for x in mask_box_xyxy(v.mask)],
                    "polygon": [[float(x), float(y)] for x, y in polys[0]],
                    "length_cm": round(ind.length_cm, 2),
                    "visible_fraction": round(float(v.mask.sum()) / max(v.full_area, 1), 3),
                })
            n_instances += len(instances)
            frames_gt.append({"frame": f, "instances": instances})
    finally:
        writer.release()
    gt = {
        "fps": fps,
        "width": width,
        "height": height,
        "camera": camera["id"],
        "px_per_cm": px_per_cm,
        "individuals": [ind.id for ind, _ in cast],
        "frames": frames_gt,
    }
    path_mp4.with_suffix(".json").write_text(json.dumps(gt, sort_keys=True, indent=1))
    return {"video": path_mp4.name, "frames": n_frames, "instances": n_instances}
