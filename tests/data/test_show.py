"""`finprint data show`: contact sheets of frame datasets (boxes, masks, identities) and re-ID crops."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from finprint.cli import main
from finprint.data.show import content_bounds, grid_columns, identity_palette, sample_frames
from finprint.data.types import Frame, Instance


def write_image(path: Path, width: int, height: int, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))
    return path


def farm(root: Path) -> Path:
    """A two-frame farm test split: one known fish with a mask, one unknown fish."""
    (root / "annotations").mkdir(parents=True)
    images, anns = [], []
    for i in range(2):
        write_image(root / "images" / "test" / f"vid{i}_000.jpg", 160, 120)
        images.append({"id": i, "file_name": f"vid{i}_000.jpg", "width": 160, "height": 120, "group": f"vid{i}"})
        ident, unknown = ("fish000", False) if i == 0 else ("unk000", True)
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [40, 30, 80, 60], "area": 2400,
                     "iscrowd": 0, "segmentation": [[40, 30, 120, 30, 120, 90, 40, 90]],
                     "individual_id": ident, "unknown": unknown})
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "fish"}]}
    (root / "annotations" / "instances_test.json").write_text(json.dumps(data))
    return root


def test_frame_sheet_draws_masks_in_identity_colour(tmp_path, capsys):
    root = farm(tmp_path / "farm")
    out = tmp_path / "sheets" / "farm.png"
    assert main(["data", "show", str(root), "--out", str(out), "--n", "2"]) == 0
    assert str(out) in capsys.readouterr().out
    sheet = cv2.imread(str(out))
    assert sheet is not None and sheet.shape[1] > 2 * 320
    # The known fish's mask is blended in its identity colour: some pixel is close to
    # 0.45 * colour + 0.55 * grey(90).
    expected = 0.45 * np.array(identity_palette({"fish000", "unk000"})["fish000"]) + 0.55 * 90
    closest = np.abs(sheet.astype(float) - expected).sum(axis=2).min()
    assert closest < 12


def test_reid_sheet_one_row_per_identity(tmp_path):
    root = tmp_path / "reid"
    for ident in ("fish000", "fish001", "fish002"):
        for k in range(3):
            write_image(root / "train" / f"{ident}_c{k}_{k}.jpg", 64, 32, value=40 * k + 60)
    write_image(root / "query" / "unk000_c1_0.jpg", 64, 32)
    out = tmp_path / "reid.png"
    assert main(["data", "show", str(root), "--out", str(out), "--n", "8"]) == 0
    sheet = cv2.imread(str(out))
    assert sheet is not None
    # 8 crops at 4 per identity = 2 identity rows of (96 + 22) px, plus header and gaps.
    assert 2 * 118 < sheet.shape[0] < 3 * 118 + 60


def test_sample_frames_spreads_over_groups_and_keeps_empty_share():
    frames = [Frame(Path(f"g{g}_{i}.jpg"), 10, 10, group=f"g{g}",
                    instances=[Instance(np.zeros(4, np.float32))] if i % 4 else [])
              for g in range(4) for i in range(40)]
    chosen = sample_frames(frames, 8, seed=0)
    assert len(chosen) == 8 and len({f.group for f in chosen}) == 4
    assert sum(1 for f in chosen if not f.instances) == 2  # a quarter of the frames are empty
    assert sample_frames(frames, 8, seed=0) == chosen


def test_content_bounds_trims_black_borders_only():
    image = np.zeros((100, 100, 3), np.uint8)
    image[20:80] = 120
    assert content_bounds(image) == (0, 20, 100, 80)
    assert content_bounds(np.full((50, 60, 3), 120, np.uint8)) == (0, 0, 60, 50)


def test_grid_columns_fills_rows():
    assert grid_columns(16, tile_aspect=1.6) == 4
    assert grid_columns(12, tile_aspect=1.0) in (3, 4)


def test_show_deepfish(deepfish, tmp_path):
    out = tmp_path / "deepfish.png"
    assert main(["data", "show", str(deepfish), "--out", str(out), "--n", "4", "--seed", "1"]) == 0
    assert cv2.imread(str(out)) is not None


def test_show_draws_an_exported_detectors_predictions_on_unlabelled_frames(tmp_path, caplog):
    # A farm's own tank footage has no labels: the sheet shows what the detector finds, and the log counts it.
    import logging

    pytest.importorskip("onnxruntime")
    from finprint.testing import make_toy_detector

    frames = tmp_path / "tank"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"cam{i}_frame_{i}.jpg"), np.full((96, 128, 3), 60 + 40 * i, np.uint8))
    model = make_toy_detector(tmp_path / "det.onnx", size=64)
    out = tmp_path / "sheet.png"
    with caplog.at_level(logging.INFO, logger="finprint.data.show"):
        assert main(["data", "show", str(frames), "--model", str(model), "--out", str(out), "--n", "3"]) == 0
    assert cv2.imread(str(out)) is not None
    assert any("fish found per frame" in r.getMessage() and "[1, 1, 1]" in r.getMessage() for r in caplog.records)
