"""The synthetic farm: contract layout, loadable COCO with non-empty masks, open-set rules, determinism."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from finprint.data import cli_synth
from finprint.data.synth import (
    SynthConfig,
    embedder_crop_flags,
    reid_crops_aligned,
    reid_crops_masked,
    synthesize,
    write_tuning_videos,
)
from finprint.data.views import render_reid_views
from finprint.errors import ConfigError


def _small(out: Path, seed: int = 1) -> SynthConfig:
    return SynthConfig(out, images=30, individuals=6, unknown=2, video_seconds=1.0, width=256, height=176, seed=seed)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("farm") / "farm"
    return out, synthesize(_small(out))


def test_layout_matches_the_contract(farm: tuple[Path, dict]) -> None:
    out, summary = farm
    meta = json.loads((out / "farm.json").read_text())
    assert meta["seed"] == 1
    ids = {ind["id"]: ind for ind in meta["individuals"]}
    assert sorted(ids) == [f"fish{i:03d}" for i in range(6)] + ["unk000", "unk001"]
    assert all(ind["length_cm"] > 0 and ind["body"] for ind in ids.values())
    assert {ind["unknown"] for i, ind in ids.items() if i.startswith("unk")} == {True}
    assert [c["id"] for c in meta["cameras"]] == [1, 2] and all(c["px_per_cm"] > 0 for c in meta["cameras"])
    assert sum(summary["images"].values()) == 30 and all(summary["images"][s] > 0 for s in ("train", "val", "test"))
    for split in ("train", "val", "test"):
        images = sorted(p.stem for p in (out / "images" / split).glob("*.jpg"))
        labels = sorted(p.stem for p in (out / "labels" / split).glob("*.txt"))
        assert images == labels and len(images) == summary["images"][split]
    groups = {s: set(meta["split"][s]) for s in ("train", "val", "test")}
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])


def test_coco_loads_and_every_annotation_has_a_mask_box_and_identity(farm: tuple[Path, dict]) -> None:
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    out, _ = farm
    for split in ("train", "val", "test"):
        coco = COCO(str(out / "annotations" / f"instances_{split}.json"))
        assert coco.getCatIds() == [1]
        anns = coco.dataset["annotations"]
        assert anns, split
        for ann in anns:
            assert coco.annToMask(ann).sum() > 0
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and ann["iscrowd"] == 0 and ann["area"] > 0
            assert isinstance(ann["individual_id"], str) and ann["individual_id"]
            assert ann["unknown"] == ann["individual_id"].startswith("unk")
            assert ann["unknown"] is False or split == "test"
        for img in coco.dataset["images"]:
            assert img["camera"] in (1, 2) and img["group"]
            assert (out / "images" / split / img["file_name"]).is_file()


def test_yolo_seg_labels_are_normalised_polygons(farm: tuple[Path, dict]) -> None:
    out, _ = farm
    lines = [ln for p in (out / "labels").rglob("*.txt") for ln in p.read_text().splitlines()]
    assert lines
    for ln in lines:
        parts = ln.split()
        assert parts[0] == "0"
        coords = np.asarray(parts[1:], float)
        assert len(coords) >= 6 and len(coords) % 2 == 0
        assert coords.min() >= 0 and coords.max() <= 1


def test_unknown_fish_only_in_query_and_every_known_query_has_a_gallery(farm: tuple[Path, dict]) -> None:
    out, summary = farm

    def ids(subset: str) -> set[str]:
        return {p.name.split("_")[0] for p in (out / "reid" / subset).glob("*.jpg")}

    assert summary["reid"]["train"] > 0 and summary["reid"]["query"] > 0
    assert not any(i.startswith("unk") for i in ids("train") | ids("gallery"))
    assert {i for i in ids("query") if not i.startswith("unk")} <= ids("gallery")
    for p in (out / "reid").rglob("*.jpg"):
        ident, cam, n = p.stem.split("_")
        assert cam in ("c1", "c2") and n.isdigit()


def test_video_ground_truth_matches_the_clip(farm: tuple[Path, dict]) -> None:
    out, _ = farm
    meta = json.loads((out / "farm.json").read_text())
    for cam in meta["cameras"]:
        gt = json.loads((out / "videos" / f"cam{cam['id']}.json").read_text())
        assert gt["px_per_cm"] == cam["px_per_cm"] and gt["camera"] == cam["id"]
        cap = cv2.VideoCapture(str(out / "videos" / f"cam{cam['id']}.mp4"))
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (gt["height"], gt["width"], 3)
            n += 1
        cap.release()
        assert n == len(gt["frames"]) == round(1.0 * gt["fps"])
        insts = [i for f in gt["frames"] for i in f["instances"]]
        assert insts
        for inst in insts:
            x0, y0, x1, y1 = inst["box_xyxy"]
            assert x1 > x0 and y1 > y0 and len(inst["polygon"]) >= 3 and inst["length_cm"] > 0


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    cfg = _small(tmp_path / "a", seed=5)
    cfg.images, cfg.video_seconds = 12, 0.5
    synthesize(cfg)
    cfg.out = tmp_path / "b"
    synthesize(cfg)
    a, b = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert a == b and any(k.endswith(".mp4") for k in a)
    cfg.out, cfg.seed = tmp_path / "c", 6
    synthesize(cfg)
    assert _hashes(tmp_path / "c")["farm.json"] != a["farm.json"]


def test_refuses_to_overwrite_without_the_flag(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError):
        synthesize(SynthConfig(tmp_path / "busy", images=6))
    cfg = SynthConfig(tmp_path / "busy", images=6, overwrite=True)
    with pytest.raises(ConfigError):  # not a farm: never deleted
        synthesize(cfg)
    assert (tmp_path / "busy" / "notes.txt").exists()


def test_cli_module_parses_and_writes_a_farm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    cli_synth.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "f"), "--images", "6", "--individuals", "3", "--unknown", "1",
                              "--video-seconds", "0", "--size", "160x128", "--seed", "2"])
    assert cli_synth.run(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sum(summary["images"].values()) == 6 and min(summary["images"].values()) > 0 and summary["videos"] == []
    assert cv2.imread(str(next((tmp_path / "f" / "images").rglob("*.jpg")))).shape == (128, 160, 3)
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--size", "big"])


def test_cli_defaults_are_the_config_defaults() -> None:
    """`finprint data synth` with no options writes what SynthConfig() describes (a mismatch once put
    enrolment-clip crops into a farm's reid/train that the config said were off)."""
    parser = argparse.ArgumentParser()
    cli_synth.add_arguments(parser)
    args = parser.parse_args(["--out", "x"])
    cfg = SynthConfig(Path("x"))
    pairs = {"images": "images", "individuals": "individuals", "unknown": "unknown", "video_seconds": "video_seconds",
             "seed": "seed", "enrol_views": "enrol_views", "enrol_clips": "enrol_clip_seconds",
             "enrol_clip_crop_every": "enrol_clip_crop_every", "aux_individuals": "aux_individuals", "aux_views": "aux_views",
             "aux_clips": "aux_clip_seconds", "aux_clip_fish": "aux_clip_fish", "aux_clip_crop_every": "aux_clip_crop_every",
             "tuning_videos": "tuning_video_seconds", "tuning_strangers": "tuning_strangers",
             "tuning_lookalikes": "tuning_lookalikes",
             "enrol_clips_every_camera": "enrol_clip_every_camera", "reid_min_visible": "reid_min_visible",
             "reid_masked": "reid_masked", "reid_mask_coarse": "reid_mask_coarse", "reid_aligned": "reid_aligned"}
    for arg, field_name in pairs.items():
        assert getattr(args, arg) == getattr(cfg, field_name), arg
    assert args.size == (cfg.width, cfg.height)


def test_reid_views_are_quick_and_shaped_for_the_embedder() -> None:
    views = render_reid_views(4, 3, seed=0)
    assert views.crops.shape == (12, 64, 128, 3) and views.crops.dtype == np.uint8
    assert views.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert views.view_index.tolist() == [0, 1, 2] * 4
    again = render_reid_views(4, 3, seed=0)
    assert np.array_equal(views.crops, again.crops)


def test_acceptance_farm_is_fast_and_reproducible(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        start = time.monotonic()
        synthesize(SynthConfig(tmp_path / name, images=200, individuals=20, unknown=5, video_seconds=5, seed=3))
        runs.append(time.monotonic() - start)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")
    assert min(runs) < 60, runs


def test_enrolment_and_auxiliary_views_go_to_reid_train_and_change_nothing_else(farm: tuple[Path, dict], tmp_path: Path) -> None:
    base, summary = farm
    cfg = _small(tmp_path / "farm")
    cfg.enrol_views, cfg.aux_individuals, cfg.aux_views = 2, 3, 4
    extra = synthesize(cfg)
    assert extra["reid"]["train"] == summary["reid"]["train"] + 6 * 2 + 3 * 4
    train = [p.name.split("_")[0] for p in (tmp_path / "farm" / "reid" / "train").glob("*.jpg")]
    assert sorted(i for i in set(train) if i.startswith("aux")) == ["aux000", "aux001", "aux002"]
    assert all(train.count(f"aux00{k}") == 4 for k in range(3))
    before, after = _hashes(base), _hashes(tmp_path / "farm")
    # Frames, labels, videos and the test crops are the same bytes: views use their own random stream.
    for name in before:
        if name.startswith(("images", "labels", "videos", "reid/gallery", "reid/query")):
            assert after[name] == before[name], name


def test_auxiliary_clips_add_video_crops_of_aux_fish_only_and_change_nothing_else(tmp_path: Path) -> None:
    stills = _small(tmp_path / "stills")
    stills.aux_individuals, stills.aux_views = 4, 1
    base = synthesize(stills)
    cfg = _small(tmp_path / "clips")
    cfg.aux_individuals, cfg.aux_views = 4, 1
    cfg.aux_clip_seconds, cfg.aux_clip_fish, cfg.aux_clip_crop_every, cfg.jobs = 1.0, 2, 2, 2
    extra = synthesize(cfg)
    before, after = _hashes(tmp_path / "stills"), _hashes(tmp_path / "clips")
    new = sorted(set(after) - set(before))
    assert len(new) == extra["reid"]["train"] - base["reid"]["train"] > 0
    assert all(n.startswith("reid/train/aux") for n in new)  # the clips themselves are not kept
    # Every aux fish was filmed (two clips of two), and crops of a clip are cut from the decoded video, at
    # most one per fish every second frame of a 10-frame clip.
    per_fish = {f"aux00{k}": sum(n.startswith(f"reid/train/aux00{k}_") for n in new) for k in range(4)}
    assert all(1 <= n <= 5 for n in per_fish.values()), per_fish
    changed = [name for name, digest in before.items() if after[name] != digest]
    assert changed == ["farm.json"], changed  # which records the options and counts
    crop = cv2.imread(str(tmp_path / "clips" / new[0]))
    assert crop is not None and crop.shape[0] > 8 and crop.shape[1] > 8
    cfg.out, cfg.jobs = tmp_path / "one-process", 1  # the clips render in parallel: same bytes in one process
    synthesize(cfg)
    assert _hashes(tmp_path / "one-process") == after


def test_a_lower_reid_visibility_adds_partly_hidden_crops_and_changes_no_frame(farm: tuple[Path, dict], tmp_path: Path) -> None:
    base, summary = farm
    cfg = _small(tmp_path / "farm")
    cfg.reid_min_visible = 0.3
    extra = synthesize(cfg)
    hidden = [a for a in json.loads((base / "annotations" / "instances_train.json").read_text())["annotations"]
              if 0.3 <= a["visible_fraction"] < 0.6]
    assert hidden, "the small farm has no partly hidden fish in train/"
    assert extra["reid"]["train"] == summary["reid"]["train"] + len(hidden)
    assert extra["reid"]["query"] >= summary["reid"]["query"]
    before, after = _hashes(base), _hashes(tmp_path / "farm")
    for name in before:
        if name.startswith(("images", "labels", "videos", "annotations")):
            assert after[name] == before[name], name
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="reid_min_visible"):
            synthesize(SynthConfig(tmp_path / "bad", reid_min_visible=bad))


def test_masked_reid_crops_show_only_their_fish_and_change_no_frame(farm: tuple[Path, dict], tmp_path: Path) -> None:
    from finprint.runtime.crops import MASK_FILL_BGR

    base, summary = farm
    cfg = _small(tmp_path / "farm")
    cfg.reid_masked, cfg.enrol_views, cfg.aux_individuals, cfg.aux_views, cfg.aux_clip_seconds = True, 1, 2, 1, 1.0
    extra = synthesize(cfg)
    assert reid_crops_masked(tmp_path / "farm") and reid_crops_masked(tmp_path / "farm" / "reid")
    assert not reid_crops_masked(base) and not reid_crops_masked(None)
    assert extra["reid"]["gallery"] == summary["reid"]["gallery"] and extra["reid"]["query"] == summary["reid"]["query"]
    crops = sorted((tmp_path / "farm" / "reid").rglob("*.jpg"))
    kinds = {p.name[:3] for p in crops}
    assert {"fis", "aux", "unk"} <= kinds, kinds  # frames, views and clips all masked below
    for path in crops:
        crop = cv2.imread(str(path)).astype(np.int16)
        corners = np.concatenate([crop[:2, :2].reshape(-1, 3), crop[-2:, -2:].reshape(-1, 3)])
        # A corner of the grown box is open water or another fish, never this one: now the fill (JPEG-near).
        assert (np.abs(corners - MASK_FILL_BGR).max(axis=1) < 24).mean() >= 0.5, path.name
    before, after = _hashes(base), _hashes(tmp_path / "farm")
    for name in before:
        if name.startswith(("images", "labels", "videos", "annotations")):
            assert after[name] == before[name], name


def test_aligned_reid_crops_lie_along_their_fish_and_change_no_frame(farm: tuple[Path, dict], tmp_path: Path) -> None:
    base, summary = farm
    cfg = _small(tmp_path / "farm")
    cfg.reid_aligned = True
    extra = synthesize(cfg)
    assert reid_crops_aligned(tmp_path / "farm" / "reid") and not reid_crops_aligned(base) and not reid_crops_aligned(None)
    assert embedder_crop_flags(tmp_path / "farm") == {"crop_mask": False, "crop_align": True}
    assert extra["reid"] == summary["reid"]  # the same crops, cut another way

    def aspects(root: Path) -> np.ndarray:
        shapes = [cv2.imread(str(p)).shape for p in sorted((root / "reid").rglob("*.jpg"))]
        return np.array([w / h for h, w, _ in shapes])

    plain, aligned = aspects(base), aspects(tmp_path / "farm")
    # A fish is longer than it is deep: turned along it, nearly every crop is wide; its box often is not.
    assert (aligned > 1.3).mean() > 0.9 and np.median(aligned) > 1.3 * np.median(plain), (np.median(plain), np.median(aligned))
    before, after = _hashes(base), _hashes(tmp_path / "farm")
    for name in before:
        if name.startswith(("images", "labels", "videos", "annotations")):
            assert after[name] == before[name], name


def test_a_coarse_reid_mask_is_a_smoothed_ground_truth_mask() -> None:
    from finprint.data.synth import _reid_mask

    mask = np.zeros((120, 200), bool)
    mask[40:80, 30:170] = True  # the body
    mask[58:62, 170:190] = True  # a thin tail fin, thinner than the coarse grid
    cfg = SynthConfig(Path("x"), reid_masked=True)
    assert _reid_mask(SynthConfig(Path("x")), mask=mask) is None and _reid_mask(cfg, mask=mask) is mask
    assert _reid_mask(SynthConfig(Path("x"), reid_aligned=True), mask=mask) is mask
    cfg.reid_mask_coarse = 10
    coarse = _reid_mask(cfg, mask=mask)
    assert coarse.shape == mask.shape and coarse.dtype == bool
    assert coarse[45:75, 40:160].all() and not coarse[:30].any()  # the body stays, open water stays out
    assert not coarse[58:62, 182:190].any()  # the thin fin is lost, as a stride-8 prototype loses it
    with pytest.raises(ConfigError, match="reid_mask_coarse"):
        SynthConfig(Path("x"), reid_masked=True, reid_mask_coarse=-1).validate()
    with pytest.raises(ConfigError, match="needs reid_masked or reid_aligned"):
        SynthConfig(Path("x"), reid_mask_coarse=10).validate()


def test_enrolment_clips_show_one_known_fish_each_and_feed_reid_train(farm: tuple[Path, dict], tmp_path: Path) -> None:
    base, summary = farm
    cfg = _small(tmp_path / "farm")
    cfg.enrol_clip_seconds, cfg.enrol_clip_crop_every = 1.0, 2
    extra = synthesize(cfg)
    out = tmp_path / "farm"
    clips = sorted(p.stem for p in (out / "enrol").glob("*.mp4"))
    assert clips == [f"fish{k:03d}" for k in range(6)]
    for name in clips:
        truth = json.loads((out / "enrol" / f"{name}.json").read_text())
        assert truth["individuals"] == [name]
        assert {i["individual_id"] for f in truth["frames"] for i in f["instances"]} <= {name}
        cap = cv2.VideoCapture(str(out / "enrol" / f"{name}.mp4"))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(truth["frames"]) == 10
        cap.release()
    added = extra["reid"]["train"] - summary["reid"]["train"]
    assert added > 0 and len(extra["enrol_clips"]) == 6
    new = set(_hashes(out)) - set(_hashes(base))
    assert all(n.startswith(("enrol/", "reid/train/")) for n in new)
    assert len([n for n in new if n.startswith("reid/train/")]) == added
    before, after = _hashes(base), _hashes(out)
    for name in before:
        if name.startswith(("images", "labels", "videos", "reid/")):
            assert after[name] == before[name], name

    cfg = _small(tmp_path / "farm-no-crops")
    cfg.enrol_clip_seconds = 1.0  # crops from the clips are off by default
    assert synthesize(cfg)["reid"]["train"] == summary["reid"]["train"]


def test_open_set_tuning_videos_hold_known_fish_and_strangers_of_their_own(farm: tuple[Path, dict], tmp_path: Path) -> None:
    base, summary = farm
    cfg = _small(tmp_path / "farm")
    cfg.tuning_video_seconds = 1.0
    extra = synthesize(cfg)
    out = tmp_path / "farm"
    assert sorted(p.name for p in (out / "tuning").glob("*.mp4")) == sorted(p.name for p in (base / "videos").glob("*.mp4"))
    test_fish = {i["individual_id"] for v in (base / "videos").glob("*.json") for f in json.loads(v.read_text())["frames"]
                 for i in f["instances"]}
    seen: dict[str, bool] = {}
    for truth_file in (out / "tuning").glob("*.json"):
        for frame in json.loads(truth_file.read_text())["frames"]:
            seen |= {i["individual_id"]: i["unknown"] for i in frame["instances"]}
    strangers = {k for k, unknown in seen.items() if unknown}
    assert strangers and all(k.startswith("str") for k in strangers) and not strangers & test_fish
    assert {k for k, unknown in seen.items() if not unknown} <= {f"fish{k:03d}" for k in range(6)}
    assert len(extra["tuning_videos"]) == len(summary["videos"])
    before, after = _hashes(base), _hashes(out)
    assert set(after) - set(before) and all(n.startswith("tuning/") for n in set(after) - set(before))
    for name in before:
        if name.startswith(("images", "labels", "videos", "reid/")):
            assert after[name] == before[name], name


def test_tuning_videos_written_again_are_the_farms_own_at_another_length(tmp_path: Path) -> None:
    cfg = _small(tmp_path / "farm")
    cfg.tuning_video_seconds = 1.0
    synthesize(cfg)
    farm = tmp_path / "farm"
    # At the farm's own length: the same videos and ground truth, byte for byte.
    again = write_tuning_videos(farm, tmp_path / "same", 1.0)
    assert [v["video"] for v in again] == ["cam1.mp4", "cam2.mp4"]
    assert _hashes(tmp_path / "same") == _hashes(farm / "tuning")
    # Longer: three times the frames, strangers among the fish, and in front of the first camera the same cast
    # (the next camera's cast is drawn after the first video, whose length moves the random stream).
    def cast(path: Path) -> set[str]:
        return {i["individual_id"] for f in json.loads(path.read_text())["frames"] for i in f["instances"]}

    write_tuning_videos(farm, tmp_path / "long", 3.0)
    for name in ("cam1.json", "cam2.json"):
        assert len(json.loads((tmp_path / "long" / name).read_text())["frames"]) == 30
        assert any(k.startswith("str") for k in cast(tmp_path / "long" / name))
    assert cast(tmp_path / "long" / "cam1.json") >= cast(farm / "tuning" / "cam1.json")
    # Nothing already there is overwritten; a folder that is no farm is named.
    with pytest.raises(ConfigError, match="not empty"):
        write_tuning_videos(farm, tmp_path / "long", 3.0)
    with pytest.raises(ConfigError, match="no farm.json"):
        write_tuning_videos(tmp_path / "long", tmp_path / "other", 3.0)


def test_lookalike_strangers_resemble_a_known_fish_and_appear_in_every_tuning_video(tmp_path: Path) -> None:
    from finprint.data.fish import BODY_SHAPES, make_individual, make_lookalike

    rng = np.random.default_rng(0)
    parent = make_individual("fish000", False, sorted(BODY_SHAPES)[0], rng)
    twin = make_lookalike(parent, "str005", rng)
    assert twin.unknown and twin.body == parent.body and twin.bars == parent.bars and twin.opercle == parent.opercle
    assert len(set(twin.spots) & set(parent.spots)) == round(0.5 * len(parent.spots)) and twin.notch != parent.notch
    assert max(abs(a - b) for a, b in zip(twin.shade, parent.shade, strict=True)) <= 2
    plain, look = _small(tmp_path / "plain"), _small(tmp_path / "look")
    plain.tuning_video_seconds = look.tuning_video_seconds = 1.0
    look.tuning_lookalikes = 2
    synthesize(plain)
    synthesize(look)
    for truth_file in sorted((tmp_path / "look" / "tuning").glob("*.json")):
        ids = {i["individual_id"] for f in json.loads(truth_file.read_text())["frames"] for i in f["instances"]}
        assert ids & {"str004", "str005"}, truth_file.name  # 6 strangers: str000-003 plain, str004-005 lookalikes
    before, after = _hashes(tmp_path / "plain"), _hashes(tmp_path / "look")
    changed = {n for n in before if after.get(n) != before[n]}
    assert changed and all(n.startswith("tuning/") or n == "farm.json" for n in changed), changed
    with pytest.raises(ConfigError, match="tuning_lookalikes"):
        SynthConfig(tmp_path / "bad", tuning_strangers=2, tuning_lookalikes=3).validate()


def test_enrolment_clips_in_every_camera_leave_the_first_ones_alone(farm: tuple[Path, dict], tmp_path: Path) -> None:
    one, every = _small(tmp_path / "one"), _small(tmp_path / "every")
    one.enrol_clip_seconds = every.enrol_clip_seconds = 1.0
    every.enrol_clip_every_camera = True
    synthesize(one)
    synthesize(every)
    first = _hashes(tmp_path / "one")
    added = _hashes(tmp_path / "every")
    for name, digest in first.items():
        if name != "farm.json":
            assert added[name] == digest, name
    new = sorted(set(added) - set(first))
    cameras = json.loads((tmp_path / "every" / "farm.json").read_text())["cameras"]
    assert len([n for n in new if n.endswith(".mp4")]) == 6 * (len(cameras) - 1)
    for name in (n for n in new if n.endswith(".json")):
        fish, camera = Path(name).stem.split("_")
        truth = json.loads((tmp_path / "every" / name).read_text())
        assert truth["individuals"] == [fish] and f"c{truth['camera']}" == camera
