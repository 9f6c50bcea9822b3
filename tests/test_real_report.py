"""The real-data section of docs/RESULTS.md: rendered from real.json, spliced in place, flat JSON keys."""

from __future__ import annotations

import json
from pathlib import Path

from finprint.real_report import BEGIN, END, results_json, splice, write

REAL = {
    "preset": {"seeds": [0]},
    "steps": {"detector teacher (ImageNet Lite0)": {"seconds": 3000.0}, "eval teacher": {"skipped": True}},
    "detector": {
        "eval": {"teacher": {"box_map50": 0.41, "box_map": 0.15}, "student-kd-seed0": {"box_map50": 0.30, "box_map": 0.1},
                 "student-nokd-seed0": {"box_map50": 0.25, "box_map": 0.08}},
        "gate": [{"stage": "student int8", "precision": "int8", "metrics": {"box_map50": 0.29}}],
    },
}


def test_render_splices_after_the_title_then_in_place(tmp_path):
    md, js = tmp_path / "RESULTS.md", tmp_path / "results.json"
    md.write_text("# finprint results\n\nintro\n\n## Synthetic farm\n\nfarm numbers\n")
    js.write_text(json.dumps({"farm/keep": 1.0}))
    write(REAL, "x86_64, 2 CPU cores", md, js)
    text = md.read_text()
    assert text.index(BEGIN) < text.index("## Synthetic farm") and "farm numbers" in text
    assert "| teacher, ImageNet Lite0 (fine-tuned) | 0.410 | 0.150 |" in text and "seed 0: KD minus no-KD, points: box_map50 +5.0" in text
    assert "Teacher training time: 50 min" in text
    assert "recipe from scratch was not trained in this run (`--scratch` leaves the detector out)" in text
    again = splice(text, f"{BEGIN}\nnew\n{END}")
    assert again.count(BEGIN) == 1 and "new" in again and "0.41" not in again and "farm numbers" in again
    keys = json.loads(js.read_text())
    assert keys["farm/keep"] == 1.0 and keys["deepfish/detector/teacher/box_map50"] == 0.41
    assert keys["deepfish/detector/gate/student-int8/box_map50"] == 0.29


def test_results_json_skips_what_was_not_measured():
    keys = results_json({"embedder": {"eval": {"teacher": {"rank1": 0.9, "auroc": None}}}})
    assert keys == {"f4k-tracklets/embedder/teacher/rank1": 0.9}


def test_collect_gathers_what_the_runs_left(tmp_path):
    from finprint.real_data import collect

    evals = tmp_path / "real" / "eval"
    evals.mkdir(parents=True)
    for name, metrics in (("det-teacher", {"box_map50": 0.2}), ("emb-student-kd-seed0", {"rank1": 0.7}), ("emb-teacher", {"rank1": 0.9})):
        (evals / f"{name}.json").write_text(json.dumps({"metrics": metrics}))
    (tmp_path / "real" / "real.json").write_text(json.dumps({"steps": {"embedder teacher (ImageNet Lite0)": {"seconds": 60.0}}}))
    real = collect(tmp_path)
    assert real["detector"]["eval"] == {"teacher": {"box_map50": 0.2}} and real["detector"]["gate"] == []
    assert list(real["embedder"]["eval"]) == ["teacher", "student-kd-seed0"]  # the teacher first
    assert "bench" not in real and real["steps"]["embedder teacher (ImageNet Lite0)"]["seconds"] == 60.0


def test_the_real_data_runner_issues_commands_the_cli_accepts(tmp_path, monkeypatch):
    # Every step of `python -m finprint.results --only real` is a finprint command line: parse each with the real
    # parser (and its --set options with the typed options), and fake its output so the next step runs.
    import dataclasses

    from finprint.demo import Demo
    from finprint.real_data import RealData, RealPreset, RealRun

    shared = _shared(tmp_path)
    issued: list[list[str]] = []
    monkeypatch.setattr(Demo, "_finprint", _fake_cli(issued))
    preset = dataclasses.replace(RealPreset(), seeds=(0,), student_lanes=1)
    real = RealRun(tmp_path / "work", RealData.under(shared), preset, "cpu", only="detector").run()
    commands = [a[0] for a in issued]
    assert commands == ["train", "train", "distill", "distill", "eval", "eval", "eval", "eval", "calib", "export", "bench", "data", "data"]
    assert "--pretrained" in issued[1] and "freeze_stages=3" not in issued[1]  # the from-scratch teacher trains everything
    assert set(real["detector"]["eval"]) == {"teacher", "teacher-scratch", "student-kd-seed0", "student-nokd-seed0"}


