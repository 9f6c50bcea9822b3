"""Detection training data: frames -> augmented, letterboxed tensors with box and mask targets.

Augmentation happens in uint8 image space (flip, scale/translate, HSV jitter, blur); the letterbox
and tensor conversion are the runtime's own (`finprint.runtime.preprocess`), so training sees the
tensors that evaluation, calibration and the daemon see.

Every random choice of item i in epoch e comes from a generator seeded by (seed, i, variant), with
`variant = hash(seed, e, i) % aug_variants`: the data are identical after a resume, under DDP, with
any number of workers, and a teacher's outputs can be cached per (i, variant) for distillation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from finprint.data.types import Frame
from finprint.errors import DataError
from finprint.runtime.manifest import Preprocess
from finprint.runtime.preprocess import letterbox, to_tensor

log = logging.getLogger(__name__)

MIN_BOX_PX = 2.0  # boxes smaller than this after augmentation are dropped


def detector_preprocess(imgsz: int) -> Preprocess:
    """The detector's preprocessing (docs/CONTRACTS.md section 3): letterbox, RGB, /255, pad 114."""
    return Preprocess(width=imgsz, height=imgsz, resize="letterbox", pad_value=114, color_order="RGB")


def load_frames(path: str | Path, split: str | None) -> list[Frame]:
    """Frames of a farm folder / YOLO folder / COCO json through the project's loaders."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "dataset path does not exist")
    from finprint.data import load_detection

    dataset, skipped = load_detection(path, split=split)
    return list(dataset.frames)


def split_frames(path: str | Path, val_groups: list[str] | None, seed: int) -> tuple[list[Frame], list[Frame]]:
    """Train/validation frames: a farm's own train/val splits, else a split by group (habitat)."""
    path = Path(path)
    if (path / "annotations" / "instances_train.json").is_file():
        train = load_frames(path, "train")
        val = load_frames(path, "val") if (path / "annotations" / "instances_val.json").is_file() else []
        return train, val
    if (path / "images" / "train").is_dir() and (path / "images" / "val").is_dir():
        return load_frames(path, "train"), load_frames(path, "val")
    from finprint.data import split_by_group

    frames = load_frames(path, None)
    return split_by_group(frames, val_groups=val_groups, val_fraction=0.2, seed=seed)


@dataclass
class Augment:
    hflip: float = 0.5
    vflip: float = 0.0
    scale: tuple[float, float] = (0.7, 1.3)
    translate: float = 0.1
    hsv: tuple[float, float, float] = (0.015, 0.5, 0.3)  # hue (fraction of 180), saturation, value gains
    blur: float = 0.1  # probability of a 3/5 px Gaussian blur
    # Water colour differs from site to site (green, blue, violet, grey): per-channel gains up to +-colour
    # (a white-balance shift) and, with probability `gray`, a grey frame, so the colour cast of the
    # training habitats does not become what a fish looks like.
    colour: float = 0.0
    gray: float = 0.0

    @staticmethod
    def off() -> Augment:
        return Augment(hflip=0.0, scale=(1.0, 1.0), translate=0.0, hsv=(0.0, 0.0, 0.0), blur=0.0)


def _instance_points(frame: Frame) -> list[tuple[np.ndarray, bool]]:
    """Per instance: polygon points (or the 4 box corners) in pixels, and whether it is a real mask."""
    out = []
    for inst in frame.instances:
        if inst.polygons:
            out.append((np.concatenate(inst.polygons, 0).astype(np.float32), True))
        else:
            x0, y0, x1, y1 = inst.box_xyxy
            out.append((np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32), False))
    return out


