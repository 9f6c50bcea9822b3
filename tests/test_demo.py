"""The README's main job, end to end on the tiny `smoke` preset (every step runs; numbers mean nothing)."""

import json

from finprint.cli import main
from finprint.demo_report import open_set_sentence
from finprint.runtime.store import Store


def test_demo_runs_every_step_and_writes_its_report(tmp_path):
    work = tmp_path / "demo"
    assert main(["demo", "--preset", "smoke", "--workdir", str(work), "--device", "cpu"]) == 0
    results = json.loads((work / "demo.json").read_text())
    for step in ("farm", "detector teacher", "detector student (KD)", "embedder student (no KD)",
                 "export detector student", "bench", "daemon on a farm video"):
        assert step in results["steps"], step
    assert "tuned" in results["daemon"]["open_set"]  # tuned on tuning/ videos, or said why not
    assert "tuned" in results["daemon"]["reviewed"]  # ... and from their tracks judged in the review queue
    # What the reviewer judged is what the reviewed gallery holds: each kept track, each decision.
    review = results["daemon"]["reviewed"]["review"]
    reviewed = Store(work / "gallery-reviewed.db")
    assert reviewed.query("SELECT COUNT(*) FROM review_tracks")[0][0] == review["kept"]
    assert reviewed.query("SELECT COUNT(*) FROM reviews")[0][0] == review["confirmed"] + review["new"] + review["ignored"]
    reviewed.close()
    daemon = results["daemon"]
    wrong = daemon["known_tracks"] - daemon["known_correct"] + daemon["unknown_tracks"] - daemon["unknown_flagged"]
    assert sum(daemon["mistakes"].values()) == wrong  # every wrongly named track, as "truth -> named"
    assert 0 <= daemon["mixed_wrong"] <= wrong  # of those, the tracks that followed more than one fish
    assert 0 <= daemon["known_frames_right"] <= daemon["known_frames"] and daemon["known_frames"] >= daemon["known_tracks"]
    assert len(daemon["covered"]) == 3 and sum(daemon["covered"]) > 0  # fish instances under 0, 1, several tracks
    # Only the farm's own fish are enrolled, not the auxiliary fish that reid/train also holds.
    assert list((work / "farm" / "reid" / "train").glob("aux*.jpg"))
    enrolled = Store(work / "gallery.db").load_gallery(0.5).individuals
    farm_fish = [i["id"] for i in json.loads((work / "farm" / "farm.json").read_text())["individuals"] if not i["unknown"]]
    assert enrolled == sorted(farm_fish)
    report = (work / "REPORT.md").read_text()
    assert report.startswith("# finprint demo report")
    assert f"followed more than one fish (under 80% of their frames on one): {daemon['mixed_wrong']} of {wrong}" in report
    assert f"of their {daemon['known_frames']} track-frames" in report and f"(of {sum(daemon['covered'])};" in report
    assert (work / "report.png").stat().st_size > 10_000
    assert sorted(p.name for p in (work / "models" / "detector").glob("*.int8.onnx"))
    # A second run continues: every step is already done.
    assert main(["demo", "--preset", "smoke", "--workdir", str(work), "--device", "cpu"]) == 0
    again = json.loads((work / "demo.json").read_text())
    assert all(step.get("skipped") for step in again["steps"].values())


