"""`finprint export --run RUN --out DIR`: ONNX fp32/fp16/int8 + manifests, behind the accuracy gate.

DIR/<model>.<precision>.onnx + <model>.<precision>.manifest.json for the student, and
DIR/teacher-<model>.fp32.onnx when a teacher is known (for `finprint bench`). The gate measures
teacher fp32 -> student fp32 -> fp16 -> int8 on held-out data; an INT8 stage that drops more than
--max-drop points first gets its most sensitive nodes kept in fp32 (calib.sensitivity); if the gate
still fails the files are written, marked failed, and the command exits 1 with the table.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finprint.errors import ConfigError, FinprintError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=Path, help="run folder of the student (finprint train/distill)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the ONNX files and manifests")
    parser.add_argument("--precision", default="fp32,fp16,int8", help="comma list of fp32, fp16, int8")
    parser.add_argument("--calib", type=Path, help="calibration set (finprint calib build); default: one selected from the run's training data")
    parser.add_argument("--calib-size", type=int, default=64, help="images for the calibration set built when --calib is not given")
    parser.add_argument("--calib-method", default="minmax", choices=("minmax", "entropy", "percentile"))
    parser.add_argument("--reduce-range", action="store_true", help="7-bit weights (CPUs without VNNI can saturate U8xS8)")
    parser.add_argument("--max-drop", type=float, default=1.0, help="points of the main metric a stage may lose vs student fp32")
    parser.add_argument("--teacher", type=Path, help="teacher run (default: the run's own teacher, if any)")
    parser.add_argument("--data", type=Path, help="held-out data for the gate (default: the run's data)")
    parser.add_argument("--split", help="split of --data (default: test where it exists)")
    parser.add_argument("--val-groups", help="comma list of groups held out (default: the run's val_groups)")
    parser.add_argument("--gate-images", type=int, default=200, help="at most this many held-out frames/crops")
    parser.add_argument("--no-gate", action="store_true", help="export without measuring accuracy")
    parser.add_argument("--no-sensitivity", action="store_true", help="do not keep sensitive nodes in fp32 when int8 fails")
    parser.add_argument("--which", default="best", choices=("best", "last"))
    parser.add_argument("--opset", type=int, default=17)


@dataclass
class LoadedRun:
    model: Any
    config: dict
    kind: str
    name: str


def load_run(run: Path, which: str = "best") -> LoadedRun:
    """The run's model in eval mode; a QAT run is rebuilt with its fake quantisation."""
    from finprint.calib.qat import load_qat_state
    from finprint.distill import registry
    from finprint.distill.runs import load_checkpoint
    from finprint.export.onnx_export import kind_of_task

    if not run.is_dir():
        raise FinprintError(f"{run}: run folder not found")
    path = run / f"{which}.pt"
    if not path.is_file() and (run / "last.pt").is_file():
        path = run / "last.pt"
    ckpt = load_checkpoint(path)
    config = dict(ckpt["config"])
    model = registry.build(config["model"])
    try:
        load_qat_state(model, ckpt["model"])
    except RuntimeError as exc:
        raise FinprintError(f"{path}: weights do not fit model '{config['model']}' ({str(exc).splitlines()[0]})") from exc
    return LoadedRun(model.eval(), config, kind_of_task(config["task"]), config["model"])


def _evaluator(kind: str, pre, args: argparse.Namespace, config: dict):
    """evaluate(engine) -> metrics on the held-out set, and up to 8 held-out input tensors for parity."""
    from finprint.distill.cli_eval import load_eval_frames, load_eval_reid
    from finprint.distill.evaluate import evaluate_detector, evaluate_embedder
    from finprint.runtime.preprocess import preprocess_image

    data = Path(args.data or config.get("data", ""))
    if not str(data) or not data.exists():
        raise ConfigError(f"held-out data '{data}' not found: pass --data (or --no-gate)")
    if kind == "detector":
        groups = [g for g in args.val_groups.split(",") if g] if args.val_groups else config.get("val_groups")
        frames = load_eval_frames(data, args.split, groups)
        if len(frames) > args.gate_images:  # evenly spread: a cut by position keeps the first habitat only
            frames = [frames[i] for i in np.linspace(0, len(frames) - 1, args.gate_images).astype(int)]
        import cv2

        samples = np.stack([preprocess_image(cv2.imread(str(f.image_path)), pre)[0] for f in frames[:8]])
        return (lambda engine: evaluate_detector(engine, pre, frames, batch=8)), samples
    reid = load_eval_reid(data)
    if len(reid.crops) > args.gate_images:
        keep = [c for c in reid.crops if c.subset in ("gallery", "query")] or reid.crops
        if len(keep) > args.gate_images:
            # Whole identities (their gallery and query crops together), in name order, up to the budget:
            # a cut by position would leave a gallery without its queries.
            chosen, count = set(), 0
            sizes = Counter(c.identity for c in keep)
            for identity in sorted(sizes):
                if count + sizes[identity] > args.gate_images and chosen:
                    break
                chosen.add(identity)
                count += sizes[identity]
            keep = [c for c in keep if c.identity in chosen]
        reid.crops = keep
    import cv2

    samples = np.stack([preprocess_image(cv2.imread(str(c.path)), pre)[0] for c in reid.crops[:8]])
    return (lambda engine: evaluate_embedder(engine, pre, reid)), samples


