"""`finprint data check`: load any supported dataset, decode every image, count what is there, and
show the group split that training would use (asserting no group lands on both sides)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from finprint.data.coco import farm_splits, load_farm
from finprint.data.loaders import detect_format, load_detection
from finprint.data.reid import load_reid
from finprint.data.splits import split_by_group
from finprint.data.types import DetectionSet, Frame, ReidSet, Skipped
from finprint.data.yolo import is_yolo_folder, load_yolo
from finprint.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    """What `data check` found: printable lines, the skipped items, and the counts tests read."""

    lines: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, line: str = "") -> None:
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines)


def _row(label: str, value: int, note: str = "") -> str:
    return f"  {label:<14}{value:>8,}" + (f"  {note}" if note else "")


def _group_list(groups: list[str], limit: int = 16) -> str:
    shown = " ".join(groups[:limit])
    return shown + (f" ... (+{len(groups) - limit})" if len(groups) > limit else "")


def frame_counts(frames: list[Frame]) -> dict[str, int]:
    instances = [inst for f in frames for inst in f.instances]
    return {
        "images": len(frames),
        "boxes": len(instances),
        "masks": sum(1 for inst in instances if inst.polygons),
        "empty_frames": sum(1 for f in frames if not f.instances),
        "groups": len({f.group for f in frames}),
        "identities": len({inst.individual_id for inst in instances if inst.individual_id is not None}),
        "unknown_identities": len({inst.individual_id for inst in instances if inst.unknown and inst.individual_id}),
    }


def _report_frames(report: CheckReport, title: str, frames: list[Frame]) -> dict[str, int]:
    counts = frame_counts(frames)
    groups = sorted({f.group for f in frames})
    report.add(title)
    report.add(_row("images", counts["images"]))
    report.add(_row("boxes", counts["boxes"]))
    report.add(_row("masks", counts["masks"]))
    report.add(_row("empty frames", counts["empty_frames"]))
    report.add(_row("groups", counts["groups"], _group_list(groups)))
    if counts["identities"]:
        report.add(_row("identities", counts["identities"], f"{counts['unknown_identities']} unknown"))
    return counts


def _report_group_split(
    report: CheckReport, root: Path, frames: list[Frame], split_groups: list[str] | None
) -> None:
    how = f"validation groups {', '.join(split_groups)}" if split_groups else "20 % of frames by seeded random groups"
    train, val = split_by_group(frames, val_groups=split_groups)
    train_groups, val_groups = sorted({f.group for f in train}), sorted({f.group for f in val})
    shared = set(train_groups) & set(val_groups)
    if shared:  # split_by_group asserts this too; the check must never pass silently
        raise DataError(root, f"groups on both sides: {sorted(shared)}")
    report.add(f"group split ({how}):")
    report.add(f"  train {len(train_groups):>3} groups {len(train):>7,} images  {_group_list(train_groups)}")
    report.add(f"  val   {len(val_groups):>3} groups {len(val):>7,} images  {_group_list(val_groups)}")
    report.add("  no group on both sides: OK")
    report.counts["split_train_images"], report.counts["split_val_images"] = len(train), len(val)


def _check_detection(report: CheckReport, dataset: DetectionSet, split_groups: list[str] | None) -> None:
    counts = _report_frames(report, f"{dataset.root}: {dataset.format} dataset", dataset.frames)
    report.counts.update(counts)
    if dataset.format.startswith("yolo"):
        _report_existing_splits(report, dataset)
    if len({f.group for f in dataset.frames}) >= 2 or split_groups:
        _report_group_split(report, dataset.root, dataset.frames, split_groups)


def _report_existing_splits(report: CheckReport, dataset: DetectionSet) -> None:
    """A YOLO folder that comes split (images/train, images/val ...): say whether its own split
    shares groups. A warning, not an error: a generic dataset's file-name prefix may not be a group."""
    by_split: dict[str, set[str]] = {}
    for frame in dataset.frames:
        parts = frame.image_path.relative_to(dataset.root / "images").parts
        if len(parts) > 1:
            by_split.setdefault(parts[0], set()).add(frame.group)
    if len(by_split) < 2:
        return
    names = sorted(by_split)
    report.add("existing splits: " + ", ".join(f"{n} {len(by_split[n])} groups" for n in names))
    shared = sorted({g for a in names for b in names if a < b for g in by_split[a] & by_split[b]})
    if shared:
        log.warning("%s: groups in more than one existing split: %s", dataset.root, shared[:10])
        report.add(f"  WARNING: {len(shared)} group(s) in more than one split ({_group_list(shared, 8)}): "
                   "neighbouring frames may leak; --split-groups gives a clean split")
    else:
        report.add("  no group in two splits: OK")


