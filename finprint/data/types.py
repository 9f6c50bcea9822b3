"""The in-memory shape of every dataset finprint reads, whatever its file format.

Boxes are `xyxy` in pixels of the original image; polygons are lists of (K, 2) float arrays in
pixels. A frame's `group` is what splits must respect (habitat for DeepFish, video or camera for
farms) so neighbouring frames never land on both sides of a split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Instance:
    box_xyxy: np.ndarray  # (4,) float32, pixels
    polygons: list[np.ndarray] | None = None  # each (K, 2) float32, pixels; None = no mask
    individual_id: str | None = None
    unknown: bool = False  # an individual never seen in training (open-set)
    category: int = 0  # 0 = fish


@dataclass
class Frame:
    image_path: Path
    width: int
    height: int
    instances: list[Instance] = field(default_factory=list)
    group: str = ""  # split key: habitat / video / camera


@dataclass
class DetectionSet:
    root: Path
    format: str  # "yolo-detect" | "yolo-seg" | "coco" | "farm"
    frames: list[Frame]
    class_names: list[str] = field(default_factory=lambda: ["fish"])

    @property
    def has_masks(self) -> bool:
        return any(inst.polygons for f in self.frames for inst in f.instances)


@dataclass
class Crop:
    path: Path
    identity: str
    camera: str = ""
    subset: str = ""  # "train" | "gallery" | "query" | "" (one folder)
    unknown: bool = False


@dataclass
class ReidSet:
    root: Path
    crops: list[Crop]

    @property
    def identities(self) -> list[str]:
        return sorted({c.identity for c in self.crops})


@dataclass
class Skipped:
    """A piece of input that `--skip-bad` left out, and why."""

    path: Path
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.reason}"