def test_every_finished_run_gets_its_wall_time_and_a_chain_that_found_no_fish_says_so(tmp_path):
    import os

    from finprint.real_data import collect
    from finprint.real_report import render_real

    for name, seconds in (("det-student-kd-seed1", 600), ("emb-teacher", 3000), ("det-student-nokd-seed0", None)):
        run = tmp_path / "real" / name
        run.mkdir(parents=True)
        (run / "config.json").write_text("{}")
        if seconds is not None:  # an unfinished run has no COMPLETE and no time
            (run / "COMPLETE").write_text("")
            start = (run / "config.json").stat().st_mtime
            os.utime(run / "COMPLETE", (start + seconds, start + seconds))
    real = collect(tmp_path)
    assert real["run_seconds"] == {"det-student-kd-seed1": 600, "emb-teacher": 3000}
    real["bench"] = {"models": [], "pipeline": [{"precision": "int8", "ms_per_frame": 6.0, "frames_per_s": 170.0,
                                                 "fish_per_frame": 0.0, "ms_per_fish": 0.3}]}
    text = render_real(real, "test machine")
    assert "| det-student-kd-seed1 | 10.000 |" in text and "| emb-teacher | 50.000 |" in text
    assert "no fish found, so no time per fish" in text and "0.3 ms per fish" not in text


def test_one_half_replaces_only_its_subsection(tmp_path):
    md, js = tmp_path / "RESULTS.md", tmp_path / "results.json"
    md.write_text("# finprint results\n\n## Synthetic farm\n\nfarm numbers\n")
    full = {**REAL, "embedder": {"eval": {"teacher": {"rank1": 0.69}}, "gate": []},
            "bench": {"models": [{"file": "embedder-teacher-x.fp32.onnx", "precision": "fp32", "p50_ms": 4.0}]}}
    write(full, "x86_64, 2 CPU cores", md, js)
    stale = json.loads(js.read_text()) | {"f4k-tracklets/embedder/teacher-scratch/rank1": 0.5, "joint/embedder/x/f4k/rank1": 0.4}
    js.write_text(json.dumps(stale))
    again = {"preset": {"emb_teacher": "new-teacher", "det_teacher": "old"}, "steps": {},
             "embedder": {"eval": {"teacher": {"rank1": 0.81}}, "gate": [],
                          "bench": {"models": [{"file": "embedder-teacher-y.fp32.onnx", "precision": "fp32", "p50_ms": 5.0}]}},
             "run_seconds": {"emb-teacher": 1500.0, "det-teacher": 99.0}}
    write(again, "x86_64, 2 CPU cores", md, js, only="embedder", command="python -m finprint.results --only real-embedder")
    text = md.read_text()
    assert text.count(BEGIN) == 1 and "farm numbers" in text
    assert "| teacher, ImageNet Lite0 (fine-tuned) | 0.410 | 0.150 |" in text  # the detector half is kept
    assert "0.690" not in text and "| teacher, ImageNet Lite0 (fine-tuned) | 0.810 |" in text
    assert '`python -m finprint.results --only real-embedder`' in text and '"emb_teacher": "new-teacher"' in text
    assert '"det_teacher"' not in text.split("### Embedder")[1].split("### Bench")[0]
    assert "embedder-teacher-y.fp32.onnx" in text and "embedder-teacher-x.fp32.onnx" in text  # its own bench, and the full run's
    assert "| emb-teacher | 25.000 |" in text and "| det-teacher |" not in text
    keys = json.loads(js.read_text())
    assert keys["f4k-tracklets/embedder/teacher/rank1"] == 0.81 and keys["deepfish/detector/teacher/box_map50"] == 0.41
    assert not any(k.startswith(("f4k-tracklets/embedder/teacher-scratch", "joint/")) for k in keys)  # not rerun: gone


def _shared(tmp_path: Path) -> Path:
    """Empty stand-ins for ../shared/data's four folders (the runner only checks they exist)."""
    shared = tmp_path / "shared"
    for folder in ("deepfish", "f4k-tracklets", "ras-frames", "deepfish-masks"):
        (shared / folder).mkdir(parents=True)
    (shared / "deepfish-masks" / "instances.json").write_text("{}")
    return shared