def _check_reid(report: CheckReport, dataset: ReidSet, split_groups: list[str] | None) -> None:
    crops = dataset.crops
    report.add(f"{dataset.root}: re-ID crops")
    report.add(_row("crops", len(crops)))
    report.add(_row("identities", len(dataset.identities), f"{len({c.identity for c in crops if c.unknown})} unknown"))
    report.add(_row("cameras", len({c.camera for c in crops if c.camera})))
    for subset, n in sorted(Counter(c.subset for c in crops if c.subset).items()):
        ids = len({c.identity for c in crops if c.subset == subset})
        report.add(_row(subset, n, f"crops of {ids} identities"))
    report.counts.update(
        crops=len(crops),
        identities=len(dataset.identities),
        cameras=len({c.camera for c in crops if c.camera}),
        unknown_identities=len({c.identity for c in crops if c.unknown}),
    )
    if not any(c.subset for c in crops) and len(dataset.identities) >= 2:
        train, val = split_by_group(crops, val_groups=split_groups)
        report.add(f"identity split: train {len({c.identity for c in train})} identities ({len(train):,} crops), "
                   f"val {len({c.identity for c in val})} identities ({len(val):,} crops); no identity on both sides: OK")


def _coco_cameras(json_path: Path) -> int:
    """Distinct `camera` values of a farm's COCO images (Frame does not carry the camera)."""
    images = json.loads(json_path.read_text()).get("images", [])
    return len({img["camera"] for img in images if img.get("camera") is not None})


def _check_farm(report: CheckReport, root: Path, split_groups: list[str] | None, skip_bad: bool) -> None:
    report.add(f"{root}: synthetic farm")
    by_split: dict[str, list[Frame]] = {}
    for split in farm_splits(root):
        dataset, skipped = load_farm(root, split, skip_bad=skip_bad, verify_images=True)
        report.skipped += skipped
        by_split[split] = dataset.frames
        counts = _report_frames(report, f"split {split}:", dataset.frames)
        counts["cameras"] = _coco_cameras(root / "annotations" / f"instances_{split}.json")
        report.add(_row("cameras", counts["cameras"]))
        for key, value in counts.items():
            report.counts[f"{split}_{key}"] = value
    all_frames = [f for frames in by_split.values() for f in frames]
    report.counts.update(frame_counts(all_frames))
    # The farm's own splits must already respect groups, and unknown fish belong to test only.
    report.add("farm splits by group:")
    for a in by_split:
        for b in by_split:
            if a < b:
                shared = {f.group for f in by_split[a]} & {f.group for f in by_split[b]}
                if shared:
                    raise DataError(root, f"groups in both {a} and {b}: {sorted(shared)[:5]}")
    report.add("  no group in two splits: OK")
    if is_yolo_folder(root):
        _check_farm_yolo_labels(report, root, by_split, skip_bad)
    for split in ("train", "val"):
        unknown = {i.individual_id for f in by_split.get(split, []) for i in f.instances if i.unknown}
        if unknown:
            raise DataError(root / "annotations" / f"instances_{split}.json", f"unknown individuals in {split}: {sorted(unknown)[:5]}")
    if split_groups:
        _report_group_split(report, root, all_frames, split_groups)
    if (root / "reid").is_dir():
        reid, skipped = load_reid(root / "reid", skip_bad=skip_bad, verify_images=True)
        report.skipped += skipped
        train_unknown = [c for c in reid.crops if c.subset == "train" and c.identity.startswith("unk")]
        if train_unknown:
            raise DataError(train_unknown[0].path, "an unknown individual's crop in reid/train")
        _check_reid(report, reid, None)


def _check_farm_yolo_labels(
    report: CheckReport, root: Path, by_split: dict[str, list[Frame]], skip_bad: bool
) -> None:
    """The farm's YOLO-seg labels must describe the same instances as its COCO files."""
    for split, frames in by_split.items():
        if not (root / "images" / split).is_dir():
            continue
        yolo, skipped = load_yolo(root, split, skip_bad=skip_bad)
        report.skipped += skipped
        coco_counts = {f.image_path.name: len(f.instances) for f in frames}
        for frame in yolo.frames:
            expected = coco_counts.get(frame.image_path.name)
            if expected is not None and expected != len(frame.instances):
                label = root / "labels" / split / f"{frame.image_path.stem}.txt"
                raise DataError(label, f"{len(frame.instances)} instances, but instances_{split}.json has {expected}")
    report.add("  YOLO labels agree with the COCO annotations: OK")


def check_dataset(path: str | Path, split_groups: list[str] | None = None, skip_bad: bool = False) -> CheckReport:
    """Validate a dataset of any supported format; DataError on the first bad item unless skip_bad."""
    path = Path(path)
    report = CheckReport()
    kind = detect_format(path)
    if kind == "farm":
        _check_farm(report, path, split_groups, skip_bad)
    elif kind == "reid":
        reid, report.skipped = load_reid(path, skip_bad=skip_bad, verify_images=True)
        _check_reid(report, reid, split_groups)
    else:
        dataset, report.skipped = load_detection(path, skip_bad=skip_bad, verify_images=True)
        _check_detection(report, dataset, split_groups)
    if report.skipped:
        report.add(f"skipped {len(report.skipped)} bad item(s):")
        report.lines += [f"  {s}" for s in report.skipped]
    return report
