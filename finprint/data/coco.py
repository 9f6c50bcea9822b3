"""COCO instance JSON (polygons or RLE masks) and farm folders (`annotations/instances_<split>.json`).

Farm annotations carry `individual_id` and `unknown`; farm images carry `camera` and `group`.
A plain COCO file without `group` falls back to the file-name prefix, as for YOLO folders.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from finprint.data.image_header import size_or_skip
from finprint.data.types import DetectionSet, Frame, Instance, Skipped
from finprint.data.yolo import group_from_name
from finprint.errors import DataError, FinprintError

log = logging.getLogger(__name__)

# Boxes may poke out of the image by rounding; more than this is a labelling error.
_BOX_TOLERANCE_PX = 1.0


def is_farm_folder(path: Path) -> bool:
    return path.is_dir() and any((path / "annotations").glob("instances_*.json"))


def farm_splits(path: Path) -> list[str]:
    """The splits a farm folder has annotations for, in train/val/test order first."""
    names = [p.stem.removeprefix("instances_") for p in (path / "annotations").glob("instances_*.json")]
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(names, key=lambda n: (order.get(n, 3), n))


def _rle_to_polygons(segmentation: dict, height: int, width: int) -> list[np.ndarray]:
    try:
        from pycocotools import mask as mask_utils
    except ModuleNotFoundError as exc:
        raise FinprintError(
            "this dataset has RLE masks, which need pycocotools; install it with: pip install 'finprint[train]'"
        ) from exc
    rle = segmentation
    if isinstance(rle.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(rle, height, width)
    mask = mask_utils.decode(rle)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).astype(np.float32) for c in contours if len(c) >= 3]


def _instance(ann: dict[str, Any], width: int, height: int, category_index: dict[Any, int]) -> Instance:
    """One COCO annotation -> Instance; ValueError names what is wrong."""
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4):
        raise ValueError(f"bbox must be [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise ValueError(f"bbox has zero or negative size ({w:g}x{h:g})")
    t = _BOX_TOLERANCE_PX
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        raise ValueError(f"bbox {bbox} lies outside the {width}x{height} image")
    box = np.array([max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)], dtype=np.float32)

    polygons: list[np.ndarray] | None = None
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg:
        polygons = []
        for part in seg:
            if len(part) % 2 or len(part) < 6:
                raise ValueError(f"polygon with {len(part) / 2:g} points (needs >= 3 x y pairs)")
            polygons.append(np.asarray(part, dtype=np.float32).reshape(-1, 2))
    elif isinstance(seg, dict):
        polygons = _rle_to_polygons(seg, height, width) or None
    individual = ann.get("individual_id")
    return Instance(
        box_xyxy=box,
        polygons=polygons,
        individual_id=None if individual is None else str(individual),
        unknown=bool(ann.get("unknown", False)),
        category=category_index.get(ann.get("category_id"), 0),
    )


def _image_candidates(json_path: Path, file_name: str, split: str | None) -> list[Path]:
    base = json_path.parent
    roots = [base, base / "images", base.parent / "images"]
    if split:
        roots.insert(0, base.parent / "images" / split)
    return [r / file_name for r in roots]


def load_coco(
    json_path: str | Path,
    split: str | None = None,
    skip_bad: bool = False,
    verify_images: bool = False,
    fmt: str = "coco",
) -> tuple[DetectionSet, list[Skipped]]:
    """Read one COCO instances file. Image files are looked up beside it, in `images/`, or in
    `../images/<split>/` (the farm layout)."""
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(json_path, f"not readable COCO JSON: {exc}") from exc
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DataError(json_path, "not a COCO instances file (needs 'images' and 'annotations')")
    skipped: list[Skipped] = []

    def bad(reason: str) -> None:
        if not skip_bad:
            raise DataError(json_path, reason)
        skipped.append(Skipped(json_path, reason))

    # Category ids are arbitrary in COCO; Instance.category is the index into class_names.
    categories = sorted(data.get("categories", []), key=lambda c: c.get("id", 0))
    category_index = {c.get("id"): k for k, c in enumerate(categories)}
    anns_by_image: dict[Any, list[dict]] = {}
    image_ids = {img.get("id") for img in data["images"]}
    for ann in data["annotations"]:
        if ann.get("image_id") not in image_ids:
            bad(f"annotation {ann.get('id')} refers to missing image_id {ann.get('image_id')}")
            continue
        anns_by_image.setdefault(ann["image_id"], []).append(ann)

    frames: list[Frame] = []
    for img in tqdm(data["images"], desc=f"reading {json_path.name}", unit="img", disable=None, leave=False):
        file_name = str(img.get("file_name", ""))
        candidates = _image_candidates(json_path, file_name, split)
        image_path = next((p for p in candidates if p.is_file()), None)
        if image_path is None or not file_name:
            bad(f"image {img.get('id')} ({file_name!r}) not found (looked in {candidates[0].parent})")
            continue
        size = size_or_skip(image_path, verify_images, skip_bad, skipped)
        if size is None:
            continue
        width, height = size
        if (img.get("width"), img.get("height")) not in ((width, height), (None, None)):
            bad(f"image {img.get('id')} says {img.get('width')}x{img.get('height')}, file is {width}x{height}")
            continue
        instances = []
        for ann in anns_by_image.get(img.get("id"), []):
            try:
                instances.append(_instance(ann, width, height, category_index))
            except (ValueError, TypeError) as exc:
                bad(f"annotation {ann.get('id')} (image {file_name}): {exc}")
        group = str(img.get("group") or group_from_name(Path(file_name).stem))
        frames.append(Frame(image_path, width, height, instances, group=group))
    if not frames:
        raise DataError(json_path, "no usable images")
    names = [str(c.get("name", c.get("id"))) for c in categories]
    log.info("%s: %d frames, %d skipped", json_path, len(frames), len(skipped))
    return DetectionSet(json_path, fmt, frames, class_names=names or ["fish"]), skipped


def load_farm(
    root: str | Path, split: str = "train", skip_bad: bool = False, verify_images: bool = False
) -> tuple[DetectionSet, list[Skipped]]:
    root = Path(root)
    json_path = root / "annotations" / f"instances_{split}.json"
    if not json_path.is_file():
        raise DataError(json_path, f"no annotations for split {split!r} (found: {', '.join(farm_splits(root))})")
    dataset, skipped = load_coco(json_path, split=split, skip_bad=skip_bad, verify_images=verify_images, fmt="farm")
    dataset.root = root
    return dataset, skipped