def _fake_cli(issued: list[list[str]], rank1=lambda out: 0.5):
    """A stand-in for `finprint ARGV` that parses ARGV with the real parser (and --set with the typed options) and
    writes the output the next step looks for."""
    from finprint.cli import build_parser
    from finprint.distill.cli_train import parse_extra
    from finprint.distill.options import parse_options

    def fake_finprint(self, *argv, ok_codes=(0,)):
        args = build_parser(list(argv)).parse_args(list(argv))
        issued.append(list(argv))
        if argv[0] in ("train", "distill"):
            task = args.task if argv[0] == "train" else ("detect" if "det-" in args.out else "embed")
            parse_options(task, parse_extra(args.set))
            out = Path(args.out)
            out.mkdir(parents=True)
            (out / "config.json").write_text(json.dumps({"model": args.model if argv[0] == "train" else args.student,
                                                         "epochs": args.epochs}))
            (out / "COMPLETE").write_text("{}")
        elif argv[0] == "eval" and args.json_out is None:  # the matches picture
            Path(argv[argv.index("--matches") + 1]).parent.mkdir(parents=True, exist_ok=True)
            Path(argv[argv.index("--matches") + 1]).write_text("")
        elif argv[0] == "eval":
            Path(args.json_out).write_text(json.dumps({"model": args.model, "metrics": {"box_map50": 0.1, "rank1": rank1(args.json_out),
                                                                                       "map": 0.4}}))
        elif argv[0] == "calib":
            Path(args.out).mkdir(parents=True)
            (Path(args.out) / "calib.json").write_text("{}")
        elif argv[0] == "export":
            Path(args.out).mkdir(parents=True)
            (Path(args.out) / "student.int8.onnx").write_text("")
            stages = [("teacher fp32", "fp32", 0.7), ("student fp32", "fp32", 0.6), ("student int8", "int8", 0.55)]
            (Path(args.out) / "student.int8.manifest.json").write_text(json.dumps({"accuracy": [
                {"stage": stage, "precision": precision, "metrics": {"map": score}} for stage, precision, score in stages]}))
        elif argv[0] == "data":
            Path(args.out).mkdir(parents=True)
        elif argv[0] == "bench":
            Path(argv[argv.index("--json") + 1]).write_text(json.dumps({"models": [], "pipeline": []}))
        return 0

    return fake_finprint


def test_the_joint_embedder_is_trained_on_both_and_scored_on_both(tmp_path, monkeypatch):
    import dataclasses

    from finprint.demo import Demo
    from finprint.real_data import RealData, RealPreset, RealRun, collect
    from finprint.real_report import render_real

    shared = _shared(tmp_path)
    farm = tmp_path / "work" / "farm"
    (farm / "farm" / "reid").mkdir(parents=True)
    (farm / "emb-student-nokd").mkdir()
    (farm / "emb-student-nokd" / "COMPLETE").write_text("")
    (farm / "emb-student-nokd" / "config.json").write_text(json.dumps({"model": "embed-student-s", "epochs": 40}))
    issued: list[list[str]] = []
    scores = {"f4k-on-f4k": 0.7, "farm-on-farm": 0.9, "both-on-f4k": 0.68, "both-on-farm": 0.93}
    monkeypatch.setattr(Demo, "_finprint", _fake_cli(issued, lambda out: scores.get(Path(out).stem, 0.1)))
    preset = dataclasses.replace(RealPreset(), seeds=(0,), student_lanes=1, scratch=())
    RealRun(tmp_path / "work", RealData.under(shared), preset, "cpu", only="embedder", farm=farm).run()
    merge = next(a for a in issued if a[0] == "data")
    assert merge[1] == "merge-reid" and merge[merge.index("--eval-from") + 1] == "farm"
    joint = next(a for a in issued if a[0] == "distill" and "emb-joint-nokd-seed0" in a[a.index("--out") + 1])
    assert "--no-kd" in joint and joint[joint.index("--data") + 1] == merge[merge.index("--out") + 1]
    text = render_real(collect(tmp_path / "work"), "test machine")
    assert f"| f4k-tracklets + synthetic farm | {RealPreset().emb_student}, 8 epochs | 0.680 |" in text
    assert "| synthetic farm only | embed-student-s, 40 epochs |" in text
    assert "on the f4k test set, trained on both minus trained on f4k alone, points: rank1 -2.0" in text
    assert "on the farm test set, trained on both minus trained on farm alone, points: rank1 +3.0" in text


