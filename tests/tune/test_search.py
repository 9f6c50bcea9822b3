import hashlib
import json
import logging
import os

import cv2
import numpy as np
import pytest

from finprint.cli import main
from finprint.runtime.identity import UNKNOWN
from finprint.runtime.pipeline import Pipeline
from finprint.runtime.store import Store
from finprint.runtime.tuned import file_digest, resolve_rule
from finprint.testing import make_toy_detector, make_toy_embedder
from finprint.tune.score import main as score_main
from finprint.tune.search import TrackOutcome, tune


def _known(score: float, lead: float = 0.3, closest: str = "fish000") -> TrackOutcome:
    return TrackOutcome("fish000", False, closest, score, lead, 10)


def _stranger(score: float, lead: float = 0.3) -> TrackOutcome:
    return TrackOutcome("str000", True, "fish000", score, lead, 10)


def test_tune_meets_both_targets_from_the_middle_of_what_works():
    # Known tracks score 0.80-0.95, strangers 0.40-0.60: any threshold in (0.60, 0.80] works; take the middle.
    outcomes = [_known(s) for s in np.linspace(0.80, 0.95, 10)] + [_stranger(s) for s in np.linspace(0.40, 0.60, 10)]
    tuned = tune(outcomes)
    assert tuned.known_accuracy == 1.0 and tuned.unknown_flag_rate == 1.0
    assert 0.65 <= tuned.threshold <= 0.75
    assert (tuned.known_tracks, tuned.unknown_tracks) == (10, 10)


def test_tune_uses_the_margin_when_the_scores_overlap():
    # Strangers score as high as the known fish but sit between two of them (small lead).
    outcomes = [_known(0.9, lead=0.2) for _ in range(10)] + [_stranger(0.9, lead=0.01) for _ in range(10)]
    tuned = tune(outcomes)
    assert tuned.known_accuracy == 1.0 and tuned.unknown_flag_rate == 1.0 and 0.01 < tuned.margin <= 0.2
    assert _stranger(0.9, lead=0.01).predicted(tuned.threshold, tuned.margin) == UNKNOWN


def test_tune_needs_both_kinds_of_track():
    with pytest.raises(ValueError, match="strangers"):
        tune([_known(0.9)])


def test_the_config_wins_then_the_tuned_gallery_then_the_manifest(tmp_path, caplog):
    emb = tmp_path / "emb.onnx"
    emb.write_bytes(b"model")
    stored = {"threshold": 0.61, "margin": 0.07, "embedder": "emb.onnx", "embedder_sha256": file_digest(emb)}
    assert (resolve_rule(0.8, 0.1, stored, emb, 0.7, 0.03).threshold, resolve_rule(0.8, 0.1, stored, emb, 0.7, 0.03).margin) == (0.8, 0.1)
    rule = resolve_rule(None, None, stored, emb, 0.7, 0.03)
    assert (rule.threshold, rule.margin) == (0.61, 0.07) and "tuned" in rule.source
    assert (resolve_rule(None, None, None, emb, 0.7, 0.03).threshold, resolve_rule(None, None, None, emb, 0.7, 0.03).margin) == (0.7, 0.03)
    assert rule.whitening is None and "whitened" not in rule.source
    whitened = {**stored, "whitening": 0.3}
    rule = resolve_rule(None, None, whitened, emb, 0.7, 0.03)
    assert rule.whitening == 0.3 and "gallery whitened (0.3, tuned)" in rule.source
    # A threshold from the config was not tuned in the whitened space: plain cosine with it.
    assert resolve_rule(0.8, None, whitened, emb, 0.7, 0.03).whitening is None
    emb.write_bytes(b"another model")
    with caplog.at_level(logging.WARNING):
        rule = resolve_rule(None, None, whitened, emb, 0.7, 0.03)
    assert (rule.threshold, rule.margin, rule.whitening) == (0.7, 0.03, None) and "another embedder" in caplog.text


def test_file_digest_is_sha256_and_follows_a_rewritten_file(tmp_path):
    model = tmp_path / "emb.onnx"
    model.write_bytes(b"model A")
    first = file_digest(model)
    assert first == hashlib.sha256(b"model A").hexdigest() and file_digest(model) == first
    model.write_bytes(b"model B")  # same size: only the content and the modification time change
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_digest(model) == hashlib.sha256(b"model B").hexdigest()


