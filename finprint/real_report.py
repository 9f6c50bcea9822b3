"""The real-data sections of docs/RESULTS.md and their numbers in docs/results.json, from WORKDIR/real/real.json.

One key per dataset/model/stage in the JSON (e.g. `deepfish/detector/teacher/box_map50`), so a reader or a
script finds a number without parsing the document. Only what the run measured is written; a step that was
not run says so in the text instead of leaving a blank.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from finprint.distill.report import markdown_table

DETECT_KEYS = ("box_map50", "box_map", "mask_map50", "mask_map")
EMBED_KEYS = ("rank1", "rank5", "map", "auroc", "fpr95")
BEGIN, END = "<!-- real-data:begin -->", "<!-- real-data:end -->"
YOLO_BASELINE = "Ultralytics YOLOv8n from scratch on the same split: box mAP50 0.136 / mAP50-95 0.040"
LABELS = {
    "teacher": "teacher, ImageNet Lite0 (fine-tuned)",
    "teacher-scratch": "teacher, from scratch (same recipe)",
}


def _label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    match = re.fullmatch(r"student-(kd|nokd)-seed(\d+)", name)
    if match:
        return f"student {'+ KD' if match.group(1) == 'kd' else 'without KD'}, seed {match.group(2)}"
    return name


def _seconds(real: dict, step_prefix: str, run: str) -> str:
    step = next((v for k, v in real.get("steps", {}).items() if k.startswith(step_prefix)), None)
    if run in real.get("run_seconds", {}):
        return f"{real['run_seconds'][run] / 60:.0f} min wall clock (config.json to COMPLETE)"
    if not step:
        return "not run"
    if step.get("skipped"):
        return "kept from an earlier run"
    return f"{step['seconds'] / 60:.0f} min"


def _rows(evals: dict, keys: tuple[str, ...]) -> list[dict]:
    return [{"model": _label(name), **{k: m.get(k) for k in keys}} for name, m in evals.items()]


def _scratch_line(evals: dict, kind: str) -> list[str]:
    if "teacher-scratch" in evals:
        return []
    return [f"The same teacher recipe from scratch was not trained in this run (`--scratch` leaves the {kind} out).", ""]


def _kd_lines(evals: dict, keys: tuple[str, ...]) -> list[str]:
    lines = []
    for name in sorted(evals):
        match = re.fullmatch(r"student-kd-seed(\d+)", name)
        plain = evals.get(f"student-nokd-seed{match.group(1)}") if match else None
        if not match or plain is None:
            continue
        parts = [f"{k} {100 * (evals[name][k] - plain[k]):+.1f}" for k in keys if evals[name].get(k) is not None and plain.get(k) is not None]
        lines.append(f"- seed {match.group(1)}: KD minus no-KD, points: {', '.join(parts)}")
    return lines


def _gate_rows(gate: list[dict], keys: tuple[str, ...]) -> list[dict]:
    return [{"stage": g["stage"], "precision": g["precision"], **{k: g["metrics"].get(k) for k in keys}} for g in gate]


def _bench_rows(bench: dict) -> list[dict]:
    keep = ("file", "precision", "size_bytes", "parameters", "p50_ms", "p95_ms", "images_per_s")
    return [{k: r.get(k) for k in keep} for r in bench.get("models", [])]


def _speed_line(bench: dict, kind: str, qat: bool = False) -> str:
    """The INT8 student's p50 against the fp32 teacher's; `qat`: the QAT export's INT8 student (bench files
    "KIND-qat-...") instead of the PTQ one ("KIND-...")."""
    rows = [r for r in bench.get("models", []) if r["file"].startswith(f"{kind}-")]
    teacher = next((r for r in rows if "teacher" in r["file"]), None)
    student = next((r for r in rows if "teacher" not in r["file"] and r["precision"] == "int8"
                    and r["file"].startswith(f"{kind}-qat-") == qat), None)
    label = "QAT INT8 student" if qat else "INT8 student"
    if not teacher or not student:
        return "" if qat else f"- {kind}: {label} vs fp32 teacher: not measured"
    return (f"- {kind}: {label} {teacher['p50_ms'] / student['p50_ms']:.1f}x faster than the fp32 teacher "
            f"(p50 {student['p50_ms']:.1f} ms vs {teacher['p50_ms']:.1f} ms)")


def _speed_lines(bench: dict, kind: str) -> list[str]:
    return [line for line in (_speed_line(bench, kind), _speed_line(bench, kind, qat=True)) if line]


DETECTOR_HEADING = "### Detector on DeepFish"
EMBEDDER_HEADING = "### Embedder on f4k-tracklets"


def _detector_lines(det: dict, real: dict) -> list[str]:
    return [
        f"{DETECTOR_HEADING} (validation habitats 7398 + 9866: 727 frames, 831 fish in deepfish-masks; never trained or calibrated on)",
        "",
        "Boxes as published; masks are SAM's (deepfish-masks, non-commercial), so mask mAP measures agreement with SAM.",
        "",
        markdown_table(_rows(det["eval"], DETECT_KEYS)),
        "",
        f"Reference: {YOLO_BASELINE}. Teacher training time: {_seconds(real, 'detector teacher (ImageNet', 'det-teacher')}.",
        "",
        *_scratch_line(det["eval"], "detector"),
        *_kd_lines(det["eval"], ("box_map50", "box_map")),
        "",
        "Export gate (teacher fp32 -> student fp32 -> fp16 -> INT8, on the validation habitats):",
        "",
        markdown_table(_gate_rows(det.get("gate", []), DETECT_KEYS)),
        "",
    ]


def _embedder_lines(emb: dict, real: dict) -> list[str]:
    return [
        f"{EMBEDDER_HEADING} (603 test trajectories: s2 queries vs s1 gallery; open set = half the "
        "trajectories enrolled, the other half's queries as strangers)",
        "",
        markdown_table(_rows(emb["eval"], EMBED_KEYS)),
        "",
        f"Teacher training time: {_seconds(real, 'embedder teacher (ImageNet', 'emb-teacher')}.",
        "",
        *_scratch_line(emb["eval"], "embedder"),
        *_kd_lines(emb["eval"], ("rank1", "map")),
        "",
        "Export gate (teacher fp32 -> student fp32 -> fp16 -> INT8 by post-training calibration; QAT: the KD student "
        "fine-tuned with fake quantisation, teacher still teaching, then INT8; on the test gallery/query):",
        "",
        markdown_table(_gate_rows(emb.get("gate", []), EMBED_KEYS)),
        "",
        *_joint_lines(emb.get("joint", {})),
    ]


JOINT_LABELS = {"f4k": "f4k-tracklets only", "farm": "synthetic farm only", "both": "f4k-tracklets + synthetic farm"}
JOINT_KEYS = ("rank1", "map", "auroc")
JOINT_TESTS = ("f4k", "farm")  # beside each test's metrics, a joint entry carries its run's "recipe"


def _joint_lines(joint: dict) -> list[str]:
    """One embedder for real and synthetic fish: each no-KD student on both test sets, and the verdict in points."""
    if not joint:
        return []
    rows = [{"trained on": JOINT_LABELS.get(name, name), "model": joint[name].get("recipe"),
             **{f"{test} {k}": joint[name].get(test, {}).get(k) for test in JOINT_TESTS for k in JOINT_KEYS}}
            for name in ("f4k", "farm", "both") if name in joint]
    lines = ["One embedder for real and synthetic fish: the no-KD edge student (seed 0) trained on each data set alone and on "
             "both together (`finprint data merge-reid`; validation on the farm's gallery only), each scored on both test "
             "sets (f4k-tracklets' s2-vs-s1 split; the farm's gallery/query). The farm-only student is the farm pipeline's "
             "own; the joint one follows the f4k recipe.", "", markdown_table(rows), ""]
    both = joint.get("both", {})
    for test in JOINT_TESTS:
        alone = joint.get(test, {}).get(test, {})
        if both.get(test) and alone:
            parts = ", ".join(f"{k} {100 * (both[test][k] - alone[k]):+.1f}" for k in JOINT_KEYS
                              if both[test].get(k) is not None and alone.get(k) is not None)
            lines.append(f"- on the {test} test set, trained on both minus trained on {test} alone, points: {parts}")
    return [*lines, ""]


def _run_time_lines(real: dict, prefix: str = "") -> list[str]:
    runs = {k: v for k, v in real.get("run_seconds", {}).items() if k.startswith(prefix)}
    if not runs:
        return []
    return ["Training wall time of each run (config.json to COMPLETE; runs side by side share the 2 cores):", "",
            markdown_table([{"run": k, "minutes": round(v / 60, 1)} for k, v in sorted(runs.items())]), ""]


def render_real(real: dict, machine: str) -> str:
    """Markdown for the real-data sections (between markers, so a partial rerun can replace just them)."""
    lines = [BEGIN, "## Real fish", "",
             f"Runs: `python -m finprint.results --only real` on {machine} (each step an ordinary `finprint` command, "
             f"skipped once done; `--only real-report` renders this section from what they left). Preset "
             f"`{json.dumps(real.get('preset', {}))}`.", ""]
    if real.get("detector"):
        lines += _detector_lines(real["detector"], real)
    if real.get("embedder"):
        lines += _embedder_lines(real["embedder"], real)
    bench = real.get("bench")
    if bench:
        lines += ["### Bench (ONNX Runtime CPU, 2 threads, all models interleaved in one run)", "",
                  markdown_table(_bench_rows(bench)), "", *_speed_lines(bench, "detector"), *_speed_lines(bench, "embedder"), ""]
        for pipe in bench.get("pipeline", []):
            found = (f"{pipe['fish_per_frame']:.1f} fish found per frame, {pipe['ms_per_fish']:.1f} ms per fish"
                     if pipe["fish_per_frame"] > 0 else "no fish found, so no time per fish")
            lines.append(f"- {pipe['precision']} chain (detector -> crops -> embedder) on the crowded ras-frames: "
                         f"{pipe['ms_per_frame']:.0f} ms per frame ({pipe['frames_per_s']:.1f} frames/s), {found}")
        lines.append("")
    for name in real.get("pictures") or {}:
        lines += [f"![{name}](img/real_{name}.png)", ""]
    lines += _run_time_lines(real)
    steps = real.get("steps", {})
    if steps:
        lines += ["Wall time of each step (this machine):", "",
                  markdown_table([{"step": k, "minutes": None if v.get("skipped") else round(v["seconds"] / 60, 1)} for k, v in steps.items()]), ""]
    lines.append(END)
    return "\n".join(lines)


def render_half(real: dict, kind: str, machine: str, command: str) -> list[str]:
    """One half's subsection as `--only real-detector|real-embedder` leaves it: the half's own command, preset
    keys, run times and bench (its models alone), so it stands beside the other half's older numbers."""
    part = real[kind]
    prefix = "det" if kind == "detector" else "emb"
    preset = {k: v for k, v in real.get("preset", {}).items() if k.startswith(prefix) or k in ("seeds", "scratch", "calib_size")}
    lines = (_detector_lines if kind == "detector" else _embedder_lines)(part, real)
    lines[1:1] = ["", f"Rerun on its own: `{command}` on {machine}; preset `{json.dumps(preset)}`. The bench below times this "
                      f"half's models alone; the interleaved bench further down is the last full run's."]
    bench = part.get("bench")
    if bench:
        lines += [markdown_table(_bench_rows(bench)), "", *_speed_lines(bench, kind), ""]
    return lines + _run_time_lines(real, f"{prefix}-")


