"""Turn the demo's collected results into REPORT.md and report.png.

Every number comes from the JSON the demo's commands wrote (eval, export manifests, bench, the
daemon's score); nothing here measures or invents anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finprint.distill.report import markdown_table
from finprint.tune.score import covered_sentence, frames_sentence, mixed_sentence

DETECT_COLUMNS = ("box_map", "box_map50", "mask_map", "mask_map50")
EMBED_COLUMNS = ("rank1", "rank5", "map", "auroc", "fpr95")
ROLES = {"teacher": "teacher", "student-kd": "student + KD", "student-nokd": "student, no KD"}


def _per_detection_sentence(per_box: dict | None) -> str:
    """The embedder alone on the tuning videos, box by box (tune/score.py DetectionReport)."""
    if not per_box or not per_box.get("known_boxes"):
        return ""
    return (f" The embedder alone on those videos, box by box (no tracker, no voting): the closest enrolled fish is "
            f"right for {100 * per_box['rank1']:.1f}% of {per_box['known_boxes']} boxes of enrolled fish (in clear view "
            f"{100 * per_box['clear_view_rank1']:.1f}%, partly hidden {100 * per_box['partly_hidden_rank1']:.1f}%); a "
            f"stranger's box vs a rightly named one: AUROC {per_box['stranger_auroc']:.3f}.")


def _detector_sentence(found: dict | None) -> str:
    """The detector alone on the tuning videos (tune/score.py DetectorRecall)."""
    if not found or not found.get("clear_view_fish"):
        return ""
    bands = ", ".join(f"{b['band']} {100 * b['found']:.1f}%" for b in found["by_length"] if b["fish"])
    return (f" The detector alone: {100 * found['clear_view_found']:.1f}% of {found['clear_view_fish']} fish in clear view "
            f"found as one box (IoU >= 0.5; by length {bands}), {found['stray_boxes_per_frame']:.2f} boxes per frame "
            "matching no fish.")


def _by_length_sentence(split: dict | None) -> str:
    """The tuned setting's tracks split by how long they were followed (tune/score.py LengthSplit)."""
    if not split:
        return ""

    def part(side: dict) -> str:
        known = f"{100 * side['known_accuracy']:.1f}% of {side['known_tracks']}" if side["known_tracks"] else "none"
        strangers = f"{100 * side['unknown_flag_rate']:.1f}% of {side['unknown_tracks']}" if side["unknown_tracks"] else "none"
        return f"known named right {known}, strangers flagged {strangers}"

    return (f" By track length: under {split['seconds']:g} s {part(split['short'])}; {split['seconds']:g} s or longer "
            f"{part(split['long'])}.")


def _whitening_phrase(whitening: dict | None) -> str:
    """Whether tune-open-set kept the gallery whitened (reports from before it judged whitening say nothing)."""
    if not whitening or whitening.get("whitened_value") is None:
        return ""
    state = "not whitened"
    if whitening.get("strength") is not None:
        tracker = ", the tracker comparing fish in it too" if whitening.get("tracker_space") == "gallery" else ""
        state = f"whitened (strength {whitening['strength']:g}{tracker})"
    return (f", gallery {state}: it met the targets to {whitening['whitened_value']:.3f} whitened vs "
            f"{whitening['plain_value']:.3f} plain")


def _splitting_phrase(splitting: dict | None) -> str:
    """Whether tune-open-set split tracks that came to follow another fish (older reports say nothing)."""
    if not splitting or len(splitting.get("values") or {}) < 2:
        return ""
    values = splitting["values"]
    tried = ", ".join(f"{f'{w} frames' if str(w) != '0' else 'none'} {v:.3f}" for w, v in values.items())
    state = f"split after {splitting['window']} frames that mostly show another fish" if splitting.get("window") else "not split"
    return f", tracks {state} (targets met: {tried})"