def _labelled_video(folder, name, with_stranger=True):
    """A known fish (orange) on top and, optionally, a stranger (green) below, 12 frames with ground truth."""
    writer = cv2.VideoWriter(str(folder / f"{name}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    frames = []
    for i in range(12):
        img = np.full((64, 64, 3), 30, np.uint8)
        img[8:20, 8:40] = (200, 60, 20)
        instances = [{"individual_id": "fish000", "unknown": False, "box_xyxy": [8, 8, 40, 20], "polygon": [], "length_cm": 3.2}]
        if with_stranger:
            img[40:52, 8:40] = (20, 200, 60)
            instances.append({"individual_id": "str000", "unknown": True, "box_xyxy": [8, 40, 40, 52], "polygon": [],
                              "length_cm": 3.2})
        writer.write(img)
        frames.append({"frame": i, "instances": instances})
    writer.release()
    (folder / f"{name}.json").write_text(json.dumps({"fps": 10, "width": 64, "height": 64, "camera": "0", "px_per_cm": 10,
                                                     "frames": frames}))
    return folder / f"{name}.avi"


def _enrolled_known_fish(tmp_path, blur: float = 0.0):
    """Toy models, a labelled video (known fish + stranger) and a gallery holding the known fish's crop
    (blurred towards a constant by `blur`) -> (detector, embedder, video, gallery, the commands' model options)."""
    det = make_toy_detector(tmp_path / "det.onnx", fish_xyxy=[[8, 8, 40, 20], [8, 40, 40, 52]], fish_scores=[0.9, 0.9])
    # The manifest's threshold (0.999) would call the known fish unknown on this video.
    emb = make_toy_embedder(tmp_path / "emb.onnx", open_set_threshold=0.999)
    video = _labelled_video(tmp_path, "calib")
    pipeline = Pipeline(det, emb, "cpu")
    img = cv2.VideoCapture(str(video)).read()[1]
    gallery = tmp_path / "g.db"
    store = Store(gallery)
    store.enroll("fish000", pipeline.embed_crops([img[8:20, 8:40]]) * np.float32(1 - blur) + np.float32(blur))
    store.close()
    pipeline.close()
    return det, emb, video, gallery, ["--gallery", str(gallery), "--detector", str(det), "--embedder", str(emb), "--backend", "cpu"]


def test_tune_open_set_stores_the_rule_the_scorer_then_uses(tmp_path, capsys):
    _, _, video, gallery, base = _enrolled_known_fish(tmp_path, blur=0.1)
    assert main(["tune-open-set", *base, *FEW, "--json", str(tmp_path / "tuned.json"), str(video)]) == 0
    report = json.loads((tmp_path / "tuned.json").read_text())
    assert report["known_accuracy"] == 1.0 and report["unknown_flag_rate"] == 1.0
    assert report["before"]["known_accuracy"] == 0.0  # the manifest's threshold
    per_box = report["per_detection"]  # the embedder alone, box by box: the one toy fish is always named right
    assert per_box["known_boxes"] > 0 and per_box["rank1"] == 1.0
    by_length = report["by_track_length"]  # the same tracks, split at 1 s: the toy video's two tracks are long
    assert by_length["long"]["known_tracks"] == 1 and by_length["long"]["known_accuracy"] == 1.0
    assert by_length["short"]["known_tracks"] == 0
    assert (report["mixed_wrong"], report["wrong_tracks"]) == (0, 0)  # every track named right, none mixed
    # Every track named right: so is every track-frame; and the toy fish had one track or none, never two.
    assert report["known_frames_right"] == report["known_frames"] > 0 and report["covered"][2] == 0
    assert report["covered"][1] > 0
    stored = Store(gallery).open_set()
    assert stored is not None and stored["threshold"] == report["threshold"] and stored["embedder"] == "emb.onnx"
    # Whitening was judged (one enrolled fish: it meets the targets no better, so it stays off).
    assert report["whitening"]["whitened_value"] is not None and report["whitening"]["strength"] is None
    assert set(report["whitening"]["tracker_space_values"]) == {"embedder", "gallery"}  # the tracker was tuned too
    out = capsys.readouterr().out
    assert stored["whitening"] is None and "gallery whitening: off" in out
    assert f"known fish named right in 100.0% of their {report['known_frames']} track-frames" in out
    assert "several at once 0.0%" in out
    assert Store(gallery).tracking()["appearance_space"] == report["tracking"]["appearance_space"] == "embedder"
    # Track splitting was tried at each window; the toy fish never changes, so nothing to split and it stays off.
    assert set(report["splitting"]["values"]) == {"0", "10", "15", "20"} and report["splitting"]["window"] == 0
    assert Store(gallery).tracking()["split_window"] == report["tracking"]["split_window"] == 0
    assert "track splitting: off; how well the targets are met, none 1.000, 10 frames 1.000" in out
    # Reporting a track later was tried too. A track is reported once seen in 2 * min_hits - 1 frames, so 10-20
    # leave the 12-frame video no track to tune on, and 5 names the fish no better: the default 3 stays.
    reporting = report["reporting"]
    assert set(reporting["values"]) == {"3", "5"} and reporting["min_hits"] == 3
    assert Store(gallery).tracking()["min_hits"] == report["tracking"]["min_hits"] == 3
    # A track is confirmed at its min_hits-th frame: before that each fish is under no reported track.
    assert reporting["uncovered"]["3"] == pytest.approx(2 / 12) and reporting["uncovered"]["5"] == pytest.approx(4 / 12)
    assert "tracks reported: min_hits 3 (a track is reported once seen in 5 frames); how well the targets are met" in out
    assert "wrongly named tracks that followed more than one fish (under 80% of their frames on one): 0 of 0" in out
    assert main(["tune-open-set", *base, *FEW, "--no-whitening", "--dry-run", "--json", str(tmp_path / "plain.json"), str(video)]) == 0
    assert json.loads((tmp_path / "plain.json").read_text())["whitening"]["whitened_value"] is None
    assert "not tried (--no-whitening)" in capsys.readouterr().out
    assert score_main(["--video", str(video), *base]) == 0
    assert "100.0% (1/1)" in capsys.readouterr().out


# The toy videos hold one known track and one stranger's: under the floor every real tuning rests on (tune/search.py).
FEW = ["--min-tracks", "1,1"]


def test_tuning_on_fewer_tracks_than_the_floor_keeps_the_defaults_and_says_so(tmp_path, capsys):
    _, _, video, gallery, base = _enrolled_known_fish(tmp_path, blur=0.1)
    assert main(["tune-open-set", *base, str(video)]) == 2
    err = capsys.readouterr().err
    assert "1 tracks of enrolled fish and 1 of strangers, under the floor of 10 and 5" in err and "nothing tuned" in err
    assert len(err.strip().splitlines()) == 1
    assert Store(gallery).open_set() is None and Store(gallery).tracking() is None


def test_tune_open_set_refuses_bad_input(tmp_path, capsys):
    det = make_toy_detector(tmp_path / "det.onnx", fish_xyxy=[[8, 8, 40, 20]], fish_scores=[0.9])
    emb = make_toy_embedder(tmp_path / "emb.onnx")
    gallery = tmp_path / "g.db"
    base = ["tune-open-set", "--gallery", str(gallery), "--detector", str(det), "--embedder", str(emb), "--backend", "cpu"]
    video = _labelled_video(tmp_path, "no_strangers", with_stranger=False)
    assert main([*base, str(video)]) == 2
    assert "no such gallery" in capsys.readouterr().err
    store = Store(gallery)
    store.enroll("fish000", np.ones((1, 8), np.float32))  # enrolled with another (8-dim) embedder
    store.close()
    assert main([*base, str(video)]) == 2
    assert "enroll the fish again" in capsys.readouterr().err
    store = Store(gallery)
    store.forget("fish000")
    pipeline = Pipeline(det, emb, "cpu")
    store.enroll("fish000", pipeline.embed_crops([np.full((12, 32, 3), 120, np.uint8)]))
    pipeline.close()
    store.close()
    (tmp_path / "bare.avi").write_bytes(video.read_bytes())
    assert main([*base, str(tmp_path / "bare.avi")]) == 2
    assert "no ground truth bare.json" in capsys.readouterr().err
    assert main([*base, str(video)]) == 2
    assert "strangers" in capsys.readouterr().err
    assert Store(gallery).open_set() is None  # nothing stored by a refused run


def test_the_vectorised_grid_follows_the_identity_rule():
    from finprint.tune.search import MARGINS, THRESHOLDS, _rate_grids, rates

    rng = np.random.default_rng(0)
    outcomes = [TrackOutcome("fish000" if i % 3 else "str001", i % 3 == 0, [None, "fish000", "fish001"][i % 3 if i % 5 else 0],
                             float(rng.uniform(0.3, 1.0)), float(rng.uniform(0.0, 0.3)), 5) for i in range(40)]
    k_grid, u_grid = _rate_grids(outcomes)
    for i in (0, 31, 63, 99):
        for j in (0, 7, 30):
            assert (k_grid[i, j], u_grid[i, j]) == pytest.approx(rates(outcomes, float(THRESHOLDS[i]), float(MARGINS[j])))


def _replayable(known_score: float, stranger_score: float, frames: int = 12):
    """A labelled video's chain outputs: a known fish above a stranger, each detected at the given score."""
    from finprint.tune.score import ChainFrame, LabelledVideo

    boxes = np.array([[8, 8, 40, 20], [8, 40, 40, 52]], np.float32)
    emb = np.array([[1, 0, 0, 0], [0.3, 0.95, 0, 0]], np.float32)
    truth = [{"individual_id": "fish000", "unknown": False, "box_xyxy": boxes[0].tolist()},
             {"individual_id": "str000", "unknown": True, "box_xyxy": boxes[1].tolist()}]
    chain = [ChainFrame(boxes, np.array([known_score, stranger_score], np.float32), emb) for _ in range(frames)]
    return LabelledVideo("v.mp4", "0", 10.0, 10.0, chain, dict.fromkeys(range(frames), truth))


def test_tracker_tuning_finds_the_score_this_detector_gives_its_fish():
    from finprint.runtime.config import TrackingConfig
    from finprint.runtime.identity import Gallery
    from finprint.tune.search import tune_tracking

    gallery = Gallery(["fish000"], np.array([[1, 0, 0, 0]], np.float32))
    # The detector scores its fish 0.4: a tracker waiting for 0.5 never starts a track, so that setting gives no
    # tracks to tune on and is left out; every setting below 0.4 names the fish and flags the stranger.
    trials = tune_tracking([_replayable(0.4, 0.4)], gallery, TrackingConfig(), high_scores=(0.3, 0.5), gates=(None, 0.2))
    assert {t.high_score for t in trials} == {0.3}
    best = trials[0]
    assert best.value == 1.0 and best.tuned.known_accuracy == 1.0 and best.tuned.unknown_flag_rate == 1.0
    assert best.tracks == 2


def _trial(value: float, known: float, unknown: float, tracks: int):
    from finprint.tune.search import TrackingTrial, Tuned

    return TrackingTrial(0.35, None, Tuned(0.7, 0.05, known, unknown, tracks, tracks), tracks, value)


def test_a_track_waits_longer_before_it_is_reported_only_when_that_names_fish_better():
    from finprint.tune.search import choose_min_hits

    # The results farm's pattern: 3 frames short of the targets, 5-15 meeting both, 15 with the largest sum of rates.
    trials = {3: _trial(0.949, 0.902, 0.909, 116), 5: _trial(1.0, 0.963, 0.915, 101), 10: _trial(1.0, 0.959, 0.917, 85),
              15: _trial(1.0, 0.956, 0.923, 71), 20: _trial(0.974, 0.925, 0.913, 63)}
    assert choose_min_hits(trials) == 15
    # As good, with fewer tracks, is not better: the brief sightings are kept.
    assert choose_min_hits({3: _trial(1.0, 0.96, 0.92, 100), 10: _trial(1.0, 0.96, 0.92, 60)}) == 3
    assert choose_min_hits({3: _trial(1.0, 0.96, 0.92, 100), 10: _trial(0.98, 0.94, 0.99, 60)}) == 3
    assert choose_min_hits({10: _trial(0.9, 0.9, 0.9, 60)}) == 10


def test_tracker_settings_come_from_the_config_then_the_tuned_gallery_then_the_defaults(tmp_path, caplog):
    from finprint.runtime.config import TrackingConfig
    from finprint.runtime.tuned import resolve_tracking

    det, emb = tmp_path / "det.onnx", tmp_path / "emb.onnx"
    det.write_bytes(b"detector")
    emb.write_bytes(b"embedder")
    stored = {"high_score": 0.3, "appearance_gate": None, "detector": "det.onnx", "detector_sha256": file_digest(det),
              "embedder_sha256": file_digest(emb)}
    tracking, source = resolve_tracking(TrackingConfig(), stored, det, emb)
    assert (tracking.high_score, tracking.appearance_gate) == (0.3, None) and "gallery (tuned)" in source
    # A gallery tuned before the tracker's space was stored keeps the default; one tuned since, its own.
    assert tracking.appearance_space == "embedder" and "tuned before it was stored" in source
    tracking, source = resolve_tracking(TrackingConfig(), {**stored, "appearance_space": "gallery"}, det, emb)
    assert tracking.appearance_space == "gallery" and "appearance_space gallery from the gallery (tuned)" in source
    assert tracking.split_window == 0 and "split_window 0 (default: tuned before it was stored)" in source
    tracking, source = resolve_tracking(TrackingConfig(), {**stored, "split_window": 15}, det, emb)
    assert tracking.split_window == 15 and "split_window 15 from the gallery (tuned)" in source
    tracking, source = resolve_tracking(TrackingConfig(split_window=0), {**stored, "split_window": 15}, det, emb)
    assert tracking.split_window == 0 and "split_window 0 from the config" in source
    assert tracking.min_hits == 3 and "min_hits 3 (default: tuned before it was stored)" in source
    tracking, source = resolve_tracking(TrackingConfig(), {**stored, "min_hits": 10}, det, emb)
    assert tracking.min_hits == 10 and "min_hits 10 from the gallery (tuned)" in source
    tracking, source = resolve_tracking(TrackingConfig(min_hits=3), {**stored, "min_hits": 10}, det, emb)
    assert tracking.min_hits == 3 and "min_hits 3 from the config" in source
    tracking, source = resolve_tracking(TrackingConfig(high_score=0.6), stored, det, emb)
    assert (tracking.high_score, tracking.appearance_gate) == (0.6, None) and "high_score 0.6 from the config" in source
    assert tracking.min_hits == TrackingConfig().min_hits  # untouched fields stay
    default = TrackingConfig()
    assert resolve_tracking(default, None, det, emb)[0] == default
    det.write_bytes(b"a retrained detector")
    with caplog.at_level(logging.WARNING):
        tracking, _ = resolve_tracking(TrackingConfig(), stored, det, emb)
    assert tracking == default and "other models" in caplog.text


def test_tuned_tracker_settings_are_kept_in_the_gallery(tmp_path):
    store = Store(tmp_path / "g.db")
    assert store.tracking() is None
    store.set_tracking(0.35, None, "det.onnx", "d" * 64, "e" * 64, "cam1.mp4")
    store.set_tracking(0.3, 0.1, "det.onnx", "d" * 64, "e" * 64, "cam1.mp4, cam2.mp4")  # replaces
    store.close()
    stored = Store(tmp_path / "g.db").tracking()
    assert stored is not None and (stored["high_score"], stored["appearance_gate"], stored["tuned_on"]) == (0.3, 0.1, "cam1.mp4, cam2.mp4")


def test_tune_open_set_stores_the_tracker_it_chose_and_the_scorer_uses_it(tmp_path, capsys, caplog):
    det, _, video, gallery, base = _enrolled_known_fish(tmp_path)
    assert main(["tune-open-set", *base, *FEW, "--keep-tracking", str(video)]) == 0
    assert Store(gallery).tracking() is None  # only the threshold and margin
    assert main(["tune-open-set", *base, *FEW, "--high-scores", "0.3,0.6", "--gates", "off,0.2", "--json", str(tmp_path / "t.json"),
                 str(video)]) == 0
    report = json.loads((tmp_path / "t.json").read_text())
    assert len(report["trials"]) == 4 and report["tracking"]["tuned"]
    stored = Store(gallery).tracking()
    assert stored is not None and stored["detector_sha256"] == file_digest(det)
    assert (stored["high_score"], stored["appearance_gate"]) == (report["tracking"]["high_score"], report["tracking"]["appearance_gate"])
    with caplog.at_level(logging.INFO, logger="finprint.tune.score"):
        assert score_main(["--video", str(video), *base]) == 0
    assert "from the gallery (tuned)" in caplog.text


@pytest.mark.parametrize("option", [["--gates", "off,strict"], ["--high-scores", "0.3,1.5"], ["--gates", "2"]])
def test_tune_open_set_rejects_bad_tracker_grids(tmp_path, option, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tune-open-set", "--gallery", str(tmp_path / "g.db"), "--detector", "d.onnx", "--embedder", "e.onnx", *option, "v.mp4"])
    assert exc.value.code == 2
    assert option[0] in capsys.readouterr().err


def test_the_daemon_matches_in_the_whitened_space_its_gallery_was_tuned_in(tmp_path):
    from finprint.runtime.tuned import open_gallery

    emb = tmp_path / "emb.onnx"
    emb.write_bytes(b"model")
    store = Store(tmp_path / "g.db")
    store.enroll("fish000", np.eye(4, dtype=np.float32)[:2])
    store.enroll("fish001", np.eye(4, dtype=np.float32)[2:])
    store.set_open_set(0.6, 0.05, "emb.onnx", file_digest(emb), "cam1.mp4", whitening=0.3)
    gallery, rule = open_gallery(store, emb, 0.9, 4)
    assert gallery.whitening == rule.whitening == 0.3 and gallery.threshold == 0.6
    gallery, rule = open_gallery(store, emb, 0.9, 4, config_threshold=0.5)
    assert gallery.whitening is None and rule.threshold == 0.5
    store.close()
