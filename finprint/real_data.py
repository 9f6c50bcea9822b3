"""The real-fish runs behind docs/RESULTS.md's first sections: DeepFish (detector) and f4k-tracklets (embedder).

Every step is an ordinary `finprint` command run through the demo's step runner (`Demo._step`): a step whose
output exists is skipped, so an interrupted run continues. Teachers start from ImageNet EfficientNet-Lite0
(and, for the comparison, from scratch); students are the edge models, distilled and not (two seeds); the
KD student of seed 0 is exported fp32 -> fp16 -> INT8 and gated on held-out real data; pictures and a bench
close the run. Everything lands in WORKDIR/real/ and WORKDIR/real/real.json.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finprint.demo import GATE_CODES, Demo, Preset
from finprint.errors import FinprintError

log = logging.getLogger(__name__)

DEEPFISH_VAL = "7398,9866"  # the validation habitats (never trained or calibrated on)
DET_COLOUR = ("aug_colour=0.3", "aug_gray=0.1", "aug_hue=0.05")


@dataclass(frozen=True)
class RealPreset:
    """Sizes for 2 CPU cores: each teacher within an hour, students a few minutes each."""

    det_teacher: str = "fishseg-teacher-lite0"
    det_student: str = "fishseg-student-lite"
    det_imgsz: int = 320
    det_batch: int = 8
    # Six epochs fit in about half an hour alone on 2 cores (experiments/2026-12-07-deepfish-teacher-epochs).
    det_teacher_epochs: int = 6
    det_student_epochs: int = 4
    # DeepFish's consecutive frames are near-duplicates: an evenly spread subset of the 3,149 training frames keeps
    # every habitat and fits the hour. The trunk's stem and first three stages (to stride 8) stay frozen. Each
    # habitat has its own water colour: without the colour shifts (white balance, grey frames, a wider hue) the
    # teacher learnt the training habitats' green and its validation box mAP50 fell after the first epoch
    # (experiments/2026-12-07-deepfish-colour).
    det_teacher_sets: tuple[str, ...] = ("train_max=1500", "val_max=200", "freeze_stages=3", *DET_COLOUR)
    # Every training frame, one cached teacher view each (aug_variants; the teacher's forward pass is most of a CPU KD
    # step): seed-0 KD student box mAP50 0.204 against 0.120 for 800 frames x 2 views; a wider neck and head did not
    # help (0.200); Lite0's stages to stride 16 did (fishseg-student-lite16: 0.378, one seed so far;
    # experiments/2026-12-08-deepfish-student).
    det_student_sets: tuple[str, ...] = ("train_max=0", "val_max=200", "aug_variants=1", "freeze_stages=3", *DET_COLOUR)
    det_lr: float = 1e-3
    # f4k trajectories keep their fish's and water's colours: a colour histogram branch beside the trunk and no colour
    # casts in the augmentation (experiments/2026-12-07-f4k-features: a plain HSV histogram out-ranked the
    # fine-tuned ImageNet teacher). The histogram is over opponent colours, more bins in chroma than brightness:
    # alone it matched HSV's and beat the RGB cube by 4 rank-1 points; 3-epoch teacher 0.745 / mAP 0.665 vs 0.742 / 0.652.
    emb_teacher: str = "embed-teacher-lite0-opponent"
    emb_student: str = "embed-student-m-opponent"
    emb_batch: int = 32  # identities per step (x 2 views)
    emb_teacher_epochs: int = 8
    emb_student_epochs: int = 8
    # Hard identity pairs for teacher and students (each batch item also holds one of its 3 nearest trajectories by the
    # CosFace weights): 92 % of the teacher's test misses were a fish of the query's own species
    # (experiments/2026-12-07-f4k-gallery-size); teacher test rank-1 0.776 -> 0.783, mAP 0.699 -> 0.710 for twice the
    # crops a step (experiments/2026-12-08-f4k-teacher-recipe).
    emb_teacher_sets: tuple[str, ...] = ("repeats=2", "freeze_stages=3", "aug_cast=0", "neighbours=3")
    # Two fixed augmentations per crop for every student (with KD and without: the same data), so the teacher embeds
    # each once: run on every batch, the Lite0 teacher made a KD student 3x slower than one without KD.
    emb_student_sets: tuple[str, ...] = ("repeats=2", "aug_cast=0", "kd_views=2", "neighbours=3")
    emb_lr: float = 1e-3
    # PTQ's alternative for the embedder: the KD student (first seed) fine-tuned this many epochs with fake quantisation,
    # the teacher still teaching, then exported INT8 and gated beside the PTQ student (0 = off). Two epochs at 2e-4 took
    # the INT8 student from 3.2 to 2.0 mAP points under the teacher (experiments/2026-12-08-f4k-teacher-recipe).
    emb_qat_epochs: int = 2
    emb_qat_lr: float = 2e-4
    seeds: tuple[int, ...] = (0, 1)
    # Student runs trained at once, single-threaded each (teachers run one after another with both cores): on
    # these 2 cores three 1-thread trainings each ran at 2.2 images/s, about what one 2-thread run makes alone.
    student_lanes: int = 4
    # The kinds whose teacher is also trained from scratch (same recipe, nothing frozen): the pretrained-vs-scratch line.
    scratch: tuple[str, ...] = ("detector", "embedder")
    calib_size: int = 128


REAL_PRESETS = {
    "cpu": RealPreset(),
    # A CUDA machine: every training frame, and the epochs a from-scratch edge student needs on small real fish
    # (on 2 cores, 4,000 images left it finding nothing; docs/RESULTS.md). Not yet run.
    "gpu": RealPreset(
        det_batch=32, det_teacher_epochs=12, det_student_epochs=80,
        det_teacher_sets=("train_max=0", "val_max=727", "freeze_stages=3", "workers=4", *DET_COLOUR),
        det_student_sets=("train_max=0", "val_max=727", "aug_variants=8", "workers=4", *DET_COLOUR),
        emb_teacher_epochs=30, emb_student_epochs=60, emb_teacher_sets=("repeats=4", "freeze_stages=2", "aug_cast=0", "workers=4"),
        emb_student_sets=("repeats=4", "aug_cast=0", "workers=4"), student_lanes=1,
    ),
}


@dataclass
class RealData:
    deepfish: Path  # YOLO boxes (images/, labels/)
    masks: Path  # deepfish-masks/instances.json: the same frames with SAM instance masks
    tracklets: Path  # f4k-tracklets re-ID folder
    ras: Path  # unlabelled aquaculture-tank frames

    @staticmethod
    def under(shared: Path) -> RealData:
        return RealData(shared / "deepfish", shared / "deepfish-masks" / "instances.json", shared / "f4k-tracklets", shared / "ras-frames")

    def check(self) -> None:
        for name, path in asdict(self).items():
            if not Path(path).exists():
                raise FinprintError(f"{path}: {name} data not found (see ../shared/README.md)")


@dataclass
class RealRun:
    workdir: Path
    data: RealData
    preset: RealPreset = field(default_factory=RealPreset)
    device: str = "auto"
    only: str | None = None  # "detector" | "embedder": just that half
    # The synthetic farm's results workdir (its farm/ folder and emb-student-nokd/ run): for the joint embedder.
    farm: Path | None = None

    def __post_init__(self) -> None:
        self.w = self.workdir / "real"
        # The demo's step runner: skip what exists, time the rest, raise on a failed command.
        self.steps = Demo(self.w, Preset(0, 0, 0, 0, "", self.preset.det_imgsz, 0, 0, 0, 0, 1, 1), 0, self.device)
        self.results: dict = {"preset": asdict(self.preset), "steps": self.steps.results["steps"]}

    def _run(self, name: str, out: Path, *argv: str, ok_codes: tuple[int, ...] = (0,), done=None) -> None:
        self.steps._step(name, done or Demo._complete(out), lambda: self.steps._finprint(*argv, ok_codes=ok_codes))

    def _teachers(self, prefix: str, kind: str, task: str, model: str, args: list[str], sets: tuple[str, ...], epochs: int) -> dict[str, Path]:
        """The pretrained teacher, and (preset `scratch`) the same recipe from scratch with nothing frozen, one after the
        other with both cores: side by side single-threaded, the pretrained detector teacher took 47 min for 4 epochs,
        alone 27 min for 6 (experiments/2026-12-07-deepfish-teacher-epochs)."""
        teacher = self.w / f"{prefix}-teacher"
        flags = [a for s in sets for a in ("--set", s)]
        common = ["--epochs", str(epochs), "--seed", "0", "--device", self.device]
        steps = [(f"{kind} teacher (ImageNet Lite0)", teacher, ["train", "--task", task, "--model", model, *args, *flags,
                                                                 "--out", str(teacher), *common])]
        runs = {"teacher": teacher}
        if kind in self.preset.scratch:
            runs["teacher-scratch"] = scratch = self.w / f"{prefix}-teacher-scratch"
            unfrozen = [a for s in sets if not s.startswith("freeze_stages=") for a in ("--set", s)]
            steps.append((f"{kind} teacher (from scratch)", scratch, ["train", "--task", task, "--model", model, "--pretrained", "none",
                                                                      *args, *unfrozen, "--out", str(scratch), *common]))
        self.steps.jobs = 1
        self.steps._steps(steps)
        return runs

    def _students(self, prefix: str, kind: str, teacher: Path, student: str, args: list[str], epochs: int) -> dict[str, Path]:
        """The student with and without KD per seed (same epochs, seed, data). Two at a time as single-threaded
        processes: on 2 cores two 2-thread runs side by side thrash (each ran 3-4x slower, not 2x)."""
        steps, runs = [], {}
        lanes = self.preset.student_lanes
        for seed in self.preset.seeds:
            for kd in (True, False):
                run = self.w / f"{prefix}-student-{'kd' if kd else 'nokd'}-seed{seed}"
                runs[run.name.removeprefix(f"{prefix}-")] = run
                steps.append((f"{kind} student ({'KD' if kd else 'no KD'}, seed {seed})", run, [
                    "distill", "--teacher", str(teacher), "--student", student, *args, *([] if kd else ["--no-kd"]),
                    *(["--set", "threads=1"] if lanes > 1 else []), "--out", str(run), "--epochs", str(epochs), "--seed", str(seed),
                    "--device", self.device]))
        self.steps.jobs = lanes
        self.steps._steps(steps)
        return runs

    def _eval(self, run: Path, *data: str, out: Path | None = None) -> dict:
        out = out or self.w / "eval" / f"{run.name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        name = f"eval {run.name}" if out.parent.name == "eval" else f"eval {out.parent.name} {out.stem}"
        self._run(name, out, "eval", "--model", str(run), "--data", *data, "--json", str(out), "--device", self.device, done=out.is_file)
        return json.loads(out.read_text())["metrics"]

    # ----------------------------------------------------------------- detector on DeepFish
    def detector(self) -> dict:
        p, w = self.preset, self.w
        data = ["--data", str(self.data.masks), "--val-groups", DEEPFISH_VAL, "--imgsz", str(p.det_imgsz), "--batch", str(p.det_batch),
                "--lr", str(p.det_lr)]
        student_sets = [a for s in p.det_student_sets for a in ("--set", s)]
        runs = self._teachers("det", "detector", "detect", p.det_teacher, data, p.det_teacher_sets, p.det_teacher_epochs)
        teacher = runs["teacher"]
        runs.update(self._students("det", "detector", teacher, p.det_student, [*data, *student_sets], p.det_student_epochs))
        evals = {name: self._eval(run, str(self.data.masks), "--val-groups", DEEPFISH_VAL) for name, run in runs.items()}
        if not p.seeds:  # teachers only (--real-seeds with no seed): nothing to export
            return {"eval": evals, "gate": []}
        calib = w / "calib-detector"
        self._run("calibration set (DeepFish training habitats + ras-frames)", calib, "calib", "build", "--data", str(self.data.masks),
                  "--data", str(self.data.ras), "--out", str(calib), "--size", str(p.calib_size), "--kind", "detector",
                  "--imgsz", str(p.det_imgsz), "--exclude-groups", DEEPFISH_VAL, done=lambda: (calib / "calib.json").is_file())
        models = w / "models" / "detector"
        self._run("export detector student", models, "export", "--run", str(runs[f"student-kd-seed{p.seeds[0]}"]), "--out", str(models),
                  "--precision", "fp32,fp16,int8", "--calib", str(calib), "--teacher", str(teacher), "--data", str(self.data.masks),
                  "--val-groups", DEEPFISH_VAL, "--gate-images", "1000", "--max-drop", "5.0", ok_codes=GATE_CODES, done=lambda: any(models.glob("*.int8.onnx")))
        return {"eval": evals, "gate": _gate(models)}

    # ----------------------------------------------------------------- embedder on f4k-tracklets
    def embedder(self) -> dict:
        p, w = self.preset, self.w
        data = ["--data", str(self.data.tracklets), "--batch", str(p.emb_batch), "--lr", str(p.emb_lr)]
        student_sets = [a for s in p.emb_student_sets for a in ("--set", s)]
        runs = self._teachers("emb", "embedder", "embed", p.emb_teacher, data, p.emb_teacher_sets, p.emb_teacher_epochs)
        teacher = runs["teacher"]
        runs.update(self._students("emb", "embedder", teacher, p.emb_student, [*data, *student_sets], p.emb_student_epochs))
        evals = {name: self._eval(run, str(self.data.tracklets)) for name, run in runs.items()}
        joint = self.joint(teacher) if "student-nokd-seed0" in runs else {}
        if not p.seeds:
            return {"eval": evals, "gate": []}
        calib = w / "calib-embedder"
        self._run("calibration set (f4k training crops)", calib, "calib", "build", "--data", str(self.data.tracklets / "train"),
                  "--out", str(calib), "--size", str(p.calib_size), "--kind", "embedder", done=lambda: (calib / "calib.json").is_file())
        models = w / "models" / "embedder"
        self._export_embedder("export embedder student", runs[f"student-kd-seed{p.seeds[0]}"], models, teacher,
                              "--precision", "fp32,fp16,int8", "--calib", str(calib))
        gate = _gate(models)
        if p.emb_qat_epochs:
            gate += self._embedder_qat(teacher, runs[f"student-kd-seed{p.seeds[0]}"])
        return {"eval": evals, "gate": gate, **({"joint": joint} if joint else {})}

    def _embedder_qat(self, teacher: Path, student: Path) -> list[dict]:
        """The KD student fine-tuned with fake quantisation (teacher still teaching), exported INT8 with its own scales
        and gated on the same test split; its student stages join the gate table as "QAT student ..."."""
        p, run, models = self.preset, self.w / "emb-student-qat", self.w / "models" / "embedder-qat"
        sets = [a for s in p.emb_student_sets for a in ("--set", s)]
        self._run("embedder student (QAT fine-tuning)", run, "distill", "--teacher", str(teacher), "--student", p.emb_student,
                  "--init", str(student), "--qat", "--data", str(self.data.tracklets), "--batch", str(p.emb_batch),
                  "--lr", str(p.emb_qat_lr), *sets, "--out", str(run), "--epochs", str(p.emb_qat_epochs),
                  "--seed", str(p.seeds[0]), "--device", self.device)
        self._export_embedder("export embedder student (QAT)", run, models, teacher, "--precision", "int8")  # its own scales
        return _qat_gate(models)

    def _export_embedder(self, name: str, run: Path, models: Path, teacher: Path, *precision: str) -> None:
        """Export a student run and gate every stage on the whole f4k test split (at most 3 rank-1 points lost)."""
        self._run(name, models, "export", "--run", str(run), "--out", str(models), *precision, "--teacher", str(teacher),
                  "--data", str(self.data.tracklets), "--gate-images", "100000", "--max-drop", "3.0", ok_codes=GATE_CODES,
                  done=lambda: any(models.glob("*.int8.onnx")))

    def joint(self, teacher: Path) -> dict:
        """One edge embedder trained on f4k-tracklets and the synthetic farm together (the no-KD student's recipe,
        seed 0), and the two one-data-set students, each scored on both test sets: can one model serve real and
        synthetic fish? The merged folder validates on the farm's gallery/query only, so f4k's test split stays out of
        checkpoint selection."""
        farm = self.farm
        if farm is None or not (farm / "farm" / "reid").is_dir() or not (farm / "emb-student-nokd" / "COMPLETE").is_file():
            log.warning("joint embedder skipped: no synthetic farm run with its no-KD embedder student under %s "
                        "(python -m finprint.results --only farm makes one)", farm)
            return {}
        p = self.preset
        merged = self.w / "joint-reid"
        self._run("joint crops (f4k-tracklets + synthetic farm)", merged, "data", "merge-reid", f"f4k={self.data.tracklets}",
                  f"farm={farm / 'farm'}", "--out", str(merged), "--eval-from", "farm", done=merged.is_dir)
        run = self.w / "emb-joint-nokd-seed0"
        sets = [a for s in p.emb_student_sets for a in ("--set", s)]
        self._run("embedder student on f4k + farm (no KD, seed 0)", run, "distill", "--teacher", str(teacher), "--student",
                  p.emb_student, "--no-kd", "--data", str(merged), "--batch", str(p.emb_batch), "--lr", str(p.emb_lr), *sets,
                  "--out", str(run), "--epochs", str(p.emb_student_epochs), "--seed", "0", "--device", self.device)
        models = {"f4k": self.w / "emb-student-nokd-seed0", "farm": farm / "emb-student-nokd", "both": run}
        tests = {"f4k": str(self.data.tracklets), "farm": str(farm / "farm")}
        return {trained: {test: self._eval(model, data, out=self.w / "eval" / "joint" / f"{trained}-on-{test}.json")
                          for test, data in tests.items()} for trained, model in models.items()}

    def bench(self, kinds: tuple[str, ...] = ("detector", "embedder")) -> dict:
        """Teacher fp32 and student fp32/fp16/INT8 of `kinds` in one interleaved run; with both, then the INT8 chain
        (detector -> embedder per fish) on the crowded ras-frames."""
        both = set(kinds) == {"detector", "embedder"}
        staging = self.w / ("bench-models" if both else f"bench-models-{kinds[0]}")
        out = self.w / ("bench.json" if both else f"bench-{kinds[0]}.json")

        def run() -> None:
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir()
            # The QAT export's folder ("KIND-qat") adds its student; its teacher is the PTQ folder's.
            folders = [self.w / "models" / name for kind in kinds for name in (kind, f"{kind}-qat")]
            for folder in sorted(f for f in folders if f.is_dir()):
                for f in sorted(folder.iterdir()):
                    if (f.suffix == ".onnx" or f.name.endswith(".manifest.json")) and not (
                            folder.name.endswith("-qat") and f.name.startswith("teacher-")):
                        shutil.copy2(f, staging / f"{folder.name}-{f.name}")
            pipeline = ["--pipeline", "--frames", str(self.data.ras)] if both else []
            self.steps._finprint("bench", "--models", str(staging), "--threads", "2", "--json", str(out), *pipeline)

        name = "bench (models, then the INT8 chain on ras-frames)" if both else f"bench ({kinds[0]} models)"
        self.steps._step(name, out.is_file, run)
        return json.loads(out.read_text())

    def pictures(self, kinds: tuple[str, ...] = ("detector", "embedder")) -> dict[str, str]:
        """Contact sheets: the INT8 detector on DeepFish validation frames and on ras-frames (no labels there:
        what it finds), and the INT8 embedder's nearest gallery crops for 8 f4k queries."""
        img = self.w / "img"
        sheets: dict[str, str] = {}
        folder = self.w / "models" / "detector"
        # The INT8 student (what a farm runs) and the fp32 teacher (what it was taught from), on the same frames.
        for who, pattern in (("", "*.int8.onnx"), ("teacher_", "teacher-*.fp32.onnx")):
            det = next(iter(sorted(folder.glob(pattern))), None) if folder.is_dir() and "detector" in kinds else None
            if det is None:
                continue
            for name, args in (("deepfish_val", [str(self.data.masks), "--groups", DEEPFISH_VAL]), ("ras_frames", [str(self.data.ras)])):
                out = img / f"{who}{name}.png"
                self._run(f"picture {who}{name}", out, "data", "show", *args, "--model", str(det), "--out", str(out), "--n", "12",
                          done=out.is_file)
                sheets[f"{who}{name}"] = str(out)
        emb = next(iter(sorted((self.w / "models" / "embedder").glob("*.int8.onnx"))), None) if "embedder" in kinds else None
        if emb is not None:
            out = img / "f4k_matches.png"
            self._run("picture f4k_matches", out, "eval", "--model", str(emb), "--data", str(self.data.tracklets), "--matches", str(out),
                      done=out.is_file)
            sheets["f4k_matches"] = str(out)
        return sheets

    def run(self) -> dict:
        self.data.check()
        self.w.mkdir(parents=True, exist_ok=True)
        if self.only in (None, "detector"):
            self.results["detector"] = self.detector()
        if self.only in (None, "embedder"):
            self.results["embedder"] = self.embedder()
        if self.only is None and (self.w / "models").is_dir():
            self.results["bench"] = self.bench()
            self.results["pictures"] = self.pictures()
        elif self.only and self.results[self.only]["gate"]:  # one half: its models benched alone, its pictures
            self.results[self.only]["bench"] = self.bench((self.only,))
            self.results["pictures"] = self.pictures((self.only,))
        previous = json.loads((self.w / "real.json").read_text()) if (self.w / "real.json").is_file() else {}
        steps = {**previous.get("steps", {}), **{k: v for k, v in self.results["steps"].items() if not v.get("skipped")}}
        (self.w / "real.json").write_text(json.dumps({**previous, **self.results, "steps": steps}, indent=1) + "\n")
        return self.results