def _reporting_phrase(reporting: dict | None) -> str:
    """How many frames tune-open-set made a track wait before it is reported (older reports say nothing)."""
    if not reporting or len(reporting.get("values") or {}) < 2:
        return ""
    uncovered = reporting.get("uncovered") or {}
    tried = ", ".join(f"{n} {v:.3f}" + (f" / {100 * uncovered[n]:.0f}%" if uncovered.get(n) is not None else "")
                      for n, v in reporting["values"].items())
    hits = reporting["min_hits"]
    return (f", tracks reported once seen in {2 * hits - 1} frames (min_hits {hits}; min_hits tried: targets met / "
            f"fish instances under no track: {tried})")


def daemon_score_lines(daemon: dict) -> list[str]:
    """The daemon's score on the farm videos as report bullets, from daemon_score.json (demo and results)."""
    return [
        f"- known-individual tracks identified correctly: {100 * daemon['known_accuracy']:.1f}% "
        f"({daemon['known_correct']}/{daemon['known_tracks']})",
        f"- unknown-individual tracks flagged unknown: {100 * daemon['unknown_flag_rate']:.1f}% "
        f"({daemon['unknown_flagged']}/{daemon['unknown_tracks']})",
        f"- tracks matching no ground-truth fish: {daemon['unmatched_tracks']}",
        *([f"- {mixed_sentence(daemon['mixed_wrong'], sum(daemon['mistakes'].values()))}"] if "mixed_wrong" in daemon else []),
        *([f"- {frames_sentence(daemon['known_frames_right'], daemon['known_frames'], daemon['unknown_frames_flagged'], daemon['unknown_frames'])}"]
          if "known_frames" in daemon else []),
        *([f"- {covered_sentence(tuple(daemon['covered']))}"] if "covered" in daemon else []),
    ]


def reviewed_sentence(daemon: dict) -> str:
    """Tuning from reviewed tracks beside tuning from the ground-truth files, on the same scored videos."""
    rev = daemon.get("reviewed")
    if not rev:
        return ""
    tally = rev["review"]
    judged = (f"the daemon's chain kept {tally['kept']} tracks of the tuning videos for review; a reviewer who knows "
              f"their ground truth (tune/reviewer.py) judged the {tally['kept'] - tally['not_shown']} the review queue "
              f"showed: {tally['confirmed']} \"this is <fish>\", {tally['new']} \"new fish\", {tally['ignored']} ignored")
    if not rev.get("tuned"):
        return f"Tuning from reviews instead: {judged}; too few for `finprint tune-open-set --from-reviews`, which kept the defaults."
    tuned, farm, same = rev["open_set"], rev["farm"], rev["rule_only"]

    def pts(a: float, b: float) -> str:
        return f"{100 * (a - b):+.1f} points"

    return (
        f"Tuning from reviews instead of the ground-truth files: {judged}. `finprint tune-open-set --from-reviews` rests "
        f"on {tuned['known_tracks']} genuine and {tuned['unknown_tracks']} stranger tracks (reviews plus leave-one-fish-out "
        f"on the enrolment) and sets threshold {tuned['threshold']:.2f}, margin {tuned['margin']:.2f}. On the same scored "
        f"videos, with the gallery as the farm then runs it (the reviews' enrolments in it, the default tracker): known "
        f"tracks named right {100 * farm['known_accuracy']:.1f}% ({pts(farm['known_accuracy'], daemon['known_accuracy'])} "
        f"against tuning from ground truth), unknown tracks flagged {100 * farm['unknown_flag_rate']:.1f}% "
        f"({pts(farm['unknown_flag_rate'], daemon['unknown_flag_rate'])}); its threshold and margin alone, on the gallery "
        f"and tracker tuned from ground truth: {100 * same['known_accuracy']:.1f}% "
        f"({pts(same['known_accuracy'], daemon['known_accuracy'])}) and {100 * same['unknown_flag_rate']:.1f}% "
        f"({pts(same['unknown_flag_rate'], daemon['unknown_flag_rate'])})"
        + (f"; the reviewed gallery and its rule on the tracker tuned from ground truth (reviews cannot tune a tracker): "
           f"{100 * tracked['known_accuracy']:.1f}% ({pts(tracked['known_accuracy'], daemon['known_accuracy'])}) and "
           f"{100 * tracked['unknown_flag_rate']:.1f}% ({pts(tracked['unknown_flag_rate'], daemon['unknown_flag_rate'])}), "
           f"of {tracked['known_tracks']} and {tracked['unknown_tracks']} tracks (default tracker: {farm['known_tracks']} "
           f"and {farm['unknown_tracks']})" if (tracked := rev.get("truth_tracker")) else "")
        + "."
    )


