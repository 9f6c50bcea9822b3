"""`finprint demo`: the whole pipeline on a synthetic farm, end to end, with a report.

synthetic farm -> detector teacher -> detector students (with and without distillation)
-> embedder teacher -> embedder students -> eval -> calibration -> ONNX fp32/fp16/int8 with
the accuracy gate -> bench -> gallery enrolment -> the daemon's chain on a farm video scored
against ground truth -> REPORT.md + report.png.

Every step is an ordinary `finprint ...` command run in-process, so the demo shows exactly the
commands a user would type (they are printed) and its numbers come from them. A step whose
outputs already exist is skipped, so an interrupted demo continues where it stopped
(`--fresh` starts over).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finprint.errors import FinprintError

log = logging.getLogger(__name__)

# A failed accuracy gate (exit 1) still writes the models and the table saying what dropped; the
# demo reports it rather than stopping.
GATE_CODES = (0, 1)


@dataclass(frozen=True)
class Preset:
    """Sizes of one demo. `demo` fits 2 CPU cores in about 10 minutes; `results` is what docs/RESULTS.md
    measures (its embedder runs on a GPU: scripts/gpu-train; the rest about 40 minutes on 2 cores); `gpu` is for
    a CUDA machine."""

    images: int
    individuals: int
    unknown: int
    video_seconds: float
    size: str
    imgsz: int
    det_teacher_epochs: int
    det_student_epochs: int
    emb_teacher_epochs: int
    emb_student_epochs: int
    batch: int
    calib_size: int
    train_extra: tuple[str, ...] = field(default=())
    det_teacher: str = "fishseg-teacher-s"
    det_student: str = "fishseg-student-s"
    emb_teacher: str = "embed-teacher-s"
    emb_student: str = "embed-student-s"
    # The embedder teacher diverges at the loop's default 2e-3 (experiments/2026-11-27-model-design).
    emb_teacher_lr: float = 1e-3
    # False trains only the teacher (DeepFish on 2 CPU cores: the students do not fit the budget).
    students: bool = True
    # Also train each student without distillation (same epochs, seed, data) for the KD margin.
    # The demo leaves it to `python -m finprint.results`, to stay within 10 minutes on 2 cores.
    baseline: bool = True
    # Epochs of quantisation-aware fine-tuning of the distilled detector student (teacher still
    # teaching), exported next to the post-training INT8 model for the comparison; 0 = none.
    qat_epochs: int = 0
    # Enrolment clip per known fish (finprint data synth --enrol-clips): the gallery is enrolled from
    # the daemon's own detections on video; 0 enrols the still re-ID crops instead.
    enrol_clip_seconds: float = 6.0
    # Embeddings kept per enrolment clip (`finprint enroll --max-samples`, spread evenly over the clip).
    enrol_samples: int = 60
    # ... in front of every camera, not only one (its gallery then holds each pen's water and light;
    # experiments/2026-11-27-track-identity).
    enrol_clip_every_camera: bool = True
    # Open-set tuning video per camera (finprint data synth --tuning-videos; own strangers): the gallery's
    # threshold and margin come from `finprint tune-open-set` on them, never from the scored videos; 0 = none
    # (the manifest's threshold and the default margin).
    tuning_video_seconds: float = 8.0
    # Farm options for the embedder's data (finprint data synth): other fish for its metric, more views of the
    # farm's own fish (experiments/2026-11-27-model-design).
    synth_extra: tuple[str, ...] = field(default=())
    # `--set` options for the embedder runs only (repeats: passes over the identities per epoch).
    emb_extra: tuple[str, ...] = field(default=())
    # `--set` options for the detector runs only (aug_scale: the zoom range of the training augmentation).
    det_extra: tuple[str, ...] = field(default=())
    # Also tune from reviews (tune/reviewer.py judges the tuning videos' review queue by their ground truth) and
    # score the scored videos with that, beside tuning from the ground-truth files.
    review_tuning: bool = True


FARM_EMBEDDER_DATA = ("--aux-individuals", "500", "--aux-views", "12", "--enrol-views", "40")

PRESETS: dict[str, Preset] = {
    # Only checks that every step runs (tests/test_demo.py); the numbers mean nothing.
    "smoke": Preset(
        images=48, individuals=5, unknown=2, video_seconds=2, size="256x192", imgsz=128,
        det_teacher_epochs=1, det_student_epochs=1, emb_teacher_epochs=1, emb_student_epochs=1,
        batch=8, calib_size=8, enrol_clip_seconds=2, tuning_video_seconds=2,
        synth_extra=("--aux-individuals", "2", "--aux-views", "2"),  # so the test sees aux fish kept out of the gallery
    ),
    "demo": Preset(
        images=160, individuals=10, unknown=3, video_seconds=8, size="384x256", imgsz=256,
        det_teacher_epochs=10, det_student_epochs=10, emb_teacher_epochs=16, emb_student_epochs=16,
        batch=16, calib_size=64, baseline=False, det_teacher="fishseg-teacher", det_student="fishseg-student-lean",
    ),
    # docs/RESULTS.md: a larger farm and longer schedules than the demo, the full detector teacher (so
    # the bench compares the INT8 student with a teacher worth distilling), no-KD baselines and QAT.
    # The detector stays at 12 epochs although it is undertrained: longer, wider-zoom and ten-times-the-stills
    # detectors found more fish but named fewer (experiments/2026-11-28-detector-data). Masked and aligned
    # embedders did no better with this detector's masks (experiments/2026-11-28-masked-crops,
    # experiments/2026-11-28-aligned-crops). The embedder (500 auxiliary fish) is trained on a GPU by
    # `scripts/gpu-train FARM embedder`; on 2 CPU cores its five runs take hours. Scored videos: two minutes per
    # camera, since 8 s could not tell the rates apart; only videos/ changes with their length (the other parts
    # draw from their own random streams), so the models stay valid.
    "results": Preset(
        images=240, individuals=10, unknown=3, video_seconds=120, size="384x256", imgsz=256,
        det_teacher_epochs=12, det_student_epochs=12, emb_teacher_epochs=40, emb_student_epochs=40,
        batch=16, calib_size=64, det_teacher="fishseg-teacher", det_student="fishseg-student-lean", qat_epochs=3,
        synth_extra=FARM_EMBEDDER_DATA, emb_extra=("repeats=2",),
        # A minute of enrolment and of tuning video per pen (experiments/2026-11-27-track-identity).
        enrol_clip_seconds=60, enrol_samples=600, tuning_video_seconds=60,
    ),
    "full": Preset(
        images=600, individuals=20, unknown=5, video_seconds=12, size="480x320", imgsz=320,
        det_teacher_epochs=30, det_student_epochs=30, emb_teacher_epochs=20, emb_student_epochs=20,
        batch=16, calib_size=128,
    ),
    "gpu": Preset(
        images=2000, individuals=30, unknown=6, video_seconds=20, size="640x384", imgsz=384,
        det_teacher_epochs=60, det_student_epochs=60, emb_teacher_epochs=40, emb_student_epochs=40,
        batch=32, calib_size=256, train_extra=("workers=8",),
        det_teacher="fishseg-teacher", det_student="fishseg-student", emb_teacher="embed-teacher-m", emb_student="embed-student-m",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="where everything is written (default runs/demo)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="sizes (default demo: ~10 min on 2 CPU cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="torch device for training: auto | cpu | cuda")
    parser.add_argument("--fresh", action="store_true", help="delete --workdir first instead of continuing it")


class Demo:
    def __init__(self, workdir: Path, preset: Preset, seed: int, device: str, extra_seeds: tuple[int, ...] = (),
                 jobs: int = 1, only: str | None = None) -> None:
        self.w = workdir
        self.p = preset
        self.seed = seed
        self.device = device
        # More seeds of the KD / no-KD student pairs (same teacher), so a margin is not one seed's luck.
        self.extra_seeds = extra_seeds
        # Student runs that share a teacher train as this many concurrent processes (one GPU fits several
        # small students; their data loaders share the CPU cores). 1 = one after another, in-process.
        self.jobs = max(1, jobs)
        # "detector" / "embedder": only train that model's runs (teacher, students, and for the detector QAT),
        # the part worth a GPU; the machine that finishes the rest keeps them (finished steps are skipped).
        # "daemon": only what the daemon's chain needs (both teachers and KD students, calibration, export, the
        # daemon step), the acceptance number first; a later full run keeps those steps.
        if only not in (None, "detector", "embedder", "daemon"):
            raise ValueError(f"only: expected detector, embedder or daemon, got {only!r}")
        self.only = only
        self.results: dict = {"preset": preset.__dict__ | {k: list(v) for k, v in preset.__dict__.items() if isinstance(v, tuple)},
                              "steps": {}}
        self.farm = workdir / "farm"
        self.models = workdir / "models"

    # ----------------------------------------------------------------- plumbing
    def _finprint(self, *argv: str, ok_codes: tuple[int, ...] = (0,)) -> int:
        from finprint.cli import main

        shown = shlex.join(argv)
        print(f"\n$ finprint {shown if len(shown) < 400 else shown[:400] + ' ...'}", flush=True)
        code = main(list(argv))
        if code not in ok_codes:
            raise FinprintError(f"demo step `finprint {shlex.join(argv)}` failed with exit code {code}")
        return code

    def _step(self, name: str, done: Callable[[], bool], action: Callable[[], None]) -> None:
        if done():
            print(f"[demo] {name}: already done in {self.w}, skipped", flush=True)
            self.results["steps"][name] = {"skipped": True}
            return
        print(f"\n[demo] ===== {name} =====", flush=True)
        start = time.perf_counter()
        action()
        seconds = round(time.perf_counter() - start, 1)
        self.results["steps"][name] = {"seconds": seconds}
        print(f"[demo] {name}: {seconds:.0f} s", flush=True)

    def _steps(self, steps: list[tuple[str, Path, list[str]]]) -> None:
        """Independent training steps (name, run folder, finprint argv): in-process one by one, or as up to
        `jobs` concurrent `python -m finprint` processes, each logging to <run>.log beside its folder."""
        todo = []
        for name, run, argv in steps:
            if self._complete(run)():
                self._step(name, lambda: True, lambda: None)  # reports it as already done
            else:
                todo.append((name, run, argv))
        if self.jobs == 1 or len(todo) < 2:
            for name, run, argv in todo:
                self._step(name, self._complete(run), lambda argv=argv: self._finprint(*argv))
            return
        print(f"\n[demo] ===== {len(todo)} runs, {self.jobs} at a time: {', '.join(n for n, _, _ in todo)} =====", flush=True)
        running: list[tuple[str, Path, list[str], subprocess.Popen, float]] = []
        failed: list[str] = []
        queue = list(todo)
        while queue or running:
            while queue and len(running) < self.jobs:
                name, run, argv = queue.pop(0)
                log_path = run.with_name(run.name + ".log")
                print(f"$ finprint {shlex.join(argv)}  > {log_path}", flush=True)
                with log_path.open("w") as log_file:
                    proc = subprocess.Popen([sys.executable, "-m", "finprint", *argv], stdout=log_file, stderr=subprocess.STDOUT)
                running.append((name, run, argv, proc, time.perf_counter()))
            time.sleep(1.0)
            for item in [r for r in running if r[3].poll() is not None]:
                running.remove(item)
                name, run, argv, proc, start = item
                seconds = round(time.perf_counter() - start, 1)
                self.results["steps"][name] = {"seconds": seconds, "concurrent": True}
                print(f"[demo] {name}: exit {proc.returncode} after {seconds:.0f} s", flush=True)
                if proc.returncode != 0:
                    failed.append(f"`finprint {shlex.join(argv)}` (exit {proc.returncode}, log {run.name}.log)")
        if failed:
            raise FinprintError("demo step(s) failed: " + "; ".join(failed))

    def _train_args(self, epochs: int, extra: tuple[str, ...] = (), seed: int | None = None) -> list[str]:
        seed = self.seed if seed is None else seed
        args = ["--epochs", str(epochs), "--batch", str(self.p.batch), "--seed", str(seed), "--device", self.device]
        for kv in (*self.p.train_extra, *extra):
            args += ["--set", kv]
        return args

    @staticmethod
    def _complete(run: Path) -> Callable[[], bool]:
        return lambda: (run / "COMPLETE").is_file()

    # ----------------------------------------------------------------- shared steps
    def detector_runs(self, data: Path, *extra: str, seeds: tuple[int, ...] = (), kd_only: bool = False) -> tuple[Path, Path, Path]:
        """Teacher, then the same student with and without distillation (same epochs, seed, data), and the
        pairs of any extra seeds (`kd_only`: the teacher and the KD student)."""
        p, w = self.p, self.w
        det_t, det_kd, det_nokd = w / "det-teacher", w / "det-student-kd", w / "det-student-nokd"
        common = ["--data", str(data), "--imgsz", str(p.imgsz), *extra]
        self._step("detector teacher", self._complete(det_t), lambda: self._finprint(
            "train", "--task", "detect", "--model", p.det_teacher, "--out", str(det_t), *common,
            *self._train_args(p.det_teacher_epochs, p.det_extra)))
        steps = [(f"detector student ({'KD' if kd else 'no KD'})", run,
                  ["distill", "--teacher", str(det_t), "--student", p.det_student, "--out", str(run), *common,
                   *([] if kd else ["--no-kd"]), *self._train_args(p.det_student_epochs, p.det_extra)])
                 for run, kd in ((det_kd, True), (det_nokd, False))[: 2 if p.baseline and not kd_only else 1]] if p.students else []
        self._steps(steps + ([] if kd_only else self._detector_seed_steps(det_t, seeds)))
        return det_t, det_kd, det_nokd

    def _detector_seed_steps(self, teacher: Path, seeds: tuple[int, ...]) -> list[tuple[str, Path, list[str]]]:
        p = self.p
        return [step for seed in seeds
                for step in self._student_pair(teacher, "det", p.det_student, seed, "--imgsz", str(p.imgsz), epochs=p.det_student_epochs,
                                               sets=p.det_extra)]

    def evaluate(self, runs: tuple[Path, ...], data: Path, *extra: str) -> None:
        evals = self.w / "eval"
        evals.mkdir(exist_ok=True)
        for run in runs:
            out = evals / f"{run.name}.json"
            self._step(f"eval {run.name}", out.is_file, lambda run=run, out=out: self._finprint(
                "eval", "--model", str(run), "--data", str(data), "--json", str(out), "--device", self.device, *extra))
            self.results.setdefault("eval", {})[run.name] = json.loads(out.read_text())

    def _student_pair(self, teacher: Path, prefix: str, student: str, seed: int, *extra: str, epochs: int,
                      sets: tuple[str, ...] = ()) -> list[tuple[str, Path, list[str]]]:
        return [(f"{prefix} student ({'KD' if kd else 'no KD'}, seed {seed})", run,
                 ["distill", "--teacher", str(teacher), "--student", student, "--out", str(run), "--data", str(self.farm),
                  *extra, *([] if kd else ["--no-kd"]), *self._train_args(epochs, sets, seed)])
                for kd in (True, False)
                for run in [self.w / f"{prefix}-student-{'kd' if kd else 'nokd'}-seed{seed}"]]

    # ----------------------------------------------------------------- the steps
    def run(self) -> dict:
        p, w = self.p, self.w
        w.mkdir(parents=True, exist_ok=True)
        self._step("farm", lambda: (self.farm / "farm.json").is_file(), lambda: self._finprint(
            "data", "synth", "--out", str(self.farm), "--images", str(p.images), "--individuals", str(p.individuals),
            "--unknown", str(p.unknown), "--video-seconds", str(p.video_seconds), "--size", p.size, "--seed", str(self.seed),
            "--enrol-clips", str(p.enrol_clip_seconds), "--tuning-videos", str(p.tuning_video_seconds),
            *(["--enrol-clips-every-camera"] if p.enrol_clip_every_camera else []), *p.synth_extra))
        if self.only == "embedder":
            self.embedder_runs()
            return self.results
        if self.only == "daemon":
            det_t, det_kd, _ = self.detector_runs(self.farm, kd_only=True)
            emb_t, emb_kd, _ = self.embedder_runs(kd_only=True)
            self._export_students(det_t, det_kd, emb_t, emb_kd)
            self._daemon_step()
            return self.results
        det_t, det_kd, det_nokd = self.detector_runs(self.farm, seeds=self.extra_seeds)
        if p.qat_epochs:
            self._qat_run(det_t, det_kd)
        if self.only == "detector":
            return self.results
        self._step("farm sheet", lambda: (w / "farm_sheet.png").is_file(), lambda: self._finprint(
            "data", "show", str(self.farm), "--out", str(w / "farm_sheet.png"), "--n", "12"))
        emb_t, emb_kd, emb_nokd = self.embedder_runs()

        self.evaluate((det_t, det_kd, det_nokd, emb_t, emb_kd, emb_nokd) if p.baseline else (det_t, det_kd, emb_t, emb_kd), self.farm)
        self.evaluate(tuple(run for _, run, _ in self._detector_seed_steps(det_t, self.extra_seeds)), self.farm)
        self.evaluate(tuple(run for _, run, _ in self._embedder_seed_steps(emb_t)), self.farm)

        self._export_students(det_t, det_kd, emb_t, emb_kd)

        if p.qat_epochs:
            self._qat_export(det_t)

        bench_json = w / "bench.json"
        self._step("bench", bench_json.is_file, lambda: self._bench(bench_json))
        self.results["bench"] = json.loads(bench_json.read_text())
        self._daemon_step()
        return self.results

    def _export_students(self, det_t: Path, det_kd: Path, emb_t: Path, emb_kd: Path) -> None:
        """Calibration sets, then both KD students to ONNX fp32 / fp16 / INT8 through the accuracy gate."""
        p, w = self.p, self.w
        calib_det, calib_emb = w / "calib-detector", w / "calib-embedder"
        self._step("calibration set (detector)", lambda: (calib_det / "calib.json").is_file() or any(calib_det.glob("*.json")),
                   lambda: self._finprint("calib", "build", "--data", str(self.farm), "--out", str(calib_det), "--size",
                                          str(p.calib_size), "--kind", "detector", "--imgsz", str(p.imgsz), "--seed", str(self.seed)))
        self._step("calibration set (embedder)", lambda: any(calib_emb.glob("*.json")),
                   lambda: self._finprint("calib", "build", "--data", str(self.farm / "reid"), "--out", str(calib_emb), "--size",
                                          str(p.calib_size), "--kind", "embedder", "--seed", str(self.seed)))
        det_out, emb_out = self.models / "detector", self.models / "embedder"
        self._step("export detector student", lambda: any(det_out.glob("*int8*.onnx")), lambda: self._finprint(
            "export", "--run", str(det_kd), "--out", str(det_out), "--precision", "fp32,fp16,int8", "--calib", str(calib_det),
            "--teacher", str(det_t), "--max-drop", "1.0", ok_codes=GATE_CODES))
        self._step("export embedder student", lambda: any(emb_out.glob("*int8*.onnx")), lambda: self._finprint(
            "export", "--run", str(emb_kd), "--out", str(emb_out), "--precision", "fp32,fp16,int8", "--calib", str(calib_emb),
            "--teacher", str(emb_t), "--max-drop", "1.0", ok_codes=GATE_CODES))

    def _daemon_step(self) -> None:
        score_json = self.w / "daemon_score.json"
        self._step("daemon on a farm video", score_json.is_file, lambda: self.score_daemon(score_json))
        self.results["daemon"] = json.loads(score_json.read_text())

    def embedder_runs(self, kd_only: bool = False) -> tuple[Path, Path, Path]:
        """Embedder teacher, then its students: KD and no-KD (same epochs, seed, data) and the extra seeds' pairs
        (`kd_only`: the teacher and the KD student)."""
        p, w = self.p, self.w
        emb_t, emb_kd, emb_nokd = w / "emb-teacher", w / "emb-student-kd", w / "emb-student-nokd"
        emb_common = ["--data", str(self.farm)]
        self._step("embedder teacher", self._complete(emb_t), lambda: self._finprint(
            "train", "--task", "embed", "--model", p.emb_teacher, "--out", str(emb_t), *emb_common,
            "--lr", str(p.emb_teacher_lr), *self._train_args(p.emb_teacher_epochs, p.emb_extra)))
        steps = [(f"embedder student ({'KD' if kd else 'no KD'})", run,
                  ["distill", "--teacher", str(emb_t), "--student", p.emb_student, "--out", str(run), *emb_common,
                   *([] if kd else ["--no-kd"]), *self._train_args(p.emb_student_epochs, p.emb_extra)])
                 for run, kd in ((emb_kd, True), (emb_nokd, False))[: 2 if p.baseline and not kd_only else 1]]
        self._steps(steps + ([] if kd_only else self._embedder_seed_steps(emb_t)))
        return emb_t, emb_kd, emb_nokd

    def _embedder_seed_steps(self, teacher: Path) -> list[tuple[str, Path, list[str]]]:
        p = self.p
        return [step for seed in self.extra_seeds
                for step in self._student_pair(teacher, "emb", p.emb_student, seed, epochs=p.emb_student_epochs, sets=p.emb_extra)]

    def _qat_run(self, teacher: Path, student: Path) -> None:
        """PTQ's alternative: fine-tune the distilled student with fake quantisation (teacher still teaching)."""
        self._step("detector student (QAT fine-tuning)", self._complete(self.w / "det-student-qat"), lambda: self._finprint(
            "distill", "--teacher", str(teacher), "--student", self.p.det_student, "--init", str(student), "--qat",
            "--out", str(self.w / "det-student-qat"), "--data", str(self.farm), "--imgsz", str(self.p.imgsz), "--lr", "2e-4",
            *self._train_args(self.p.qat_epochs, self.p.det_extra)))

    def _qat_export(self, teacher: Path) -> None:
        run, out = self.w / "det-student-qat", self.models / "detector-qat"
        self._step("export detector student (QAT)", lambda: any(out.glob("*.int8.onnx")), lambda: self._finprint(
            "export", "--run", str(run), "--out", str(out), "--precision", "int8", "--teacher", str(teacher),
            "--max-drop", "1.0", ok_codes=GATE_CODES))

    def _bench(self, out: Path) -> None:
        staging = self.w / "bench-models"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        for folder in (self.models / "detector", self.models / "embedder"):
            for f in sorted(folder.iterdir()) if folder.is_dir() else ():
                if f.suffix == ".onnx" or f.name.endswith(".manifest.json"):
                    shutil.copy2(f, staging / f"{folder.name}-{f.name}")
        self._finprint("bench", "--models", str(staging), "--threads", "2", "--json", str(out))

    def score_daemon(self, out: Path) -> None:
        """The daemon step on this workdir's farm/ and models/: enrol each known fish from its enrolment clips,
        `finprint tune-open-set` on the tuning videos, score every farm video; the totals go to `out` (JSON).
        The experiments under experiments/ call it to put their own models through the same step."""
        from finprint.runtime.identity import DEFAULT_OPEN_SET_MARGIN

        det = _pick(self.models / "detector", "int8")
        emb = _pick(self.models / "embedder", "int8")
        gallery = self.w / "gallery.db"
        gallery.unlink(missing_ok=True)
        clips: dict[str, list[Path]] = {}  # enrol/<fish>.mp4 and, filmed in other pens, enrol/<fish>_c<k>.mp4
        for clip in sorted((self.farm / "enrol").glob("*.mp4")):
            clips.setdefault(clip.stem.split("_")[0], []).append(clip)
        # The farm's own fish (farm.json); reid/train also holds auxiliary fish (aux...), never enrolled.
        farm_doc = json.loads((self.farm / "farm.json").read_text())
        known = sorted(i["id"] for i in farm_doc["individuals"] if not i["unknown"])
        from_crops = []
        for ident in known:
            # As a farm tags a fish: film it alone, enrol what the daemon's own detector and embedder see.
            enrolled = [self._finprint(
                "enroll", "--gallery", str(gallery), "--id", ident, "--embedder", str(emb), "--detector", str(det),
                "--all-tracks", "--max-samples", str(self.p.enrol_samples), "--backend", "cpu", str(clip), ok_codes=(0, 2)) == 0
                for clip in clips.get(ident, [])]
            if any(enrolled):
                continue
            from_crops.append(ident)  # no clip, or the detector found no fish in it (an undertrained smoke model)
            crops = sorted((self.farm / "reid" / "train").glob(f"{ident}_*.jpg"))
            self._finprint("enroll", "--gallery", str(gallery), "--id", ident, "--embedder", str(emb), "--backend", "cpu",
                           *[str(c) for c in crops])
        n_clips = len(known) - len(from_crops)
        n_files = sum(len(clips.get(i, [])) for i in known if i not in from_crops)
        totals: dict = {"enrolment": f"{n_clips} fish from {n_files} video clips (all tracks), {len(from_crops)} from still re-ID crops"}
        enrolled = self.w / "gallery-enrolled.db"  # before any tuning: where tuning from reviews starts
        _copy_sqlite(gallery, enrolled)
        from finprint.data.synth import tuning_videos

        tuning_clips = tuning_videos(self.farm)
        tuned_json = self.w / "open_set.json"
        tuned_json.unlink(missing_ok=True)
        # The farm's own tuning videos (their strangers are not the scored videos' unknown fish); a smoke
        # model may find too few tracks to tune on (exit 2): then the manifest's threshold stays.
        if tuning_clips and self._finprint(
            "tune-open-set", "--gallery", str(gallery), "--detector", str(det), "--embedder", str(emb), "--backend", "cpu",
            "--json", str(tuned_json), *[str(v) for v in tuning_clips], ok_codes=(0, 2)) == 0:
            tuned = json.loads(tuned_json.read_text())
            trials = tuned.pop("trials", [])  # every tracker setting tried: kept in open_set.json
            totals["open_set"] = tuned | {"tuned": True, "tracker_settings_tried": len(trials)}
        else:
            totals["open_set"] = {"tuned": False, "margin": DEFAULT_OPEN_SET_MARGIN}
        # The models run once over the scored videos; each gallery below replays what they found.
        from finprint.runtime.pipeline import Pipeline
        from finprint.tune.score import gallery_rule_tracking, run_chain, score_recorded

        pipeline = Pipeline(det, emb, "cpu", max_batch=1)
        try:
            scored = []
            for video in sorted((self.farm / "videos").glob("*.mp4")):
                print(f"\n$ python -m finprint.tune.score --video {video} --gallery {gallery} --detector {det} --embedder {emb}",
                      flush=True)
                scored.append(run_chain(video, video.with_suffix(".json"), pipeline))
            found, rule, tracking = gallery_rule_tracking(gallery, det, emb, pipeline)
            result = score_recorded(scored, found, tracking, rule.threshold, rule.margin)
            print(result.report(), flush=True)
            totals |= _score_totals(result)
            if tuning_clips and self.p.review_tuning:
                totals["reviewed"] = self._reviewed_tuning(enrolled, tuning_clips, scored, pipeline, det, emb,
                                                           (found, tracking))
        finally:
            pipeline.close()
        out.write_text(json.dumps(totals, indent=2) + "\n")

    def _reviewed_tuning(self, enrolled: Path, tuning_clips: list[Path], scored: list, pipeline: Any, det: Path,
                         emb: Path, truth_tuned: tuple) -> dict:
        """Tune from reviews instead of ground-truth files: the daemon's chain keeps the tuning videos' tracks for
        review, a reviewer who knows their truth judges the queue (tune/reviewer.py), `finprint tune-open-set
        --from-reviews` sets the threshold and margin, and the scored videos are scored again with (a) that
        gallery as the farm would run it (the reviews' enrolments in it, default tracker), (b) its threshold
        and margin on the gallery and tracker tuned from the ground truth (the open-set rule alone) and (c) that
        gallery on the tracker tuned from the ground truth (what reviews cannot tune set aside)."""
        from finprint.runtime.review import ensure_schema
        from finprint.runtime.store import Store, model_identity
        from finprint.runtime.track_samples import TrackSamples
        from finprint.tune.reviewer import judge_queue, keep_tracks
        from finprint.tune.score import gallery_rule_tracking, run_chain, score_recorded

        reviewed = self.w / "gallery-reviewed.db"
        _copy_sqlite(enrolled, reviewed)
        folder = self.w / "review"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        gallery, rule, tracking = gallery_rule_tracking(reviewed, det, emb, pipeline)
        store = Store(reviewed)
        try:
            ensure_schema(store)
            truth: dict = {}
            for clip in tuning_clips:
                print(f"\n[demo] tracks of {clip.name} kept for review, judged by their ground truth", flush=True)
                samples = TrackSamples(folder, clip.stem, embedder=model_identity(emb))
                truth |= keep_tracks(clip, run_chain(clip, clip.with_suffix(".json"), pipeline), gallery, tracking,
                                     rule.margin, store, samples)
            tally = judge_queue(store, truth)
        finally:
            store.close()
        print(f"[demo] review: {tally.sentence()}", flush=True)
        tuned_json = self.w / "open_set_reviewed.json"
        tuned_json.unlink(missing_ok=True)
        out: dict = {"review": dataclasses.asdict(tally)}
        if self._finprint("tune-open-set", "--gallery", str(reviewed), "--embedder", str(emb), "--from-reviews",
                          "--json", str(tuned_json), ok_codes=(0, 2)) != 0:
            return out | {"tuned": False}
        out["open_set"] = json.loads(tuned_json.read_text())
        found, rule, tracking = gallery_rule_tracking(reviewed, det, emb, pipeline)
        farm = score_recorded(scored, found, tracking, rule.threshold, rule.margin)
        print(f"[demo] scored with the gallery tuned from reviews:\n{farm.report()}", flush=True)
        truth_gallery, truth_tracking = truth_tuned
        same = score_recorded(scored, truth_gallery, truth_tracking, rule.threshold, rule.margin)
        tracked = score_recorded(scored, found, truth_tracking, rule.threshold, rule.margin)
        return out | {"tuned": True, "farm": _score_totals(farm), "rule_only": _score_totals(same),
                      "truth_tracker": _score_totals(tracked)}