def test_the_report_says_how_the_open_set_was_set():
    tuned = {"tuned": True, "threshold": 0.66, "margin": 0.02, "known_accuracy": 0.8, "known_tracks": 40,
             "unknown_flag_rate": 0.9, "unknown_tracks": 20, "before": {"known_accuracy": 0.5, "unknown_flag_rate": 0.95}}
    text = open_set_sentence({"open_set": tuned})
    assert "threshold 0.66, margin 0.02" in text and "80.0% of 40 known tracks" in text and "played no part" in text
    assert "not tuned" in open_set_sentence({"open_set": {"tuned": False, "margin": 0.03}})
    assert "box by box" not in text  # a report from before tune-open-set measured it
    assert "whitened" not in text  # nor judged whitening
    tuned["whitening"] = {"strength": 0.3, "plain_value": 0.968, "whitened_value": 0.98}
    assert "margin 0.02, gallery whitened (strength 0.3): it met the targets to 0.980 whitened vs 0.968 plain;" in (
        open_set_sentence({"open_set": tuned}))
    tuned["whitening"] = {"strength": 0.3, "plain_value": 0.95, "whitened_value": 0.965, "tracker_space": "gallery"}
    assert "gallery whitened (strength 0.3, the tracker comparing fish in it too): it met the targets to 0.965" in (
        open_set_sentence({"open_set": tuned}))
    tuned["whitening"] = {"strength": None, "plain_value": 0.97, "whitened_value": 0.95}
    assert "gallery not whitened" in open_set_sentence({"open_set": tuned})
    assert "split" not in open_set_sentence({"open_set": tuned})  # a report from before splitting was tried
    tuned["splitting"] = {"window": 15, "values": {"0": 0.965, "10": 0.966, "15": 0.973, "20": 0.962}}
    assert ("0.970 plain, tracks split after 15 frames that mostly show another fish (targets met: none 0.965, 10 frames "
            "0.966, 15 frames 0.973, 20 frames 0.962);") in open_set_sentence({"open_set": tuned})
    tuned["splitting"] = {"window": 0, "values": {"0": 0.98, "10": 0.94}}
    assert "tracks not split (targets met: none 0.980, 10 frames 0.940);" in open_set_sentence({"open_set": tuned})
    assert "reported after" not in open_set_sentence({"open_set": tuned})  # a report from before min_hits was tried
    tuned["reporting"] = {"min_hits": 10, "values": {"3": 0.949, "10": 1.0}, "uncovered": {"3": 0.217, "10": 0.298}}
    assert ("tracks reported once seen in 19 frames (min_hits 10; min_hits tried: targets met / fish instances under no "
            "track: 3 0.949 / 22%, 10 1.000 / 30%);") in open_set_sentence({"open_set": tuned})
    tuned["per_detection"] = {"known_boxes": 4088, "rank1": 0.888, "clear_view_rank1": 0.945, "partly_hidden_rank1": 0.806,
                              "stranger_boxes": 1881, "stranger_auroc": 0.93}
    text = open_set_sentence({"open_set": tuned})
    assert "right for 88.8% of 4088 boxes" in text and "partly hidden 80.6%" in text and "AUROC 0.930" in text
    assert "By track length" not in text
    tuned["by_track_length"] = {"seconds": 1.0,
                                "short": {"known_tracks": 40, "known_accuracy": 0.8, "unknown_tracks": 0, "unknown_flag_rate": None},
                                "long": {"known_tracks": 60, "known_accuracy": 0.95, "unknown_tracks": 30, "unknown_flag_rate": 0.9}}
    text = open_set_sentence({"open_set": tuned})
    assert ("By track length: under 1 s known named right 80.0% of 40, strangers flagged none; 1 s or longer known named "
            "right 95.0% of 60, strangers flagged 90.0% of 30.") in text
    assert "detector alone" not in text.lower()
    tuned["detector"] = {"frames": 1200, "stray_boxes_per_frame": 3.61, "clear_view_fish": 3261, "clear_view_found": 0.795,
                         "by_length": [{"band": "<90 px", "fish": 1400, "found": 0.837}, {"band": "90-160 px", "fish": 0, "found": None},
                                       {"band": ">=160 px", "fish": 560, "found": 0.558}]}
    text = open_set_sentence({"open_set": tuned})
    assert ("79.5% of 3261 fish in clear view found as one box (IoU >= 0.5; by length <90 px 83.7%, >=160 px 55.8%), "
            "3.61 boxes per frame") in text


def test_concurrent_steps_run_as_processes_and_name_the_failed_run(tmp_path):
    import pytest

    from finprint.demo import PRESETS, Demo
    from finprint.errors import FinprintError

    demo = Demo(tmp_path, PRESETS["smoke"], 0, "cpu", jobs=2)
    done = tmp_path / "done"
    done.mkdir()
    (done / "COMPLETE").write_text("{}")
    ok, bad = tmp_path / "ok", tmp_path / "bad"
    with pytest.raises(FinprintError, match=r"bad\.log"):
        demo._steps([
            ("finished", done, ["--version"]),
            ("fine", ok, ["data", "synth", "--help"]),
            ("broken", bad, ["train", "--task", "embed", "--model", "no-such-model", "--data", str(tmp_path), "--out", str(bad)]),
        ])
    steps = demo.results["steps"]
    assert steps["finished"] == {"skipped": True}
    assert steps["fine"]["concurrent"] and steps["broken"]["concurrent"]
    assert "usage" in (tmp_path / "ok.log").read_text()
    assert "no-such-model" in (tmp_path / "bad.log").read_text()