def splice_half(document: str, kind: str, lines: list[str]) -> str:
    """Replace one half's subsection inside the real-data section (up to the next `### ` heading or the section's
    end), or put it first in the section when the document has none."""
    heading = DETECTOR_HEADING if kind == "detector" else EMBEDDER_HEADING
    if BEGIN not in document or END not in document:
        return splice(document, "\n".join([BEGIN, "## Real fish", "", *lines, END]))
    head, rest = document.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    rows = body.split("\n")
    start = next((i for i, row in enumerate(rows) if row.startswith(heading)), None)
    if start is None:
        start = end = next((i for i, row in enumerate(rows) if row.startswith("### ")), len(rows))
    else:
        end = next((i for i in range(start + 1, len(rows)) if rows[i].startswith("### ")), len(rows))
    return head + BEGIN + "\n".join([*rows[:start], *lines, *rows[end:]]) + END + tail


# The results.json keys that belong to each half (results_json below).
HALF_KEYS = {"detector": ("deepfish/",), "embedder": ("f4k-tracklets/", "joint/")}


def results_json(real: dict) -> dict[str, float]:
    """Flat `dataset/model/run/metric` keys for docs/results.json."""
    out: dict[str, float] = {}
    for dataset, kind, keys in (("deepfish", "detector", DETECT_KEYS), ("f4k-tracklets", "embedder", EMBED_KEYS)):
        part = real.get(kind) or {}
        for run, metrics in part.get("eval", {}).items():
            for k in keys:
                if metrics.get(k) is not None:
                    out[f"{dataset}/{kind}/{run}/{k}"] = metrics[k]
        for trained, tests in part.get("joint", {}).items():
            for test in JOINT_TESTS:
                metrics = tests.get(test, {})
                for k in keys:
                    if metrics.get(k) is not None:
                        out[f"joint/embedder/trained-on-{trained}/{test}/{k}"] = metrics[k]
        for g in part.get("gate", []):
            stage = g["stage"].replace(" ", "-")
            for k in keys:
                if g["metrics"].get(k) is not None:
                    out[f"{dataset}/{kind}/gate/{stage}/{k}"] = g["metrics"][k]
    for r in (real.get("bench") or {}).get("models", []):
        out[f"bench/{r['file']}/p50_ms"] = r["p50_ms"]
    for pipe in (real.get("bench") or {}).get("pipeline", []):
        for key in ("ms_per_frame", "fish_per_frame", "ms_per_fish"):
            out[f"ras-frames/chain-{pipe['precision']}/{key}"] = pipe[key]
    for name, step in real.get("steps", {}).items():
        if not step.get("skipped"):
            out[f"seconds/{name}"] = step["seconds"]
    return out


