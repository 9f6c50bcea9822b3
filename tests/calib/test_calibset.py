"""Calibration sets: stratified selection, runtime preprocessing, hashes and their checks."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from finprint.calib.calibset import build_calibset, load_calibset, stratified_select
from finprint.cli import main
from finprint.errors import FinprintError
from finprint.runtime.manifest import Preprocess
from finprint.runtime.preprocess import preprocess_image

PRE = Preprocess(width=64, height=64)


def _yolo_folder(root, n=24):
    """Frames of varied light / colour / fish count; the first half all dark and empty."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        level = 20 if i < n // 2 else int(rng.integers(60, 240))
        img = np.full((48, 80, 3), level, np.uint8)
        img[..., 2] = level // (1 + i % 3)  # vary the red channel: colour cast
        img += rng.integers(0, 30, img.shape, dtype=np.uint8)
        cv2.imwrite(str(root / "images" / f"g{i % 3}_clip_f{i}.jpg"), img)
        fish = 0 if i < n // 2 else i % 5
        (root / "labels" / f"g{i % 3}_clip_f{i}.txt").write_text("".join("0 0.5 0.5 0.2 0.2\n" for _ in range(fish)))
    return root


def test_stratified_select_covers_every_stratum_first():
    strata = ["a"] * 50 + ["b"] * 3 + ["c"]
    chosen = stratified_select(strata, 3)
    assert sorted(strata[i] for i in chosen) == ["a", "b", "c"]
    assert len(set(stratified_select(strata, 20))) == 20


def test_build_is_stratified_preprocessed_and_hashed(tmp_path):
    data = _yolo_folder(tmp_path / "data")
    calib = build_calibset(data, tmp_path / "calib", PRE, size=6)
    assert calib.tensors.shape == (6, 3, 64, 64)
    # Not the first N (all dark and empty): bright and populated frames are in the set too.
    assert any(item["fish"] > 0 for item in calib.items) and any(item["fish"] == 0 for item in calib.items)
    first = calib.items[0]
    expected, _ = preprocess_image(cv2.imread(first["source"]), PRE)
    np.testing.assert_array_equal(calib.tensors[0], expected)
    loaded = load_calibset(tmp_path / "calib", expect=PRE)
    assert loaded.set_sha256 == calib.set_sha256 and len(loaded) == 6
    again = build_calibset(data, tmp_path / "calib2", PRE, size=6)
    assert again.set_sha256 == calib.set_sha256  # same data, same seed: same set


def test_tampered_or_mismatched_set_is_refused(tmp_path):
    data = _yolo_folder(tmp_path / "data")
    build_calibset(data, tmp_path / "calib", PRE, size=4)
    with pytest.raises(FinprintError, match="model expects"):
        load_calibset(tmp_path / "calib", expect=Preprocess(width=128, height=128))
    manifest = json.loads((tmp_path / "calib" / "calib.json").read_text())
    manifest["items"][1]["tensor_sha256"] = "0" * 64
    (tmp_path / "calib" / "calib.json").write_text(json.dumps(manifest))
    with pytest.raises(FinprintError, match="does not match its sha256"):
        load_calibset(tmp_path / "calib")
    with pytest.raises(FinprintError, match="not a calibration set"):
        load_calibset(tmp_path / "nowhere")


def test_a_set_built_before_crop_mask_existed_still_verifies(tmp_path):
    """The set hash covers the preprocessing; crop_mask and crop_align joined it later and are left out while off."""
    import hashlib

    data = _yolo_folder(tmp_path / "data")
    calib = build_calibset(data, tmp_path / "calib", PRE, size=4)
    manifest = json.loads((tmp_path / "calib" / "calib.json").read_text())
    later = {"crop_mask", "crop_align"}
    before = {k: v for k, v in manifest["preprocess"].items() if k not in later}  # as an older build wrote it
    digest = hashlib.sha256(Preprocess.model_validate(before).model_dump_json(exclude=later).encode())
    for item in manifest["items"]:
        digest.update(item["tensor_sha256"].encode())
    assert digest.hexdigest() == calib.set_sha256
    manifest["preprocess"] = before
    (tmp_path / "calib" / "calib.json").write_text(json.dumps(manifest))
    assert load_calibset(tmp_path / "calib", expect=PRE).set_sha256 == calib.set_sha256
    masked = build_calibset(data, tmp_path / "masked", PRE.model_copy(update={"crop_mask": True}), size=4)
    assert masked.set_sha256 != calib.set_sha256  # on, it is part of what the set is
    with pytest.raises(FinprintError, match="masked crops"):
        load_calibset(tmp_path / "masked", expect=PRE)
    aligned = build_calibset(data, tmp_path / "aligned", PRE.model_copy(update={"crop_align": True}), size=4)
    assert aligned.set_sha256 not in (calib.set_sha256, masked.set_sha256)
    with pytest.raises(FinprintError, match="aligned crops"):
        load_calibset(tmp_path / "aligned", expect=PRE)


def test_cli_build(tmp_path, capsys):
    data = _yolo_folder(tmp_path / "data")
    code = main(["calib", "build", "--data", str(data), "--out", str(tmp_path / "c"), "--size", "5", "--imgsz", "64"])
    assert code == 0
    assert "5 images" in capsys.readouterr().out
    code = main(["calib", "build", "--data", str(data), "--out", str(tmp_path / "c3"), "--size", "30", "--imgsz", "64", "--exclude-groups", "g0,g1"])
    assert code == 0
    sources = [item["source"] for item in json.loads((tmp_path / "c3" / "calib.json").read_text())["items"]]
    assert sources and all("/g2_" in s for s in sources)
    assert main(["calib", "build", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "c2")]) == 2


def test_sources_mix_and_unlabelled_frames_calibrate(tmp_path):
    # A real-data student calibrates on labelled frames of the training habitats plus a farm's own
    # unlabelled tank frames (a plain image folder).
    from pathlib import Path

    from finprint.calib.calibset import list_candidates

    plain = tmp_path / "tank"
    plain.mkdir()
    for i in range(4):
        cv2.imwrite(str(plain / f"tank_{i}.jpg"), np.full((48, 64, 3), 40 * i, np.uint8))
    labelled = _yolo_folder(tmp_path / "yolo", n=6)
    assert all(c.fish is None for c in list_candidates(plain, "detector"))
    calib = build_calibset([labelled, plain], tmp_path / "calib", PRE, size=64)
    parents = {Path(it["source"]).parent for it in calib.items}
    assert plain in parents and len(parents) == 2 and len(calib) == 10
    assert main(["calib", "build", "--data", str(labelled), "--data", str(plain), "--out", str(tmp_path / "c2"), "--size", "5"]) == 0
