"""Write docs/RESULTS.md: the demo pipeline on the synthetic farm and the detector on DeepFish.

    python -m finprint.results [--workdir runs/results] [--farm-preset results] [--deepfish ../shared/data/deepfish]
    python -m finprint.results --only daemon     # just the daemon's acceptance numbers (under 1 h 40 min on 2 CPU cores)

Runs (or continues: finished steps are kept) both pipelines with ordinary `finprint` commands, then
renders every number from the JSON those commands wrote. Rerunning on another machine rewrites the
document with that machine's numbers; the header says where they were measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from finprint.demo import PRESETS, DeepFishRun, Demo, Preset
from finprint.demo_report import (
    DETECT_COLUMNS,
    EMBED_COLUMNS,
    _margin,
    daemon_score_lines,
    manifest_rows,
    model_rows,
    open_set_sentence,
    reviewed_sentence,
    write_report,
)
from finprint.distill.report import markdown_table
from finprint.errors import FinprintError
from finprint.real_data import REAL_PRESETS, RealData, RealRun
from finprint.real_data import collect as collect_real
from finprint.real_report import BEGIN as REAL_BEGIN
from finprint.real_report import END as REAL_END
from finprint.real_report import splice as splice_real
from finprint.real_report import write as write_real

# DeepFish on 2 CPU cores: the teacher is the expensive part (about 0.2 s per 256 px image forward).
DEEPFISH_PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        images=0, individuals=0, unknown=0, video_seconds=0, size="", imgsz=256,
        det_teacher_epochs=6, det_student_epochs=6, emb_teacher_epochs=0, emb_student_epochs=0,
        batch=16, calib_size=64, train_extra=("val_max=150", "train_max=1000"), students=False,
    ),
    "gpu": Preset(
        images=0, individuals=0, unknown=0, video_seconds=0, size="", imgsz=384,
        det_teacher_epochs=40, det_student_epochs=40, emb_teacher_epochs=0, emb_student_epochs=0,
        batch=32, calib_size=256, train_extra=("workers=8",),
        det_teacher="fishseg-teacher", det_student="fishseg-student",
    ),
}
GPU_CHECK_LOG = Path("docs/gpu-check.log")
YOLO_BASELINE = "Ultralytics YOLOv8n from scratch, 40 epochs on an H100 (384 px, 12 habitats): box mAP50 0.136 / mAP50-95 0.040"


def _gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        return None


def _machine() -> str:
    gpu = _gpu_name()
    return f"{platform.machine()}, {os.cpu_count()} CPU cores" + (f", {gpu}" if gpu else ", no GPU")


def _bench_rows(bench: dict) -> list[dict]:
    keep = ("file", "precision", "size_bytes", "parameters", "flops", "p50_ms", "p95_ms", "images_per_s", "speedup_vs_teacher")
    return [{k: r.get(k) for k in keep} for r in bench.get("models", [])]


def _student_and_teacher(bench: dict, kind: str = "detector") -> tuple[dict | None, dict | None]:
    rows = bench.get("models", [])
    student = next((r for r in rows if r["file"].startswith(f"{kind}-") and ".int8." in r["file"] and "teacher" not in r["file"]), None)
    teacher = next((r for r in rows if r["file"].startswith(f"{kind}-teacher-")), None)
    return student, teacher


def _speedup(bench: dict) -> str:
    s, t = _student_and_teacher(bench)
    if not s or not t:
        return "n/a"
    return f"{t['p50_ms'] / s['p50_ms']:.1f}x faster per frame (p50 {s['p50_ms']:.1f} ms vs {t['p50_ms']:.1f} ms)"


def _int8_vs_fp32(bench: dict) -> str:
    rows = {r["precision"]: r for r in bench.get("models", []) if r["file"].startswith("detector-") and "teacher" not in r["file"]}
    if "int8" not in rows or "fp32" not in rows:
        return "n/a"
    i8, f32 = rows["int8"]["p50_ms"], rows["fp32"]["p50_ms"]
    verdict = "faster" if i8 < f32 else "slower: ONNX Runtime's U8S8 kernels do not pay off for so small a network on this CPU"
    return f"p50 {i8:.1f} ms vs {f32:.1f} ms, INT8 runs at {f32 / i8:.2f}x the fp32 speed ({verdict})"


def _gate_stage(manifest_dir: Path, stage: str) -> dict | None:
    for manifest in sorted(manifest_dir.glob("*.int8.manifest.json")):
        for row in json.loads(manifest.read_text()).get("accuracy", []):
            if row["stage"] == stage:
                return row["metrics"]
    return None


def _ptq_vs_qat(models: Path) -> str:
    parts = []
    for label, folder in (("post-training (calibrated ranges)", "detector"), ("QAT fine-tuning of the distilled student", "detector-qat")):
        int8, ref = _gate_stage(models / folder, "student int8"), _gate_stage(models / folder, "student fp32")
        if int8 is None or ref is None:
            continue
        parts.append(f"{label}: box mAP50-95 {int8['box_map']:.3f}, mask {int8['mask_map']:.3f} "
                     f"({100 * (int8['box_map'] - ref['box_map']):+.1f} points box vs its fp32 {ref['box_map']:.3f})")
    return "; ".join(parts) if parts else "n/a (the preset runs no QAT)"


def _size_ratio(bench: dict) -> str:
    s, t = _student_and_teacher(bench)
    if not s or not t:
        return "n/a"
    return f"1/{t['size_bytes'] / s['size_bytes']:.0f} of the bytes ({s['size_bytes'] / 1e6:.2f} MB vs {t['size_bytes'] / 1e6:.2f} MB)"


def _seed_rows(results: dict) -> list[dict]:
    evals = results.get("eval", {})
    rows = []
    seeds = sorted({0} | {int(k.rsplit("seed", 1)[1]) for k in evals if "-seed" in k})
    for seed in seeds:
        suffix = "" if seed == 0 else f"-seed{seed}"
        row: dict = {"seed": seed}
        for prefix, metrics in (("det", ("box_map", "box_map50", "mask_map", "mask_map50")), ("emb", ("rank1", "map", "auroc"))):
            kd, nokd = evals.get(f"{prefix}-student-kd{suffix}"), evals.get(f"{prefix}-student-nokd{suffix}")
            for m in metrics:
                a = kd["metrics"].get(m) if kd else None
                b = nokd["metrics"].get(m) if nokd else None
                row[f"{prefix} {m}"] = None if a is None or b is None else round(100 * (a - b), 1)
        rows.append(row)
    return rows


def _trained_elsewhere(farm_dir: Path, model: str) -> list[str]:
    """Where the detector or embedder runs came from, when a GPU machine trained them (`--only detector|embedder`)."""
    record = farm_dir / f"only-{model}.json"
    if not record.is_file():
        return []
    doc = json.loads(record.read_text())
    ran = [s for s in doc.get("steps", {}).values() if not s.get("skipped")]
    # Concurrent runs overlap: their wall time is the longest of them.
    seconds = sum(s.get("seconds", 0) for s in ran if not s.get("concurrent")) + max(
        (s.get("seconds", 0) for s in ran if s.get("concurrent")), default=0)
    return [
        f"The {model} runs above were trained on {doc.get('machine', '?')} by `scripts/gpu-train FARM {model}` "
        f"(`{doc.get('command', '?')}`, {seconds:.0f} s wall); everything else, their evaluation included, ran on the "
        "machine named at the top.",
        "",
    ]


def _scored_videos(farm_dir: Path) -> str:
    """What the daemon was scored on, from the farm's own farm.json: how many camera videos, how long."""
    record = farm_dir / "farm" / "farm.json"
    if not record.is_file():
        return ""
    doc = json.loads(record.read_text())
    videos = doc.get("counts", {}).get("videos", [])
    fps = float(doc.get("config", {}).get("fps") or 0)
    if not videos or fps <= 0:
        return ""
    seconds = sorted({round(v["frames"] / fps, 1) for v in videos})
    length = " / ".join(f"{x:g}" for x in seconds)
    return (f"Scored on the farm's {len(videos)} camera video(s) (videos/, {length} s each at {fps:g} fps, "
            f"{sum(v['instances'] for v in videos)} fish instances in their ground truth).")