def test_without_a_farm_run_the_joint_embedder_is_skipped(tmp_path, monkeypatch):
    import dataclasses

    from finprint.demo import Demo
    from finprint.real_data import RealData, RealPreset, RealRun

    shared = _shared(tmp_path)
    issued: list[list[str]] = []
    monkeypatch.setattr(Demo, "_finprint", _fake_cli(issued))
    preset = dataclasses.replace(RealPreset(), seeds=(0,), student_lanes=1, scratch=())
    real = RealRun(tmp_path / "work", RealData.under(shared), preset, "cpu", only="embedder", farm=tmp_path / "nofarm").run()
    assert "joint" not in real["embedder"] and not any(a[0] == "data" for a in issued)


def test_a_second_full_run_keeps_the_first_runs_step_times(tmp_path, monkeypatch):
    # Every step of the second run is skipped (done): the section still shows what the first one measured.
    import dataclasses

    from finprint import results
    from finprint.demo import Demo
    from finprint.real_data import RealPreset

    shared = _shared(tmp_path)
    monkeypatch.setattr(Demo, "_finprint", _fake_cli([]))
    monkeypatch.setitem(results.REAL_PRESETS, "cpu", dataclasses.replace(RealPreset(), student_lanes=1))  # in-process
    monkeypatch.setattr(results.RealRun, "bench", lambda self, kinds=(): {"models": [], "pipeline": []})
    monkeypatch.setattr(results.RealRun, "pictures", lambda self, kinds=(): {})
    argv = ["--only", "real", "--workdir", str(tmp_path / "work"), "--shared", str(shared), "--out", str(tmp_path / "R.md"),
            "--real-seeds", "0", "--no-scratch"]
    assert results.main(argv) == 0
    assert results.main(argv) == 0
    text = (tmp_path / "R.md").read_text()
    assert "| eval det-teacher |" in text and "| eval emb-teacher |" in text and "| eval det-teacher | - |" not in text


def test_the_embedder_student_is_also_fine_tuned_with_fake_quantisation_and_gated_beside_ptq(tmp_path, monkeypatch):
    import dataclasses

    from finprint.demo import Demo
    from finprint.real_data import RealData, RealPreset, RealRun, collect
    from finprint.real_report import render_real, results_json

    shared = _shared(tmp_path)
    issued: list[list[str]] = []
    monkeypatch.setattr(Demo, "_finprint", _fake_cli(issued))
    preset = dataclasses.replace(RealPreset(), seeds=(0,), student_lanes=1, scratch=())
    RealRun(tmp_path / "work", RealData.under(shared), preset, "cpu", only="embedder").run()
    qat = next(a for a in issued if "--qat" in a)
    assert qat[0] == "distill" and qat[qat.index("--init") + 1].endswith("emb-student-kd-seed0")
    assert qat[qat.index("--epochs") + 1] == str(preset.emb_qat_epochs) and qat[qat.index("--lr") + 1] == str(preset.emb_qat_lr)
    export = next(a for a in issued if a[0] == "export" and a[a.index("--run") + 1] == qat[qat.index("--out") + 1])
    assert export[export.index("--precision") + 1] == "int8" and "--calib" not in export  # QAT carries its own scales
    real = collect(tmp_path / "work")
    assert [g["stage"] for g in real["embedder"]["gate"]] == [
        "teacher fp32", "student fp32", "student int8", "QAT student fp32", "QAT student int8"]
    assert "| QAT student int8 | int8 |" in render_real(real, "test machine")
    assert results_json(real)["f4k-tracklets/embedder/gate/QAT-student-int8/map"] == 0.55

    issued.clear()
    off = dataclasses.replace(preset, emb_qat_epochs=0)
    RealRun(tmp_path / "work-no-qat", RealData.under(shared), off, "cpu", only="embedder").run()
    assert not any("--qat" in a for a in issued) and sum(a[0] == "export" for a in issued) == 1


def test_the_bench_line_names_the_ptq_and_the_qat_int8_students_apart():
    from finprint.real_report import _speed_lines

    rows = [{"file": "embedder-teacher-t.fp32.onnx", "precision": "fp32", "p50_ms": 3.0},
            {"file": "embedder-qat-s.int8.onnx", "precision": "int8", "p50_ms": 0.75},
            {"file": "embedder-s.int8.onnx", "precision": "int8", "p50_ms": 1.0}]
    lines = _speed_lines({"models": rows}, "embedder")
    assert lines[0].startswith("- embedder: INT8 student 3.0x faster") and "p50 1.0 ms vs 3.0 ms" in lines[0]
    assert lines[1].startswith("- embedder: QAT INT8 student 4.0x faster")
    assert _speed_lines({"models": rows[::2]}, "embedder") == [lines[0]]  # no QAT export: no QAT line
