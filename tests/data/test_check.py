"""`finprint data check`: counts and group split on good data; broken input exits 2 naming file (and line)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from finprint.cli import main


def write_image(path: Path, width: int = 80, height: int = 60) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((height, width, 3), 90, np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def yolo_folder(root: Path, labels: dict[str, str]) -> Path:
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        write_image(root / "images" / f"{stem}.jpg")
        (root / "labels" / f"{stem}.txt").write_text(text)
    return root


GOOD = "0 0.5 0.5 0.2 0.2\n"


def check(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["data", "check", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_good_yolo_prints_counts_and_split(tmp_path, capsys):
    root = yolo_folder(tmp_path / "ok", {"h1_a_0": GOOD + GOOD, "h1_a_1": "", "h2_b_0": GOOD, "h3_c_0": GOOD})
    code, out, err = check(capsys, root, "--split-groups", "h2")
    assert code == 0, err
    assert "images" in out and " 4" in out
    assert "boxes" in out and "empty frames" in out
    assert "val     1 groups" in out and "h2" in out
    assert "no group on both sides: OK" in out


@pytest.mark.parametrize(
    ("label", "line", "reason"),
    [
        (GOOD + "0 0.5 0.5 0.2\n", 2, "4 numbers"),  # a box line with a number missing
        ("0 0.5 1.5 0.2 0.2", 1, "outside [0, 1]"),  # pixel coordinates, not normalised
        (GOOD + GOOD + "0 0.1 0.1", 3, "polygon with 1 point"),
        ("0 0.1 0.1 0.5 0.1 0.5", 1, "odd number"),  # a polygon cut short
        ("fish 0.5 0.5 0.2 0.2", 1, "not a number"),
    ],
)
def test_bad_label_line_names_file_and_line(tmp_path, capsys, label, line, reason):
    root = yolo_folder(tmp_path / "bad", {"h1_a_0": GOOD, "h1_a_1": label})
    code, _, err = check(capsys, root)
    assert code == 2
    assert f"h1_a_1.txt:{line}:" in err and reason in err
    assert len(err.strip().splitlines()) == 1


def test_label_without_image(tmp_path, capsys):
    root = yolo_folder(tmp_path / "orphan", {"h1_a_0": GOOD})
    (root / "labels" / "h1_a_9.txt").write_text(GOOD)
    code, _, err = check(capsys, root)
    assert code == 2 and "h1_a_9.txt" in err and "label without an image" in err


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_unreadable_image(tmp_path, capsys, damage):
    root = yolo_folder(tmp_path / "img", {"h1_a_0": GOOD, "h1_a_1": GOOD})
    path = root / "images" / "h1_a_1.jpg"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not a jpeg at all" * 10, "truncated": data[: len(data) // 2], "empty": b""}[damage])
    code, _, err = check(capsys, root)
    assert code == 2 and "h1_a_1.jpg" in err and "unreadable image" in err


def test_coco_polygon_with_two_points(tmp_path, capsys):
    write_image(tmp_path / "images" / "v1_0.jpg")
    data = {
        "images": [{"id": 1, "file_name": "v1_0.jpg", "width": 80, "height": 60}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10],
                         "segmentation": [[1, 1, 11, 1]], "area": 10, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "fish"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(data))
    code, _, err = check(capsys, tmp_path / "coco.json")
    assert code == 2 and "coco.json" in err and "annotation 5" in err and "polygon with 2 points" in err


def test_empty_identity_folder(tmp_path, capsys):
    root = tmp_path / "crops"
    write_image(root / "nemo" / "1.jpg", 64, 32)
    write_image(root / "dory" / "1.jpg", 64, 32)
    (root / "marlin").mkdir()
    code, _, err = check(capsys, root)
    assert code == 2 and "marlin" in err and "empty identity folder" in err


def test_reid_market_counts(tmp_path, capsys):
    root = tmp_path / "reid"
    for name in ["train/fish000_c1_0.jpg", "train/fish001_c2_0.jpg", "gallery/fish000_c2_1.jpg",
                 "query/unk000_c1_0.jpg"]:
        write_image(root / name, 64, 32)
    code, out, err = check(capsys, root)
    assert code == 0, err
    assert "identities" in out and "1 unknown" in out and "cameras" in out


def test_skip_bad_lists_each_item_and_continues(tmp_path, capsys):
    root = yolo_folder(tmp_path / "mixed", {"h1_a_0": GOOD, "h1_a_1": GOOD + "0 0.5 0.5 0.2\n", "h2_b_0": GOOD})
    (root / "labels" / "h2_b_7.txt").write_text(GOOD)
    (root / "images" / "h2_b_0.jpg").write_bytes(b"\x00" * 20)
    code, out, err = check(capsys, root, "--skip-bad")
    assert code == 0, err
    assert "skipped 3 bad item(s)" in out
    assert "h1_a_1.txt:2:" in out and "h2_b_7.txt" in out and "h2_b_0.jpg" in out


def test_unknown_split_group_is_a_user_error(tmp_path, capsys):
    root = yolo_folder(tmp_path / "ok", {"h1_a_0": GOOD, "h2_b_0": GOOD})
    code, _, err = check(capsys, root, "--split-groups", "h9")
    assert code == 2 and "h9" in err


def test_farm_with_group_in_two_splits_fails(tmp_path, capsys):
    farm = tmp_path / "farm"
    (farm / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        write_image(farm / "images" / split / f"{split}_0.jpg")
        data = {"images": [{"id": 1, "file_name": f"{split}_0.jpg", "width": 80, "height": 60, "group": "vid0"}],
                "annotations": [], "categories": [{"id": 1, "name": "fish"}]}
        (farm / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    code, _, err = check(capsys, farm)
    assert code == 2 and "vid0" in err and "train and val" in err


def test_deepfish_acceptance(deepfish, capsys):
    start = time.perf_counter()
    code, out, err = check(capsys, deepfish, "--split-groups", "7398,9866")
    elapsed = time.perf_counter() - start
    assert code == 0, err
    assert "images           3,876" in out
    assert "boxes            8,038" in out
    assert "empty frames     1,283" in out
    assert "groups              14" in out
    assert "val     2 groups     727 images  7398 9866" in out
    assert "no group on both sides: OK" in out
    assert elapsed < 30, f"checking DeepFish took {elapsed:.1f} s"


def test_farm_yolo_labels_must_match_coco(tmp_path, capsys):
    farm = tmp_path / "farm"
    (farm / "annotations").mkdir(parents=True)
    write_image(farm / "images" / "train" / "seq0_0.jpg")
    (farm / "labels" / "train").mkdir(parents=True)
    (farm / "labels" / "train" / "seq0_0.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n0 0.6 0.6 0.9 0.6 0.9 0.9\n")
    data = {"images": [{"id": 1, "file_name": "seq0_0.jpg", "width": 80, "height": 60, "group": "seq0"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 6, 32, 24], "area": 100,
                             "iscrowd": 0, "segmentation": [[8, 6, 40, 6, 40, 30]], "individual_id": "fish000"}],
            "categories": [{"id": 1, "name": "fish"}]}
    (farm / "annotations" / "instances_train.json").write_text(json.dumps(data))
    code, _, err = check(capsys, farm)
    assert code == 2 and "seq0_0.txt" in err and "instances_train.json has 1" in err


def test_existing_yolo_splits_report_shared_groups(tmp_path, capsys):
    root = tmp_path / "split"
    for split, stems in {"train": ["h1_a_0", "h2_a_0"], "val": ["h2_a_1", "h3_a_0"]}.items():
        (root / "labels" / split).mkdir(parents=True)
        for stem in stems:
            write_image(root / "images" / split / f"{stem}.jpg")
            (root / "labels" / split / f"{stem}.txt").write_text(GOOD)
    code, out, err = check(capsys, root)
    assert code == 0, err
    assert "existing splits: train 2 groups, val 2 groups" in out
    assert "WARNING: 1 group(s) in more than one split (h2)" in out