def _gpu_check(log: Path) -> list[str]:
    """scripts/gpu-check's captured output (docs/gpu-check.log), as it printed it on the CUDA machine."""
    if not log.is_file():
        return []
    text = log.read_text().rstrip()
    table = text[text.find("check "):] if "check " in text else text
    gpus = [line for line in text.splitlines() if line.startswith("GPU ")]
    return [
        "## GPU check (`scripts/gpu-check` on a CUDA machine)",
        "",
        f"Output of `scripts/gpu-check` on {gpus[0].split(' (UUID')[0] if gpus else 'a CUDA machine'} "
        f"(saved as {log.as_posix()}; CUDA, PyTorch, cuda-python and nvcc there, no TensorRT):",
        "",
        "```",
        table,
        "```",
        "",
    ]


DAEMON_HEADING = "### The daemon's chain on the farm videos (INT8 detector + INT8 embedder, ONNX Runtime CPU)"


def daemon_section(daemon: dict, farm_dir: Path, measured: str = "") -> list[str]:
    """The farm's daemon subsection (`measured`: a line saying when and how, where it was run on its own)."""
    scored_on = _scored_videos(farm_dir)
    reviewed = reviewed_sentence(daemon)
    return [
        DAEMON_HEADING,
        "",
        *([measured, ""] if measured else []),
        f"Gallery enrolled from: {daemon.get('enrolment', 'still re-ID crops')}. {open_set_sentence(daemon)}",
        "",
        *([scored_on, ""] if scored_on else []),
        *daemon_score_lines(daemon),
        "",
        *([reviewed, ""] if reviewed else []),
    ]