def splice(document: str, section: str) -> str:
    """Put `section` (BEGIN..END) in place of the old one, or first after the title when there is none."""
    if BEGIN in document and END in document:
        head, rest = document.split(BEGIN, 1)
        return head + section + rest.split(END, 1)[1]
    lines = document.splitlines()
    cut = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    return "\n".join([*lines[:cut], section, "", *lines[cut:]]) + "\n"


def write(real: dict, machine: str, results_md: Path, results_js: Path, only: str | None = None, command: str = "") -> None:
    """The real-data section (or, with `only`, that half's subsection) into RESULTS.md, its keys into results.json."""
    img = results_md.parent / "img"
    for name, path in (real.get("pictures") or {}).items():
        img.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, img / f"real_{name}.png")
    document = results_md.read_text() if results_md.is_file() else "# finprint results\n"
    if only:
        real = {k: v for k, v in real.items() if k not in ({"detector", "embedder"} - {only}) and k != "bench"}
        results_md.write_text(splice_half(document, only, render_half(real, only, machine, command)))
    else:
        results_md.write_text(splice(document, render_real(real, machine)))
    merged = json.loads(results_js.read_text()) if results_js.is_file() else {}
    if only:  # the half's earlier keys go: a run this rerun skipped (a scratch teacher, the joint one) is not its
        merged = {k: v for k, v in merged.items() if not k.startswith(HALF_KEYS[only])}
    merged.update(results_json(real))
    results_js.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")