def open_set_sentence(daemon: dict) -> str:
    """How the daemon's open-set threshold and margin (and its tracker) were set, from daemon_score.json."""
    tuned = daemon.get("open_set", {})
    if tuned.get("tuned"):
        tracking = tuned.get("tracking") or {}
        tracker = ""
        if tracking.get("tuned"):
            gate = tracking["appearance_gate"]
            tracker = (f"tracker: confident detections from score {tracking['high_score']:g}, appearance gate "
                       f"{'off' if gate is None else f'{gate:g}'} (best of {tuned.get('tracker_settings_tried', '?')} "
                       "settings tried), ")
        return (
            f"Open set tuned by `finprint tune-open-set` on the farm's separate tuning videos (tuning/, with strangers "
            f"that are not the scored videos' unknown fish): {tracker}threshold {tuned['threshold']:.2f}, "
            f"margin {tuned['margin']:.2f}{_whitening_phrase(tuned.get('whitening'))}"
            f"{_splitting_phrase(tuned.get('splitting'))}{_reporting_phrase(tuned.get('reporting'))}; on those videos "
            f"{100 * tuned['known_accuracy']:.1f}% of {tuned['known_tracks']} "
            f"known tracks named right, {100 * tuned['unknown_flag_rate']:.1f}% of {tuned['unknown_tracks']} stranger tracks "
            f"flagged (with the embedder manifest's threshold{' and the default tracker' if tracker else ''}: "
            f"{100 * tuned['before']['known_accuracy']:.1f}% and {100 * tuned['before']['unknown_flag_rate']:.1f}%). "
            "The scored videos below played no part in choosing them."
            + _by_length_sentence(tuned.get("by_track_length"))
            + _per_detection_sentence(tuned.get("per_detection"))
            + _detector_sentence(tuned.get("detector"))
        )
    return f"Open set: the embedder manifest's threshold and margin {tuned.get('margin', daemon.get('open_set_margin', 0))} (not tuned)."


def _model_size(run: Path) -> dict[str, Any]:
    """Parameters and FLOPs of a run's model at its input size (torch, so only where torch is installed)."""
    import torch

    from finprint.distill.flops import count_flops, count_params
    from finprint.distill.runs import load_model

    model, cfg = load_model(run, which="best")
    if cfg["task"] == "detect":
        size = int(cfg.get("imgsz", 320))
        example = torch.zeros(1, 3, size, size)
    else:
        example = torch.zeros(1, 3, 64, 128)
    model.eval()
    return {"params": count_params(model), "gflops": count_flops(model, example) / 1e9}