def splice_daemon(document: str, section: list[str]) -> str:
    """`document` with its daemon subsection replaced by `section` (added at the end where it had none)."""
    lines = document.rstrip("\n").splitlines()
    if DAEMON_HEADING not in lines:
        return "\n".join([*lines, "", *section]) + "\n"
    start = lines.index(DAEMON_HEADING)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(("## ", "### "))), len(lines))
    return "\n".join([*lines[:start], *section, *lines[end:]]) + "\n"


def keep_real_section(document: str, before: str) -> str:
    """`document` with the real-data section that `before` held (as `--only real` wrote it), if it held one."""
    if REAL_BEGIN not in before or REAL_END not in before:
        return document
    return splice_real(document, REAL_BEGIN + before.split(REAL_BEGIN, 1)[1].split(REAL_END, 1)[0] + REAL_END)


def render(farm: dict, farm_dir: Path, deepfish: dict | None, deepfish_dir: Path | None, command: str) -> str:
    lines = [
        "# finprint results",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d')} ({_machine()}, torch threads "
        f"{os.environ.get('OMP_NUM_THREADS', 'default')}). Every number below comes from the JSON that the "
        "pipeline's own `finprint` commands wrote under the work folder; rerun the command to reproduce.",
        "",
        "## Synthetic farm",
        "",
        "![farm results](img/results_farm.png)",
        "",
        f"Preset: `{json.dumps(farm.get('preset', {}))}`",
        "",
        "### Detector (test split, boxes and masks)",
        "",
        markdown_table(model_rows(farm, farm_dir, "det", DETECT_COLUMNS)),
        "",
        f"Distillation vs none: {_margin(model_rows(farm, farm_dir, 'det', DETECT_COLUMNS), 'box_map')}; "
        f"{_margin(model_rows(farm, farm_dir, 'det', DETECT_COLUMNS), 'mask_map')}.",
        "",
        *_trained_elsewhere(farm_dir, "detector"),
        "### Embedder (re-ID gallery/query; open set = unknown individuals)",
        "",
        markdown_table(model_rows(farm, farm_dir, "emb", EMBED_COLUMNS)),
        "",
        f"Distillation vs none: {_margin(model_rows(farm, farm_dir, 'emb', EMBED_COLUMNS), 'rank1')}; "
        f"{_margin(model_rows(farm, farm_dir, 'emb', EMBED_COLUMNS), 'map')}.",
        "",
        *_trained_elsewhere(farm_dir, "embedder"),
        "### Distillation margin per seed (student + KD minus student without KD, points; same teacher, epochs, data)",
        "",
        markdown_table(_seed_rows(farm)),
        "",
        "### Export gate: teacher fp32 -> student fp32 -> fp16 -> int8 (held-out set)",
        "",
        markdown_table(manifest_rows(farm_dir / "models")),
        "",
        "### Bench (ONNX Runtime CPU, 2 threads, all models interleaved in one run)",
        "",
        markdown_table(_bench_rows(farm.get("bench", {}))),
        "",
        f"- INT8 detector student vs fp32 teacher: {_speedup(farm.get('bench', {}))}; "
        f"{_size_ratio(farm.get('bench', {}))}.",
        f"- INT8 vs fp32 detector student on this CPU: {_int8_vs_fp32(farm.get('bench', {}))}.",
        f"- PTQ vs QAT (detector student, INT8): {_ptq_vs_qat(farm_dir / 'models')}.",
        "",
    ]
    daemon = farm.get("daemon")
    if daemon:
        lines += daemon_section(daemon, farm_dir)
    lines += _gpu_check(GPU_CHECK_LOG)
    if deepfish is not None and deepfish_dir is not None:
        rows = model_rows(deepfish, deepfish_dir, "det", ("box_map", "box_map50"))
        lines += [
            "## DeepFish (real frames, boxes only; validation = habitats 7398 + 9866, never trained on)",
            "",
            "Saleh et al., \"A realistic fish-habitat dataset to evaluate algorithms for underwater visual analysis\", "
            "Scientific Reports 10, 14671 (2020); YOLO export CC BY 4.0.",
            "",
            f"Preset: `{json.dumps(deepfish.get('preset', {}))}`; trained on: {_machine()}.",
            "",
            markdown_table(rows),
            "",
            f"Reference point: {YOLO_BASELINE}.",
            "",
        ]
        if not deepfish.get("preset", {}).get("students", True):
            lines += [
                "On 2 CPU cores only the teacher fits the budget (the preset above: 1,000 evenly spread training "
                "frames, 6 epochs); the distilled and plain students, export and bench on DeepFish need a CUDA "
                "machine: `python -m finprint.results --deepfish-preset gpu --device cuda`.",
                "",
            ]
            return "\n".join(lines)
        lines += [
            f"Distillation vs none: {_margin(rows, 'box_map')}; {_margin(rows, 'box_map50')}.",
            "",
            markdown_table(manifest_rows(deepfish_dir / "models")),
            "",
            markdown_table(_bench_rows(deepfish.get("bench", {}))),
            "",
            f"- INT8 detector student vs fp32 teacher: {_speedup(deepfish.get('bench', {}))}; "
            f"{_size_ratio(deepfish.get('bench', {}))}.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finprint.results", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/results"))
    parser.add_argument("--farm-preset", choices=sorted(PRESETS), default="results")
    parser.add_argument("--deepfish", default="../shared/data/deepfish", help="DeepFish YOLO folder ('' to skip)")
    parser.add_argument("--deepfish-preset", choices=sorted(DEEPFISH_PRESETS), default="cpu")
    parser.add_argument("--val-groups", default="7398,9866")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"))
    parser.add_argument("--extra-seeds", type=int, nargs="*", default=[1], help="more KD/no-KD student seeds on the farm")
    parser.add_argument("--jobs", type=int, default=1, help="student runs trained at once, as processes (a GPU fits several)")
    parser.add_argument("--workers", type=int, default=0, help="data-loader worker processes per training run (0 = in-process)")
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"),
                        help="folder holding deepfish/, deepfish-masks/, f4k-tracklets/, ras-frames/ (the real-data runs)")
    parser.add_argument("--real-preset", choices=sorted(REAL_PRESETS), default="cpu")
    parser.add_argument("--no-scratch", action="store_true", help="real data: skip the teachers trained from scratch")
    parser.add_argument("--scratch", nargs="+", choices=["detector", "embedder"],
                        help="real data: train only these kinds' teachers from scratch too (default: both)")
    parser.add_argument("--real-seeds", type=int, nargs="*", help="real data: student seeds (default: the preset's, 0 1; "
                        "none given: teachers only)")
    parser.add_argument("--only", choices=["farm", "detector", "embedder", "daemon", "real", "real-detector", "real-embedder",
                                           "real-report"],
                        help="farm: the synthetic farm's whole pipeline and its part of --out, leaving the real-data section "
                             "as it is (and without the superseded boxes-only DeepFish run); "
                             "detector / embedder: only the farm's detector runs (teacher, students, QAT) or embedder runs (teacher, students), "
                             "for a GPU machine; no evaluation, no document: copy the det-* / emb-* run folders into the "
                             "workdir that finishes the rest. daemon: only the daemon's chain (both teachers and KD students, "
                             "export, the daemon step on the farm videos) and its score, no document; a later full run "
                             "in the same workdir keeps those steps. real: only the real-data runs (DeepFish detector, "
                             "f4k-tracklets embedder, bench), rewriting only their section of --out and their keys of "
                             "docs/results.json; real-detector / real-embedder: one half of them; real-report: render what the "
                             "real-data runs left, training nothing")
    args = parser.parse_args(argv)
    command = "python -m finprint.results " + " ".join(argv if argv is not None else sys.argv[1:])
    farm_preset = PRESETS[args.farm_preset]
    if args.workers:
        farm_preset = dataclasses.replace(farm_preset, train_extra=(*farm_preset.train_extra, f"workers={args.workers}"))
    try:
        real_preset = REAL_PRESETS[args.real_preset]
        if args.no_scratch:
            real_preset = dataclasses.replace(real_preset, scratch=())
        elif args.scratch:
            real_preset = dataclasses.replace(real_preset, scratch=tuple(args.scratch))
        if args.real_seeds is not None:
            real_preset = dataclasses.replace(real_preset, seeds=tuple(args.real_seeds))
        real_run = RealRun(args.workdir, RealData.under(args.shared), real_preset, args.device, farm=args.workdir / "farm")
        if args.only == "real-report":
            write_real(collect_real(args.workdir), _machine(), args.out, args.out.parent / "results.json")
            print(f"wrote the real-data section of {args.out} and {args.out.parent / 'results.json'}")
            return 0
        if args.only in ("real", "real-detector", "real-embedder"):
            real_run.only = {"real": None, "real-detector": "detector", "real-embedder": "embedder"}[args.only]
            real_run.run()
            # Rendered from everything the runs left: real.json's step times include earlier invocations' steps.
            write_real(collect_real(args.workdir), _machine(), args.out, args.out.parent / "results.json", only=real_run.only,
                       command=command if real_run.only else "")
            print(f"wrote the real-data section of {args.out} and {args.out.parent / 'results.json'}")
            return 0
        farm_dir = args.workdir / "farm"
        demo = Demo(farm_dir, farm_preset, 0, args.device, extra_seeds=tuple(args.extra_seeds), jobs=args.jobs,
                    only=None if args.only == "farm" else args.only)
        if args.farm_preset == "results" and args.only != "detector" and not (farm_dir / "emb-teacher" / "COMPLETE").is_file() \
                and _gpu_name() is None:
            print("finprint.results: the results preset's embedder runs (500 auxiliary fish) are meant for a GPU: "
                  "scripts/gpu-train runs/results/farm/farm embedder on a CUDA machine, then copy its emb-* folders here; "
                  "on 2 CPU cores the teacher and KD student take about 45 min, all five runs about 2 h",
                  file=sys.stderr, flush=True)
        farm = demo.run()
        if args.only == "daemon":
            daemon = farm["daemon"]
            measured = (f"This subsection alone was rerun on {time.strftime('%Y-%m-%d')} by `{command.strip()}` ({_machine()}): "
                        "it retrains both teachers and KD students from the same seeds, exports them and runs the daemon step.")
            document = args.out.read_text() if args.out.is_file() else "# finprint results\n"
            args.out.write_text(splice_daemon(document, daemon_section(daemon, farm_dir, measured)))
            print(f"finprint.results: the daemon's chain on {farm_dir}: known-individual tracks identified correctly "
                  f"{100 * daemon['known_accuracy']:.1f}% ({daemon['known_correct']}/{daemon['known_tracks']}), unknown "
                  f"tracks flagged {100 * daemon['unknown_flag_rate']:.1f}% ({daemon['unknown_flagged']}/{daemon['unknown_tracks']}); "
                  f"{open_set_sentence(daemon)}")
            return 0
        if args.only and args.only != "farm":
            (farm_dir / f"only-{args.only}.json").write_text(json.dumps(farm | {"machine": _machine(), "command": command},
                                                                         indent=2, default=str) + "\n")
            print(f"finprint.results: {args.only} runs done in {farm_dir} on {_machine()}")
            return 0
        deepfish = deepfish_dir = None
        if args.deepfish and args.only != "farm":
            deepfish_dir = args.workdir / "deepfish"
            deepfish = DeepFishRun(deepfish_dir, Path(args.deepfish), DEEPFISH_PRESETS[args.deepfish_preset], 0, args.device,
                                   args.val_groups).run()
        for res, d in ((farm, farm_dir), (deepfish, deepfish_dir)):
            if res is not None and d is not None:
                (d / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_report(farm, farm_dir)  # also draws farm_dir/report.png
        (args.out.parent / "img").mkdir(exist_ok=True)
        shutil.copy2(farm_dir / "report.png", args.out.parent / "img" / "results_farm.png")
        before = args.out.read_text() if args.out.is_file() else ""
        args.out.write_text(render(farm, farm_dir, deepfish, deepfish_dir, command.strip()))
        if args.only == "farm":
            args.out.write_text(keep_real_section(args.out.read_text(), before))
        else:
            write_real(real_run.run(), _machine(), args.out, args.out.parent / "results.json")
    except FinprintError as exc:
        print(f"finprint.results: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
