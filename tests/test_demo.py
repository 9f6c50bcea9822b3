"""The README's main job, end to end on the tiny `smoke` preset (every step runs; numbers mean nothing)."""

import json

from finprint.cli import main


def test_demo_runs_every_step_and_writes_its_report(tmp_path):
    work = tmp_path / "demo"
    assert main(["demo", "--preset", "smoke", "--workdir", str(work), "--device", "cpu"]) == 0
    results = json.loads((work / "demo.json").read_text())
    for step in ("farm", "detector teacher", "detector student (KD)", "embedder student (no KD)",
                 "export detector student", "bench", "daemon on a farm video"):
        assert step in results["steps"], step
    assert "tuned" in results["daemon"]["open_set"]  # tuned on calib/ videos, or said why not
    assert (work / "REPORT.md").read_text().startswith("# finprint demo report")
    assert (work / "report.png").stat().st_size > 10_000
    assert sorted(p.name for p in (work / "models" / "detector").glob("*.int8.onnx"))
    # A second run continues: every step is already done.
    assert main(["demo", "--preset", "smoke", "--workdir", str(work), "--device", "cpu"]) == 0
    again = json.loads((work / "demo.json").read_text())
    assert all(step.get("skipped") for step in again["steps"].values())