def run(args: argparse.Namespace) -> int:
    from finprint.calib.calibset import load_calibset
    from finprint.calib.qat import is_qat
    from finprint.calib.quantize import quantize_int8
    from finprint.data.synth import embedder_crop_flags
    from finprint.distill.runs import load_teacher
    from finprint.distill.torch_engine import TorchEngine
    from finprint.export.fp16 import convert_to_fp16
    from finprint.export.gate import REFERENCE_STAGE, GateError, Stage, run_gate
    from finprint.export.onnx_export import (
        compact_tensor_names,
        default_preprocess,
        export_onnx,
        write_manifest,
    )
    from finprint.export.parity import check_parity
    from finprint.runtime.engines import OrtEngine

    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ConfigError(f"--precision: unknown {bad}; choose from {', '.join(PRECISIONS)}")
    student = load_run(args.run, args.which)
    kind, cfg = student.kind, student.config
    pre = default_preprocess(kind, int(cfg.get("imgsz", 320)))
    if kind == "embedder":  # trained on masked or aligned crops: the daemon must cut its crops the same way
        pre = pre.model_copy(update=embedder_crop_flags(cfg.get("data")))
    qat = is_qat(student.model)
    args.out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    stages: list[Stage] = []
    extra: dict[str, Any] = {"run": str(args.run), "qat": qat}

    teacher_run = args.teacher or (Path(cfg["teacher"]) if cfg.get("teacher") else None)
    teacher_path = None
    if teacher_run is not None:
        teacher, tcfg = load_teacher(teacher_run, cfg["task"])
        teacher_pre = pre.model_copy(update=embedder_crop_flags(tcfg.get("data"))) if kind == "embedder" else pre
        teacher_path = export_onnx(teacher, kind, args.out / f"teacher-{tcfg['model']}.fp32.onnx", teacher_pre, args.opset)
        stages.append(Stage("teacher fp32", "fp32", TorchEngine(teacher, "cpu")))

    evaluate, samples = (None, None) if args.no_gate else _evaluator(kind, pre, args, cfg)
    if samples is None:
        samples = np.random.default_rng(0).random((4, 3, pre.height, pre.width), dtype=np.float32)

    if qat:
        # Fake quantisation exports as QDQ: the student *is* the int8 model. Its float twin (fake
        # quantisation off) is the fp32 reference the gate compares it with.
        from finprint.calib.qat import float_twin, fold_batchnorms, fold_weight_quantizers

        paths["fp32"] = export_onnx(float_twin(student.model), kind, args.out / f"{student.name}.fp32.onnx", pre, args.opset)
        stages.append(Stage(REFERENCE_STAGE, "fp32", OrtEngine(paths["fp32"], intra_threads=2)))
        extra["qat_batchnorms_folded"] = fold_batchnorms(student.model)
        paths["int8"] = export_onnx(student.model, kind, args.out / f"{student.name}.int8.onnx", pre, args.opset)
        fold_weight_quantizers(paths["int8"])
        stages.append(Stage("student int8", "int8", OrtEngine(paths["int8"], intra_threads=2)))
        report = check_parity(TorchEngine(student.model), OrtEngine(paths["int8"]), {_input_name(kind): samples}, "fp16", ("torch qat", "onnx int8"))
        extra.update({f"parity_{k}": v for k, v in report.max_abs.items()})
        calib = None
    else:
        fp32 = export_onnx(student.model, kind, args.out / f"{student.name}.fp32.onnx", pre, args.opset)
        report = check_parity(TorchEngine(student.model), OrtEngine(fp32), {_input_name(kind): samples}, "fp32", ("torch", "onnx fp32"))
        if not report.passed:
            raise FinprintError(f"ONNX Runtime disagrees with PyTorch beyond tolerance: {report.summary()}")
        extra.update({f"parity_{k}": v for k, v in report.max_abs.items()})
        paths["fp32"] = fp32
        stages.append(Stage(REFERENCE_STAGE, "fp32", OrtEngine(fp32, intra_threads=2)))
        if "fp16" in precisions:
            paths["fp16"] = convert_to_fp16(fp32, args.out / f"{student.name}.fp16.onnx")
            stages.append(Stage("student fp16", "fp16", OrtEngine(paths["fp16"], intra_threads=2)))
        calib = None
        if "int8" in precisions:
            calib = load_calibset(args.calib, expect=pre) if args.calib else _default_calibset(kind, pre, cfg, args)
            paths["int8"] = quantize_int8(fp32, args.out / f"{student.name}.int8.onnx", calib, args.calib_method, reduce_range=args.reduce_range)
            stages.append(Stage("student int8", "int8", OrtEngine(paths["int8"], intra_threads=2)))
            extra.update({"calib_method": args.calib_method, "calib_size": len(calib), "reduce_range": args.reduce_range})

    gate = None
    if evaluate is not None:
        gate = run_gate(kind, stages, evaluate, args.max_drop)
        int8 = gate.result("student int8")
        if int8 is not None and not int8.passed and not qat and not args.no_sensitivity:
            gate, kept = _keep_sensitive_in_fp32(gate, stages, evaluate, args, paths, calib)
            extra["fp32_nodes"] = ",".join(kept)
        extra["gate"] = "passed" if gate.passed else "failed"
        print(gate.table())

    for precision, path in paths.items():
        if precision == "int8":
            compact_tensor_names(path)  # after the gate and sensitivity, which match tensors by name
        metrics = gate.result(f"student {precision}").metrics if gate and gate.result(f"student {precision}") else {}
        write_manifest(
            path, kind, student.name, precision, pre,
            accuracy=gate.accuracy() if gate else None,
            calibration_hash=calib.set_sha256 if precision == "int8" and not qat and calib is not None else None,
            open_set_threshold=metrics.get("open_set_threshold"),
            extra=extra,
        )
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if teacher_path is not None:
        tmetrics = gate.result("teacher fp32").metrics if gate and gate.result("teacher fp32") else {}
        write_manifest(teacher_path, kind, teacher_path.name.split(".")[0], "fp32", pre,
                       accuracy=gate.accuracy() if gate else None, open_set_threshold=tmetrics.get("open_set_threshold"))
    if gate is not None and not gate.passed:
        raise GateError(gate)
    return 0