def test_results_name_the_machine_that_trained_the_embedder(tmp_path):
    from finprint.results import _trained_elsewhere

    assert _trained_elsewhere(tmp_path, "embedder") == []
    (tmp_path / "only-embedder.json").write_text(json.dumps({
        "machine": "x86_64, 16 CPU cores, NVIDIA H200", "command": "python -m finprint.results --only embedder",
        "steps": {"farm": {"skipped": True}, "embedder teacher": {"seconds": 90.0},
                  "a": {"seconds": 109.0, "concurrent": True}, "b": {"seconds": 121.0, "concurrent": True}}}))
    text = "\n".join(_trained_elsewhere(tmp_path, "embedder"))
    assert "NVIDIA H200" in text and "211 s wall" in text


def test_results_say_how_long_the_scored_videos_are(tmp_path):
    from finprint.results import _scored_videos

    assert _scored_videos(tmp_path) == ""
    (tmp_path / "farm").mkdir()
    (tmp_path / "farm" / "farm.json").write_text(json.dumps({
        "config": {"fps": 10}, "counts": {"videos": [{"frames": 1200, "instances": 6705, "video": "cam1.mp4"},
                                                    {"frames": 1200, "instances": 6340, "video": "cam2.mp4"}]}}))
    assert _scored_videos(tmp_path) == ("Scored on the farm's 2 camera video(s) (videos/, 120 s each at 10 fps, "
                                        "13045 fish instances in their ground truth).")


def test_detector_options_reach_every_detector_run_and_no_embedder_run(tmp_path, monkeypatch):
    import dataclasses

    from finprint.demo import PRESETS, Demo

    preset = dataclasses.replace(PRESETS["smoke"], det_extra=("aug_scale=[0.7,1.8]",), emb_extra=("repeats=2",), qat_epochs=1)
    demo = Demo(tmp_path, preset, 0, "cpu", extra_seeds=(1,))
    calls: list[list[str]] = []
    monkeypatch.setattr(demo, "_finprint", lambda *argv, **kw: calls.append(list(argv)) or 0)
    teacher, kd, _ = demo.detector_runs(tmp_path / "farm", seeds=(1,))
    demo._qat_run(teacher, kd)
    demo.embedder_runs()
    detector = [c for c in calls if "--imgsz" in c]
    embedder = [c for c in calls if "--imgsz" not in c]
    assert len(detector) == 6 and len(embedder) == 5  # teacher, KD, no KD, a seed's pair, QAT; the embedder's five
    assert all("aug_scale=[0.7,1.8]" in c and "repeats=2" not in c for c in detector)
    assert all("repeats=2" in c and "aug_scale=[0.7,1.8]" not in c for c in embedder)


def test_results_only_daemon_runs_the_daemons_chain_and_a_full_run_keeps_its_steps(tmp_path, capsys):
    from finprint.demo import PRESETS, Demo
    from finprint.results import main as results_main

    work = tmp_path / "results"
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# finprint results\n\n## Synthetic farm\n\nthe farm's models\n\n## GPU check\n")
    assert results_main(["--workdir", str(work), "--farm-preset", "smoke", "--device", "cpu", "--only", "daemon",
                         "--deepfish", "", "--out", str(doc)]) == 0
    assert "the daemon's chain on" in capsys.readouterr().out
    # Its own subsection of the document is written, the rest kept.
    text = doc.read_text()
    assert "the farm's models" in text and "## GPU check" in text and "This subsection alone was rerun on" in text
    assert "known-individual tracks identified correctly" in text
    farm_dir = work / "farm"
    assert (farm_dir / "daemon_score.json").is_file() and list((farm_dir / "models" / "embedder").glob("*.int8.onnx"))
    assert not (farm_dir / "det-student-nokd").exists() and not (farm_dir / "emb-student-nokd").exists()
    assert not (farm_dir / "bench.json").exists() and not (farm_dir / "eval").exists()
    # The full run in the same workdir starts from there: what the daemon's chain trained is kept.
    full = Demo(farm_dir, PRESETS["smoke"], 0, "cpu", only="detector").run()
    assert full["steps"]["detector teacher"] == {"skipped": True} and "seconds" in full["steps"]["detector student (no KD)"]