def model_rows(results: dict, workdir: Path, prefix: str, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for suffix, label in ROLES.items():
        name = f"{prefix}-{suffix}"
        record = results.get("eval", {}).get(name)
        if record is None:
            continue
        row: dict[str, Any] = {"model": f"{label} ({json.loads((workdir / name / 'config.json').read_text())['model']})"}
        row.update(_model_size(workdir / name))
        metrics = record["metrics"]
        for col in columns:
            row[col] = metrics.get(col)
        rows.append(row)
    return rows


def manifest_rows(models: Path) -> list[dict[str, Any]]:
    rows = []
    for manifest in sorted(models.glob("*/*.int8.manifest.json")):
        data = json.loads(manifest.read_text())
        for stage in data.get("accuracy", []):
            keep = DETECT_COLUMNS if data["kind"] == "detector" else EMBED_COLUMNS
            rows.append({"model": manifest.parent.name, "stage": stage["stage"],
                         **{k: v for k, v in stage["metrics"].items() if k in keep}})
    return rows


def _margins(rows: list[dict[str, Any]], *metrics: str) -> str:
    labels = {r["model"].split(" (")[0] for r in rows}
    if "student + KD" in labels and "student, no KD" not in labels:
        return "no student without KD in this preset (`python -m finprint.results` trains one)"
    return "; ".join(_margin(rows, m) for m in metrics)


def _margin(rows: list[dict[str, Any]], metric: str) -> str:
    by_label = {r["model"].split(" (")[0]: r for r in rows}
    kd, nokd = by_label.get("student + KD"), by_label.get("student, no KD")
    if not kd or not nokd or kd.get(metric) is None or nokd.get(metric) is None:
        return "n/a"
    delta = 100 * (kd[metric] - nokd[metric])
    return f"{delta:+.1f} points {metric} ({'KD helps' if delta > 0 else 'KD does not help here'})"


def write_report(results: dict, workdir: Path) -> Path:
    det_rows = model_rows(results, workdir, "det", DETECT_COLUMNS)
    emb_rows = model_rows(results, workdir, "emb", EMBED_COLUMNS)
    gate_rows = manifest_rows(workdir / "models")
    bench = results.get("bench", {})
    bench_rows = bench.get("models", bench) if isinstance(bench, dict) else bench
    bench_rows = [
        {k: r.get(k) for k in ("file", "precision", "backend", "size_bytes", "parameters", "p50_ms", "p95_ms", "images_per_s", "speedup_vs_teacher")}
        for r in (bench_rows if isinstance(bench_rows, list) else [])
    ]
    daemon = results.get("daemon", {})
    preset = results.get("preset", {})

    lines = [
        "# finprint demo report",
        "",
        f"Synthetic farm: {preset.get('images')} images, {preset.get('individuals')} known individuals, "
        f"{preset.get('unknown')} unknown, {preset.get('video_seconds')} s of video per camera. "
        f"Total time {results.get('total_seconds', 0) / 60:.1f} min.",
        "",
        "## Detector (test split)",
        "",
        markdown_table(det_rows) if det_rows else "_not run_",
        "",
        f"Distillation margin: {_margins(det_rows, 'box_map', 'mask_map')}.",
        "",
        "## Embedder (gallery/query of the test split; AUROC/FPR95 = unknown individuals)",
        "",
        markdown_table(emb_rows) if emb_rows else "_not run_",
        "",
        f"Distillation margin: {_margins(emb_rows, 'rank1', 'map')}.",
        "",
        "## Export gate (held-out set, per stage)",
        "",
        markdown_table(gate_rows) if gate_rows else "_not run_",
        "",
        "## Bench (ONNX Runtime, this machine, one run, side by side)",
        "",
        markdown_table(bench_rows) if bench_rows else "_not run_",
        "",
        "## The daemon's chain on the farm videos (INT8 detector + INT8 embedder)",
        "",
    ]
    if daemon:
        lines += [
            f"- gallery enrolled from: {daemon.get('enrolment', 'still re-ID crops')}",
            f"- {open_set_sentence(daemon)}",
            *daemon_score_lines(daemon),
            *([f"- {line}"] if (line := reviewed_sentence(daemon)) else []),
        ]
    lines += ["", "![report](report.png)", ""]
    md = workdir / "REPORT.md"
    md.write_text("\n".join(lines))
    _plot(det_rows, emb_rows, bench_rows, workdir / "report.png")
    return md


def _plot(det_rows: list[dict], emb_rows: list[dict], bench_rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, rows, metrics, title in (
        (axes[0], det_rows, ("box_map", "box_map50", "mask_map"), "Detector"),
        (axes[1], emb_rows, ("rank1", "map", "auroc"), "Embedder"),
    ):
        width = 0.8 / max(len(rows), 1)
        for i, row in enumerate(rows):
            values = [row.get(m) or 0.0 for m in metrics]
            xs = [j + i * width for j in range(len(metrics))]
            bars = ax.bar(xs, values, width, label=row["model"].split(" (")[0])
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(metrics))], metrics)
        ax.set_ylim(0, 1.05)
        ax.set_title(title)
        ax.legend(fontsize=8)
    ax = axes[2]
    if bench_rows:
        labels = [Path(r["file"]).stem.replace(".onnx", "") for r in bench_rows]
        ax.barh(labels, [r["p50_ms"] or 0 for r in bench_rows], color="tab:green")
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency per frame (ms, log)")
        ax.tick_params(axis="y", labelsize=7)
    ax.set_title("ONNX Runtime latency")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
