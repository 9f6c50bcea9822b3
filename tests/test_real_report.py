"""The real-data section of docs/RESULTS.md: rendered from real.json, spliced in place, flat JSON keys."""

from __future__ import annotations

import json

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