def _score_totals(result: Any) -> dict:
    """A ScoreResult as daemon_score.json keeps it."""
    totals = {key: getattr(result, key) for key in (
        "known_tracks", "known_correct", "unknown_tracks", "unknown_flagged", "unmatched_tracks", "mixed_wrong",
        "known_frames", "known_frames_right", "unknown_frames", "unknown_frames_flagged")}
    totals["covered"] = list(result.covered)
    totals["mistakes"] = dict(result.mistakes.most_common())  # "truth -> named": tracks, over every scored video
    totals["known_accuracy"] = result.known_accuracy
    totals["unknown_flag_rate"] = result.unknown_flag_rate
    return totals


def _copy_sqlite(src: Path, dst: Path) -> None:
    """A consistent copy of a gallery database (SQLite's backup, so a pending write-ahead log comes along)."""
    dst.unlink(missing_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


def _pick(folder: Path, precision: str) -> Path:
    found = sorted(f for f in folder.glob(f"*.{precision}.onnx") if not f.name.startswith("teacher-"))
    if not found:
        raise FinprintError(f"{folder}: no {precision} ONNX model; the export step did not write one")
    return found[0]


def run(args: argparse.Namespace) -> int:
    if args.fresh and args.workdir.exists():
        shutil.rmtree(args.workdir)
    start = time.perf_counter()
    demo = Demo(args.workdir, PRESETS[args.preset], args.seed, args.device)
    results = demo.run()
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    (args.workdir / "demo.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    from finprint.demo_report import write_report

    md = write_report(results, args.workdir)
    print("\n" + md.read_text())
    print(f"[demo] finished in {results['total_seconds'] / 60:.1f} min; report: {md}")
    return 0


class DeepFishRun(Demo):
    """The detector half of the demo on real frames (boxes only), split by habitat."""

    def __init__(self, workdir: Path, data: Path, preset: Preset, seed: int, device: str, val_groups: str) -> None:
        super().__init__(workdir, preset, seed, device)
        self.data = data
        self.val_groups = val_groups

    def run(self) -> dict:
        if not (self.data / "labels").is_dir():
            raise FinprintError(f"{self.data}: not a YOLO folder with labels/ (expected DeepFish)")
        self.w.mkdir(parents=True, exist_ok=True)
        groups = ("--val-groups", self.val_groups)
        runs = self.detector_runs(self.data, *groups)
        self.evaluate(runs[: (3 if self.p.baseline else 2) if self.p.students else 1], self.data, *groups)
        if not self.p.students:
            return self.results
        calib = self.w / "calib-detector"
        self._step("calibration set", lambda: any(calib.glob("*.json")), lambda: self._finprint(
            "calib", "build", "--data", str(self.data), "--out", str(calib), "--size", str(self.p.calib_size), "--kind",
            "detector", "--imgsz", str(self.p.imgsz), "--seed", str(self.seed), "--exclude-groups", self.val_groups))
        out = self.models / "detector"
        self._step("export detector student", lambda: any(out.glob("*.int8.onnx")), lambda: self._finprint(
            "export", "--run", str(runs[1]), "--out", str(out), "--precision", "fp32,fp16,int8", "--calib", str(calib),
            "--teacher", str(runs[0]), "--max-drop", "1.0", *groups, ok_codes=GATE_CODES))
        bench_json = self.w / "bench.json"
        self._step("bench", bench_json.is_file, lambda: self._bench(bench_json))
        self.results["bench"] = json.loads(bench_json.read_text())
        return self.results
