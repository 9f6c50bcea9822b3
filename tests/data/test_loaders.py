"""Loaders: YOLO detect/seg, COCO (polygons and RLE), farm folders, re-ID folders, group splits."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from finprint.data import detect_format, load_detection, load_reid, split_by_group
from finprint.data.types import Crop, Frame
from finprint.errors import DataError, FinprintError


def write_image(path: Path, width: int = 80, height: int = 60) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((height, width, 3), np.uint8)
    cv2.rectangle(image, (10, 10), (width - 10, height - 10), (0, 160, 255), -1)
    assert cv2.imwrite(str(path), image)
    return path


def write_yolo(root: Path, labels: dict[str, str], split: str | None = None, size=(80, 60)) -> Path:
    """labels: image stem -> label file text (None = no label file)."""
    sub = Path(split) if split else Path()
    for stem, text in labels.items():
        write_image(root / "images" / sub / f"{stem}.jpg", *size)
        if text is not None:
            label = root / "labels" / sub / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(text)
    (root / "labels" / sub).mkdir(parents=True, exist_ok=True)
    return root


def test_yolo_detect_boxes_in_pixels_empty_frames_and_groups(tmp_path):
    root = write_yolo(
        tmp_path / "yolo",
        {
            "7117_clipA_f000001": "0 0.5 0.5 0.25 0.5\n0 0.1 0.2 0.1 0.2",  # last line without newline
            "7117_clipA_f000002": "",  # empty file = no fish
            "9866_clipB_f000001": None,  # no label file = no fish
        },
    )
    dataset, skipped = load_detection(root)
    assert dataset.format == "yolo-detect" and not skipped and not dataset.has_masks
    frames = {f.image_path.stem: f for f in dataset.frames}
    first = frames["7117_clipA_f000001"]
    assert (first.width, first.height) == (80, 60)
    assert len(first.instances) == 2
    np.testing.assert_allclose(first.instances[0].box_xyxy, [30, 15, 50, 45], atol=1e-4)
    np.testing.assert_allclose(first.instances[1].box_xyxy, [4, 6, 12, 18], atol=1e-4)
    assert not frames["7117_clipA_f000002"].instances and not frames["9866_clipB_f000001"].instances
    assert {f.group for f in dataset.frames} == {"7117", "9866"}
    assert detect_format(root) == "yolo"


def test_yolo_seg_polygons_and_split_folders(tmp_path):
    root = tmp_path / "seg"
    write_yolo(root, {"farmA_0001": "0 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5\n"}, split="train")
    write_yolo(root, {"farmB_0001": "0 0.5 0.5 0.2 0.2\n"}, split="val")
    everything, _ = load_detection(root)
    assert everything.format == "yolo-seg" and everything.has_masks
    assert len(everything.frames) == 2
    val, _ = load_detection(root, split="val")
    assert [f.group for f in val.frames] == ["farmB"]
    train, _ = load_detection(root, split="train")
    inst = train.frames[0].instances[0]
    np.testing.assert_allclose(inst.polygons[0], [[8, 6], [40, 6], [40, 30], [8, 30]], atol=1e-4)
    np.testing.assert_allclose(inst.box_xyxy, [8, 6, 40, 30], atol=1e-4)
    with pytest.raises(DataError, match="no such split"):
        load_detection(root, split="test")


def _coco(images: list[dict], annotations: list[dict]) -> dict:
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "fish"}]}


def test_coco_polygons_rle_identities_and_groups(tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_utils

    write_image(tmp_path / "images" / "camA_0001.jpg", 80, 60)
    mask = np.zeros((60, 80), np.uint8, order="F")
    mask[20:40, 30:70] = 1
    rle = mask_utils.encode(mask)
    rle["counts"] = rle["counts"].decode()
    data = _coco(
        [{"id": 7, "file_name": "camA_0001.jpg", "width": 80, "height": 60, "group": "video3", "camera": "c1"}],
        [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 5, 20, 10], "area": 200, "iscrowd": 0,
             "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]], "individual_id": "fish001", "unknown": False},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [30, 20, 40, 20], "area": 800, "iscrowd": 0,
             "segmentation": rle, "individual_id": "unk000", "unknown": True},
        ],
    )
    json_path = tmp_path / "instances.json"
    json_path.write_text(json.dumps(data))
    dataset, skipped = load_detection(json_path)
    assert dataset.format == "coco" and not skipped
    frame = dataset.frames[0]
    assert frame.group == "video3"
    known, unknown = frame.instances
    assert known.individual_id == "fish001" and not known.unknown
    np.testing.assert_allclose(known.box_xyxy, [10, 5, 30, 15])
    assert unknown.unknown and unknown.individual_id == "unk000"
    assert known.category == 0 and dataset.class_names == ["fish"]
    polygon = unknown.polygons[0]
    assert polygon.min(axis=0).tolist() == [30, 20] and polygon.max(axis=0).tolist() == [69, 39]


def test_farm_folder_picks_split(tmp_path):
    farm = tmp_path / "farm"
    (farm / "annotations").mkdir(parents=True)
    for split in ("train", "test"):
        write_image(farm / "images" / split / f"{split}_cam0_000.jpg")
        data = _coco(
            [{"id": 1, "file_name": f"{split}_cam0_000.jpg", "width": 80, "height": 60, "group": f"vid_{split}"}],
            [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0,
              "segmentation": [[1, 1, 11, 1, 11, 11]], "individual_id": "fish000", "unknown": False}],
        )
        (farm / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    assert detect_format(farm) == "farm"
    train, _ = load_detection(farm)
    test, _ = load_detection(farm, split="test")
    assert train.format == "farm" and train.frames[0].group == "vid_train"
    assert test.frames[0].group == "vid_test" and test.frames[0].instances[0].polygons is not None


def test_reid_market_subsets_unknown_and_junk(tmp_path):
    root = tmp_path / "reid"
    for name in ["train/fish000_c1_0.jpg", "train/fish001_c2_0.jpg", "gallery/fish000_c2_1.jpg",
                 "query/fish001_c1_1.jpg", "query/unk000_c1_0.jpg", "gallery/-1_c1_0.jpg",
                 "gallery/0000_c1s2_000151_01.jpg", "query/0002_c3s1_000451_03.jpg"]:
        write_image(root / name, 64, 32)
    reid, skipped = load_reid(root)
    assert not skipped and detect_format(root) == "reid"
    by_name = {c.path.name: c for c in reid.crops}
    assert "-1_c1_0.jpg" not in by_name and "0000_c1s2_000151_01.jpg" not in by_name
    assert by_name["unk000_c1_0.jpg"].unknown and by_name["unk000_c1_0.jpg"].subset == "query"
    assert not by_name["fish001_c1_1.jpg"].unknown
    assert by_name["0002_c3s1_000451_03.jpg"].camera == "c3"
    assert reid.identities == ["0002", "fish000", "fish001", "unk000"]


def test_reid_one_folder_and_identity_folders(tmp_path):
    flat = tmp_path / "flat"
    for name in ["a_c1_0.jpg", "a_c2_1.jpg", "b_c1_0.jpg"]:
        write_image(flat / name, 64, 32)
    reid, _ = load_reid(flat)
    assert reid.identities == ["a", "b"] and {c.subset for c in reid.crops} == {""}

    folders = tmp_path / "folders"
    for name in ["nemo/1.jpg", "nemo/2.jpg", "dory/1.jpg"]:
        write_image(folders / name, 64, 32)
    reid, _ = load_reid(folders)
    assert reid.identities == ["dory", "nemo"] and len(reid.crops) == 3


def _frames(groups: dict[str, int]) -> list[Frame]:
    return [Frame(Path(f"{g}_{i}.jpg"), 10, 10, group=g) for g, n in groups.items() for i in range(n)]


def test_split_by_group_never_shares_a_group():
    frames = _frames({"a": 10, "b": 5, "c": 20, "d": 3, "e": 12})
    train, val = split_by_group(frames, val_groups=["b", "d"])
    assert {f.group for f in val} == {"b", "d"} and len(train) == 42
    for seed in range(5):
        train, val = split_by_group(frames, val_fraction=0.3, seed=seed)
        assert not {f.group for f in train} & {f.group for f in val}
        assert len(val) >= 0.3 * len(frames) and train
    assert split_by_group(frames, seed=1) == split_by_group(frames, seed=1)
    with pytest.raises(FinprintError, match="not in the data"):
        split_by_group(frames, val_groups=["zz"])
    with pytest.raises(FinprintError, match="1 group"):
        split_by_group(_frames({"only": 5}))


def test_split_crops_by_identity():
    crops = [Crop(Path(f"{i}_{k}.jpg"), identity=f"fish{i}") for i in range(6) for k in range(3)]
    train, val = split_by_group(crops, val_fraction=0.34)
    assert val and not {c.identity for c in train} & {c.identity for c in val}


def test_deepfish_counts_and_habitat_split(deepfish):
    dataset, skipped = load_detection(deepfish)
    assert not skipped
    assert len(dataset.frames) == 3876
    assert sum(len(f.instances) for f in dataset.frames) == 8038
    assert sum(1 for f in dataset.frames if not f.instances) == 1283
    assert len({f.group for f in dataset.frames}) == 14
    train, val = split_by_group(dataset.frames, val_groups=["7398", "9866"])
    assert {f.group for f in val} == {"7398", "9866"}
    assert not {f.group for f in train} & {f.group for f in val}
