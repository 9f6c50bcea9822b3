"""Re-identification crop folders.

Two layouts:
- Market-1501 naming, `<identity>_<camera>_<anything>.jpg`, either in one folder or in subsets
  `train/ gallery/ query/` (Market's own `bounding_box_train/ bounding_box_test/ query/` too).
  Market's junk identities `-1` (distractors) and `0000` (background) are skipped.
- One subfolder per identity (`<identity>/*.jpg`), camera unknown.
A crop is `unknown` when its identity never appears in the train subset (open-set query).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from tqdm import tqdm

from finprint.data.image_header import UnreadableImage, checked_size, is_image
from finprint.data.types import Crop, ReidSet, Skipped
from finprint.errors import DataError

log = logging.getLogger(__name__)

SUBSET_FOLDERS = {
    "train": "train",
    "gallery": "gallery",
    "query": "query",
    "bounding_box_train": "train",
    "bounding_box_test": "gallery",
}
JUNK_IDENTITIES = {"-1", "0000"}
_MARKET_CAMERA = re.compile(r"^(c\d+)s\d+$")  # Market's c1s1: camera 1, sequence 1


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p))


def is_reid_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    if any((path / name).is_dir() for name in SUBSET_FOLDERS):
        return True
    images = _images_in(path)
    if images:
        return all("_" in p.stem for p in images)
    subdirs = [d for d in path.iterdir() if d.is_dir()]
    return bool(subdirs) and not (path / "images").is_dir() and not (path / "annotations").is_dir()


def parse_market_name(stem: str) -> tuple[str, str]:
    """`0002_c1s1_000451_03` -> ("0002", "c1"); `fish003_c2_17` -> ("fish003", "c2")."""
    parts = stem.split("_")
    if len(parts) < 3 or not parts[0] or not parts[1]:
        raise ValueError("name must be <identity>_<camera>_<anything> (Market-1501 convention)")
    match = _MARKET_CAMERA.match(parts[1])
    return parts[0], match.group(1) if match else parts[1]


def _market_crops(
    folder: Path, subset: str, skip_bad: bool, verify_images: bool, skipped: list[Skipped]
) -> list[Crop]:
    crops = []
    for path in tqdm(_images_in(folder), desc=f"reading {folder.name}", unit="img", disable=None, leave=False):
        try:
            identity, camera = parse_market_name(path.stem)
            checked_size(path, verify_images)
        except (ValueError, UnreadableImage) as exc:
            reason = f"unreadable image: {exc}" if isinstance(exc, UnreadableImage) else str(exc)
            if not skip_bad:
                raise DataError(path, reason) from None
            skipped.append(Skipped(path, reason))
            continue
        if identity in JUNK_IDENTITIES:
            continue
        crops.append(Crop(path, identity, camera, subset))
    return crops


def _identity_folder_crops(
    root: Path, skip_bad: bool, verify_images: bool, skipped: list[Skipped]
) -> list[Crop]:
    crops = []
    for folder in sorted(d for d in root.iterdir() if d.is_dir()):
        images = _images_in(folder)
        if not images:
            if not skip_bad:
                raise DataError(folder, "empty identity folder (no images)")
            skipped.append(Skipped(folder, "empty identity folder (no images)"))
            continue
        for path in images:
            try:
                checked_size(path, verify_images)
            except UnreadableImage as exc:
                if not skip_bad:
                    raise DataError(path, f"unreadable image: {exc}") from None
                skipped.append(Skipped(path, f"unreadable image: {exc}"))
                continue
            crops.append(Crop(path, folder.name))
    return crops


def load_reid(
    path: str | Path, skip_bad: bool = False, verify_images: bool = False
) -> tuple[ReidSet, list[Skipped]]:
    """Read a re-ID crop folder (either layout); see the module docstring."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(root, "not a folder")
    skipped: list[Skipped] = []
    subsets = [(root / name, subset) for name, subset in SUBSET_FOLDERS.items() if (root / name).is_dir()]
    if subsets:
        crops = []
        for folder, subset in subsets:
            found = _market_crops(folder, subset, skip_bad, verify_images, skipped)
            if not found and not _images_in(folder):
                if not skip_bad:
                    raise DataError(folder, f"empty {subset} folder (no images)")
                skipped.append(Skipped(folder, f"empty {subset} folder (no images)"))
            crops += found
        train_ids = {c.identity for c in crops if c.subset == "train"}
        if train_ids:
            for crop in crops:
                crop.unknown = crop.identity not in train_ids
    elif _images_in(root):
        crops = _market_crops(root, "", skip_bad, verify_images, skipped)
    else:
        crops = _identity_folder_crops(root, skip_bad, verify_images, skipped)
    if not crops:
        raise DataError(root, "no re-ID crops found")
    log.info("%s: %d crops, %d identities, %d skipped", root, len(crops), len({c.identity for c in crops}), len(skipped))
    return ReidSet(root, crops), skipped
