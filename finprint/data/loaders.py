"""One entry point for frame datasets, whatever their format on disk."""

from __future__ import annotations

from pathlib import Path

from finprint.data.coco import farm_splits, is_farm_folder, load_coco, load_farm
from finprint.data.reid import is_reid_folder
from finprint.data.types import DetectionSet, Skipped
from finprint.data.yolo import is_yolo_folder, load_yolo
from finprint.errors import DataError


def detect_format(path: str | Path) -> str:
    """"farm", "coco", "yolo" or "reid" for a dataset path; DataError when it is none of them."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        raise DataError(path, "a file must be a COCO .json; a dataset folder is expected otherwise")
    if is_farm_folder(path):
        return "farm"
    if is_yolo_folder(path):
        return "yolo"
    if is_reid_folder(path):
        return "reid"
    raise DataError(
        path,
        "not a dataset finprint knows: expected images/ + labels/ (YOLO), annotations/instances_*.json "
        "(farm), a COCO .json, or re-ID crops (<identity>_<camera>_*.jpg or one folder per identity)",
    )


def load_detection(
    path: str | Path, split: str | None = None, skip_bad: bool = False, verify_images: bool = False
) -> tuple[DetectionSet, list[Skipped]]:
    """A YOLO folder, a COCO JSON file, or a farm folder (`split` picks instances_<split>.json,
    default train) -> (DetectionSet, what skip_bad left out)."""
    path = Path(path)
    kind = detect_format(path)
    if kind == "farm":
        if split is None:
            split = "train" if "train" in farm_splits(path) else farm_splits(path)[0]
        return load_farm(path, split, skip_bad=skip_bad, verify_images=verify_images)
    if kind == "coco":
        return load_coco(path, split=split, skip_bad=skip_bad, verify_images=verify_images)
    if kind == "yolo":
        return load_yolo(path, split=split, skip_bad=skip_bad, verify_images=verify_images)
    raise DataError(path, "a re-ID crop folder, not a detection dataset (use load_reid)")