def collect(workdir: Path) -> dict:
    """What earlier real-data runs left under WORKDIR/real (scores, gates, bench, pictures, step times), without
    training anything: `python -m finprint.results --only real-report` renders it."""
    w = workdir / "real"
    previous = json.loads((w / "real.json").read_text()) if (w / "real.json").is_file() else {}
    results: dict = {"preset": previous.get("preset", asdict(RealPreset())), "steps": previous.get("steps", {})}
    for prefix, kind in (("det-", "detector"), ("emb-", "embedder")):
        evals = {p.stem.removeprefix(prefix): json.loads(p.read_text())["metrics"] for p in sorted((w / "eval").glob(f"{prefix}*.json"))}
        if evals:
            results[kind] = {"eval": dict(sorted(evals.items(), key=lambda kv: (not kv[0].startswith("teacher"), kv[0]))),
                             "gate": _gate(w / "models" / kind) + _qat_gate(w / "models" / f"{kind}-qat")}
    joint: dict = {}
    for path in sorted((w / "eval" / "joint").glob("*-on-*.json")):
        trained, test = path.stem.split("-on-")
        scored = json.loads(path.read_text())
        joint.setdefault(trained, {})[test] = scored["metrics"]
        config = Path(scored.get("model", "")) / "config.json"
        if config.is_file():  # which model and how long: the one-data-set students follow their own data set's recipe
            c = json.loads(config.read_text())
            joint[trained]["recipe"] = f"{c['model']}, {c['epochs']} epochs"
    if joint and "embedder" in results:
        results["embedder"]["joint"] = joint
    for run in sorted(p for p in w.glob("*-*") if p.is_dir() and p.name.startswith(("det-", "emb-"))):
        name = run.name
        if (run / "COMPLETE").is_file() and (run / "config.json").is_file():
            # wall clock from the run's first file to its last: what the run took on this machine
            results.setdefault("run_seconds", {})[name] = (run / "COMPLETE").stat().st_mtime - (run / "config.json").stat().st_mtime
    if (w / "bench.json").is_file():
        results["bench"] = json.loads((w / "bench.json").read_text())
    for kind in ("detector", "embedder"):
        if (w / f"bench-{kind}.json").is_file() and kind in results:
            results[kind]["bench"] = json.loads((w / f"bench-{kind}.json").read_text())
    pictures = {p.stem: str(p) for p in sorted((w / "img").glob("*.png"))} if (w / "img").is_dir() else {}
    if pictures:
        results["pictures"] = pictures
    return results


def _gate(models: Path) -> list[dict]:
    """The accuracy of each stage as the INT8 manifest records it (teacher fp32 -> student fp32 -> fp16 -> int8)."""
    for manifest in sorted(models.glob("*.int8.manifest.json")):
        return json.loads(manifest.read_text()).get("accuracy", [])
    return []


def _qat_gate(models: Path) -> list[dict]:
    """The QAT export's student stages, named "QAT student ..." to sit below the PTQ gate (its teacher row is the same)."""
    return [{**g, "stage": f"QAT {g['stage']}"} for g in _gate(models) if g["stage"].startswith("student")]