def _default_calibset(kind: str, pre, cfg: dict, args: argparse.Namespace):
    """No --calib: select one from the run's training data (held-out groups excluded) into OUT/calib."""
    from finprint.calib.calibset import build_calibset

    data = Path(cfg.get("data", ""))
    if kind == "embedder" and (data / "reid").is_dir():
        data = data / "reid"
    if not str(data) or not data.exists():
        raise ConfigError("--precision int8 needs --calib CALIB (build one with `finprint calib build`): the run's data is not here")
    groups = [g for g in args.val_groups.split(",") if g] if args.val_groups else cfg.get("val_groups")
    log.warning("no --calib: selecting a calibration set from %s into %s", data, args.out / "calib")
    return build_calibset(data, args.out / "calib", pre, kind=kind, size=args.calib_size, exclude_groups=groups)


def _input_name(kind: str) -> str:
    from finprint.export.onnx_export import INPUT_NAMES

    return INPUT_NAMES[kind]


def _keep_sensitive_in_fp32(gate, stages, evaluate, args, paths, calib):
    """Re-quantise keeping the most sensitive nodes in fp32 until the int8 stage passes the gate."""
    from finprint.calib.quantize import quantize_int8
    from finprint.calib.sensitivity import exclude_until, node_sensitivity
    from finprint.export.gate import Stage, run_gate
    from finprint.runtime.engines import OrtEngine

    ranking = node_sensitivity(paths["fp32"], paths["int8"], calib.tensors[:8])
    log.info("most sensitive nodes: %s", "; ".join(str(s) for s in ranking[:5]))
    measured = {r.name: r.metrics for r in gate.results}
    state = {"gate": gate}

    def attempt(nodes: list[str]) -> bool:
        quantize_int8(paths["fp32"], paths["int8"], calib, args.calib_method, nodes_to_exclude=nodes, reduce_range=args.reduce_range)
        for i, stage in enumerate(stages):
            if stage.name == "student int8":
                stages[i] = Stage(stage.name, stage.precision, OrtEngine(paths["int8"], intra_threads=2))
        measured.pop("student int8", None)
        state["gate"] = run_gate(gate.kind, stages, evaluate, args.max_drop, measured=measured)
        return state["gate"].passed

    kept, held = exclude_until(ranking, attempt)
    state["gate"].notes.append(f"int8: kept {len(kept)} node(s) in fp32 ({'gate holds' if held else 'gate still fails'}): {', '.join(kept)}")
    return state["gate"], kept