class DetectionDataset(Dataset):
    def __init__(
        self, frames: list[Frame], imgsz: int, augment: Augment | None, seed: int = 0, aug_variants: int = 8
    ) -> None:
        self.frames = frames
        self.imgsz = imgsz
        self.augment = augment
        self.seed = seed
        self.aug_variants = max(1, aug_variants)
        self.epoch = 0
        self.pre = detector_preprocess(imgsz)

    def __len__(self) -> int:
        return len(self.frames)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def variant(self, index: int) -> int:
        if self.augment is None:
            return 0
        return int(np.random.default_rng([self.seed, self.epoch, index]).integers(self.aug_variants))

    def _read(self, frame: Frame) -> np.ndarray:
        image = cv2.imread(str(frame.image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(frame.image_path, "cannot decode image")
        return image

    def _augment(self, image: np.ndarray, polys: list[tuple[np.ndarray, bool]], rng: np.random.Generator):
        aug = self.augment
        assert aug is not None
        h, w = image.shape[:2]
        s = rng.uniform(*aug.scale)
        tx, ty = rng.uniform(-aug.translate, aug.translate, 2) * (w, h)
        flip_x = rng.random() < aug.hflip
        flip_y = rng.random() < aug.vflip
        # Affine about the centre: optional flips, then scale, then translate.
        fx, fy = (-1.0 if flip_x else 1.0), (-1.0 if flip_y else 1.0)
        cx, cy = w / 2, h / 2
        m = np.array([[fx * s, 0, cx - fx * s * cx + tx], [0, fy * s, cy - fy * s * cy + ty]], np.float32)
        image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(114, 114, 114))
        polys = [(pts @ m[:, :2].T + m[:, 2], real) for pts, real in polys]
        if any(aug.hsv):
            gains = rng.uniform(-1, 1, 3) * np.asarray(aug.hsv) + (0, 1, 1)
            hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float32)
            hsv[..., 0] = (hsv[..., 0] + gains[0] * 180) % 180
            hsv[..., 1:] *= gains[1:]
            image = cv2.cvtColor(hsv.clip(0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)
        if aug.colour > 0:
            gains = 1.0 + rng.uniform(-aug.colour, aug.colour, 3)
            image = (image.astype(np.float32) * (gains / gains.mean())).clip(0, 255).astype(np.uint8)
        if aug.gray > 0 and rng.random() < aug.gray:
            image = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        if rng.random() < aug.blur:
            k = int(rng.choice([3, 5]))
            image = cv2.GaussianBlur(image, (k, k), 0)
        return image, polys

    def __getitem__(self, index: int) -> dict:
        frame = self.frames[index]
        image = self._read(frame)
        polys = _instance_points(frame)
        variant = self.variant(index)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, index, variant, 7])
            image, polys = self._augment(image, polys, rng)
        boxed, info = letterbox(image, self.imgsz, self.imgsz, self.pre.pad_value)
        ms = self.imgsz // 4
        boxes, masks, has_mask = [], [], []
        for pts, real in polys:
            p = pts * info.scale + (info.pad_x, info.pad_y)
            x0, y0 = p.min(0).clip(0, self.imgsz)
            x1, y1 = p.max(0).clip(0, self.imgsz)
            if x1 - x0 < MIN_BOX_PX or y1 - y0 < MIN_BOX_PX:
                continue
            mask = np.zeros((ms, ms), np.uint8)
            if real:
                cv2.fillPoly(mask, [np.round(p / 4 - 0.5).astype(np.int32)], 1)
            else:
                mask[int(y0 // 4) : int(np.ceil(y1 / 4)), int(x0 // 4) : int(np.ceil(x1 / 4))] = 1
            boxes.append([x0, y0, x1, y1])
            masks.append(mask)
            has_mask.append(real)
        return {
            "image": torch.from_numpy(to_tensor(boxed, self.pre)),
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, ms, ms), dtype=torch.uint8),
            "has_mask": torch.tensor(has_mask, dtype=torch.bool),
            "key": (index, variant),
        }


def collate_detection(items: list[dict]) -> dict:
    """Pad targets to the most instances in the batch; `valid` marks the real ones."""
    b = len(items)
    g = max(1, max(it["boxes"].shape[0] for it in items))
    ms = items[0]["masks"].shape[-1]
    boxes = torch.zeros((b, g, 4))
    masks = torch.zeros((b, g, ms, ms), dtype=torch.uint8)
    valid = torch.zeros((b, g), dtype=torch.bool)
    has_mask = torch.zeros((b, g), dtype=torch.bool)
    for i, it in enumerate(items):
        n = it["boxes"].shape[0]
        boxes[i, :n] = it["boxes"]
        masks[i, :n] = it["masks"]
        valid[i, :n] = True
        has_mask[i, :n] = it["has_mask"]
    return {
        "images": torch.stack([it["image"] for it in items]),
        "boxes": boxes,
        "masks": masks,
        "valid": valid,
        "has_mask": has_mask,
        "keys": [it["key"] for it in items],
    }
