"""YOLO detect and segment folders: `images/` + `labels/`, one `.txt` per image, optional split subfolders.

A label line is `class cx cy w h` (a box) or `class x1 y1 x2 y2 x3 y3 ...` (a polygon of >= 3
points), all normalised to [0, 1]. An empty label file, or no label file at all, is a frame
without fish. A frame's group is its file-name prefix before the first `_` (DeepFish habitat).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from finprint.data.image_header import is_image, size_or_skip
from finprint.data.types import DetectionSet, Frame, Instance, Skipped
from finprint.errors import DataError

log = logging.getLogger(__name__)

# Normalised coordinates written with 6 decimals can round a hair past the edge.
_COORD_TOLERANCE = 1e-6


def is_yolo_folder(path: Path) -> bool:
    return (path / "images").is_dir() and (path / "labels").is_dir()


def group_from_name(stem: str) -> str:
    """The file-name prefix before the first `_` (the whole stem when there is none)."""
    return stem.split("_", 1)[0]


def _class_names(root: Path) -> list[str]:
    for name in ("data.yaml", "dataset.yaml"):
        path = root / name
        if path.is_file():
            try:
                names = (yaml.safe_load(path.read_text()) or {}).get("names")
            except yaml.YAMLError as exc:
                raise DataError(path, f"not valid YAML: {exc}") from exc
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names)]
            if isinstance(names, list):
                return [str(n) for n in names]
    return ["fish"]


def parse_label_line(text: str, width: int, height: int) -> Instance:
    """One label line -> an Instance in pixels; ValueError says what is wrong with it."""
    tokens = text.split()
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise ValueError(f"not a number in {text.strip()!r}") from None
    cls, coords = values[0], values[1:]
    if len(tokens) == 5:
        kind = "box"
    elif len(tokens) == 3:
        raise ValueError("polygon with 1 point (needs >= 3)")
    elif len(tokens) >= 7 and len(coords) % 2 == 0:
        kind = "polygon"
    elif len(tokens) > 5 and len(coords) % 2 == 1:
        raise ValueError(f"odd number of polygon coordinates ({len(coords)})")
    else:
        raise ValueError(
            f"{len(tokens)} numbers; expected 5 (class cx cy w h) or a class and >= 3 x y points"
        )
    if cls != int(cls) or cls < 0:
        raise ValueError(f"class {tokens[0]!r} is not a non-negative integer")
    outside = [c for c in coords if c < -_COORD_TOLERANCE or c > 1 + _COORD_TOLERANCE]
    if outside:
        raise ValueError(f"coordinate {outside[0]:g} outside [0, 1] (labels must be normalised)")
    scale = np.array([width, height], dtype=np.float32)
    if kind == "box":
        cx, cy, w, h = coords
        if w <= 0 or h <= 0:
            raise ValueError(f"box has zero or negative size (w={w:g}, h={h:g})")
        xyxy = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float32)
        box = (xyxy.reshape(2, 2).clip(0, 1) * scale).reshape(4)
        return Instance(box_xyxy=box, category=int(cls))
    polygon = np.asarray(coords, dtype=np.float32).reshape(-1, 2).clip(0, 1) * scale
    box = np.concatenate([polygon.min(axis=0), polygon.max(axis=0)]).astype(np.float32)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError("polygon has zero area")
    return Instance(box_xyxy=box, polygons=[polygon], category=int(cls))


def _parse_label_file(
    label_path: Path, width: int, height: int, skip_bad: bool, skipped: list[Skipped]
) -> list[Instance]:
    instances = []
    try:
        text = label_path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(label_path, f"cannot read label file: {exc}") from exc
    # splitlines() accepts a last line without its newline.
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            instances.append(parse_label_line(line, width, height))
        except ValueError as exc:
            if not skip_bad:
                raise DataError(label_path, str(exc), line_no) from None
            skipped.append(Skipped(label_path, str(exc), line_no))
    return instances


def _split_dirs(root: Path, split: str | None) -> tuple[Path, Path]:
    images, labels = root / "images", root / "labels"
    if split is None:
        return images, labels
    if not (images / split).is_dir():
        found = sorted(p.name for p in images.iterdir() if p.is_dir())
        raise DataError(images / split, f"no such split folder (found: {', '.join(found) or 'none'})")
    return images / split, labels / split


def load_yolo(
    root: str | Path, split: str | None = None, skip_bad: bool = False, verify_images: bool = False
) -> tuple[DetectionSet, list[Skipped]]:
    """Read a YOLO folder; `split` picks `images/<split>`, None reads every image under `images/`.

    `verify_images` decodes every image (at reduced size) instead of only reading its header.
    """
    root = Path(root)
    if not is_yolo_folder(root):
        raise DataError(root, "not a YOLO folder (needs images/ and labels/)")
    image_dir, label_dir = _split_dirs(root, split)
    image_paths = sorted(p for p in image_dir.rglob("*") if p.is_file() and is_image(p))
    label_paths = sorted(label_dir.rglob("*.txt")) if label_dir.is_dir() else []

    by_key = {p.relative_to(image_dir).with_suffix(""): p for p in image_paths}
    skipped: list[Skipped] = []
    for label_path in label_paths:
        if label_path.relative_to(label_dir).with_suffix("") not in by_key:
            if not skip_bad:
                raise DataError(label_path, f"label without an image (no {label_path.stem}.* under {image_dir})")
            skipped.append(Skipped(label_path, "label without an image"))

    frames: list[Frame] = []
    for image_path in tqdm(image_paths, desc=f"reading {root.name}", unit="img", disable=None, leave=False):
        size = size_or_skip(image_path, verify_images, skip_bad, skipped)
        if size is None:
            continue
        width, height = size
        label_path = label_dir / image_path.relative_to(image_dir).with_suffix(".txt")
        instances = (
            _parse_label_file(label_path, width, height, skip_bad, skipped) if label_path.is_file() else []
        )
        frames.append(
            Frame(image_path, width, height, instances, group=group_from_name(image_path.stem))
        )
    if not frames:
        raise DataError(image_dir, "no images found")
    has_masks = any(inst.polygons for f in frames for inst in f.instances)
    fmt = "yolo-seg" if has_masks else "yolo-detect"
    log.info("%s: %d frames (%s), %d skipped", root, len(frames), fmt, len(skipped))
    return DetectionSet(root=root, format=fmt, frames=frames, class_names=_class_names(root)), skipped