def _daemon_score(known: float, flagged: float) -> dict:
    return {"known_accuracy": known, "known_correct": int(100 * known), "known_tracks": 100, "unknown_flag_rate": flagged,
            "unknown_flagged": int(20 * flagged), "unknown_tracks": 20, "unmatched_tracks": 3, "mistakes": {}}


def test_tuning_from_reviews_is_reported_beside_tuning_from_ground_truth():
    from finprint.demo_report import reviewed_sentence

    daemon = _daemon_score(0.95, 0.90)
    assert reviewed_sentence(daemon) == ""  # a run from before reviews were compared
    review = {"kept": 60, "not_shown": 40, "confirmed": 12, "new": 3, "ignored": 5}
    daemon["reviewed"] = {"review": review, "tuned": False}
    assert "judged the 20 the review queue showed: 12" in reviewed_sentence(daemon)
    assert "kept the defaults" in reviewed_sentence(daemon)
    daemon["reviewed"] = {"review": review, "tuned": True,
                          "open_set": {"known_tracks": 30, "unknown_tracks": 9, "threshold": 0.61, "margin": 0.03},
                          "farm": _daemon_score(0.93, 0.95), "rule_only": _daemon_score(0.94, 0.85)}
    text = reviewed_sentence(daemon)
    assert "rests on 30 genuine and 9 stranger tracks" in text and "threshold 0.61, margin 0.03" in text
    assert "known tracks named right 93.0% (-2.0 points against tuning from ground truth)" in text
    assert "unknown tracks flagged 95.0% (+5.0 points)" in text and "94.0% (-1.0 points) and 85.0% (-5.0 points)." in text
    daemon["reviewed"]["truth_tracker"] = _daemon_score(0.96, 0.90)
    assert "on the tracker tuned from ground truth (reviews cannot tune a tracker): 96.0% (+1.0 points) and 90.0% " \
           "(+0.0 points), of 100 and 20 tracks" in reviewed_sentence(daemon)


def test_the_daemon_subsection_alone_is_rewritten(tmp_path):
    from finprint.results import DAEMON_HEADING, daemon_section, splice_daemon

    doc = "\n".join(["# finprint results", "## Synthetic farm", "### Bench", "old bench", DAEMON_HEADING, "", "old daemon",
                     "- old line", "## GPU check", "gpu text"]) + "\n"
    section = daemon_section(_daemon_score(0.9, 0.8), tmp_path, "rerun today")
    new = splice_daemon(doc, section)
    assert "old daemon" not in new and "old line" not in new and "rerun today" in new
    assert new.index("old bench") < new.index(DAEMON_HEADING) < new.index("known-individual tracks identified correctly: 90.0%")
    assert new.index("90.0%") < new.index("## GPU check") and new.endswith("gpu text\n")
    assert splice_daemon(new, section) == new  # idempotent
    assert splice_daemon("# finprint results\n", section).startswith("# finprint results\n\n" + DAEMON_HEADING)


def test_the_farm_alone_keeps_the_real_data_section():
    from finprint.results import REAL_BEGIN, REAL_END, keep_real_section

    before = f"# finprint results\n\nold header\n\n{REAL_BEGIN}\n## Real fish\nteacher 0.295\n{REAL_END}\n\n## Synthetic farm\nold\n"
    new = keep_real_section("# finprint results\n\nnew header\n\n## Synthetic farm\nnew farm\n", before)
    assert "## Real fish\nteacher 0.295" in new and "new farm" in new and "old" not in new
    assert new.index("Real fish") < new.index("Synthetic farm")  # first, as `--only real` puts it
    assert keep_real_section("# doc\n", "# no real section\n") == "# doc\n"
