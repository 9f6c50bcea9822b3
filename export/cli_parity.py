"""`finprint parity`: two engines (ONNX Runtime vs TensorRT, or any two models) on the same inputs.

Reports per output the max-abs difference and the cosine similarity of the two results, and, where
the data is a labelled dataset and `finprint.distill.evaluate` is installed, each engine's task
metric (mAP for a detector, rank-1/mAP for an embedder). Exit 1 when an output falls below
`--min-cosine` or above `--max-abs`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from finprint.errors import DataError, FinprintError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, type=Path, help="reference model (ONNX), run by --onnx-backend")
    parser.add_argument("--engine", required=True, type=Path,
                        help="compared model: a TensorRT .engine, or another .onnx")
    parser.add_argument("--data", type=Path, help="images (a folder, searched recursively) or a dataset; "
                        "without it, --random inputs are used")
    parser.add_argument("--random", type=int, default=8, help="random inputs when --data is not given (default 8)")
    parser.add_argument("--limit", type=int, default=32, help="at most this many images from --data (default 32)")
    parser.add_argument("--batch", type=int, default=4, help="inputs per infer() call (default 4)")
    parser.add_argument("--onnx-backend", default="cpu", choices=["auto", "tensorrt", "ort-gpu", "cpu"])
    parser.add_argument("--engine-backend", default="auto", choices=["auto", "tensorrt", "ort-gpu", "cpu"])
    parser.add_argument("--min-cosine", type=float, default=0.99, help="fail below this cosine similarity")
    parser.add_argument("--max-abs", type=float, default=None, help="fail above this max-abs difference")
    parser.add_argument("--metrics", action="store_true", help="also score each engine on --data (labelled dataset)")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = np.linalg.norm(a64) * np.linalg.norm(b64)
    if denom == 0:
        return 1.0 if np.array_equal(a64, b64) else 0.0
    return float(a64 @ b64 / denom)


def compare_outputs(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per output: max_abs and cosine of the whole tensor, and the lowest per-sample cosine."""
    missing = sorted(set(ref) - set(cand))
    if missing:
        raise FinprintError(f"outputs {missing} are missing from the compared engine (it has {sorted(cand)})")
    rows = {}
    for name, a in ref.items():
        b = np.asarray(cand[name])
        if a.shape != b.shape:
            raise FinprintError(f"output '{name}': shapes differ, {list(a.shape)} vs {list(b.shape)}")
        af, bf = a.astype(np.float32), b.astype(np.float32)
        per_sample = [cosine(af[i], bf[i]) for i in range(len(af))] if af.ndim > 1 else [cosine(af, bf)]
        rows[name] = {
            "max_abs": float(np.max(np.abs(af - bf))) if af.size else 0.0,
            "cosine": cosine(af, bf),
            "min_sample_cosine": float(min(per_sample)) if per_sample else 1.0,
        }
    return rows


def load_inputs(args: argparse.Namespace, manifest, input_name: str, shape: tuple) -> np.ndarray:
    """(N, C, H, W) float32: preprocessed images from --data, or seeded random tensors."""
    if args.data is None:
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in shape[1:]]
        return np.random.default_rng(0).random((args.random, *dims), dtype=np.float32)
    import cv2

    from finprint.runtime.preprocess import preprocess_image

    if manifest is None:
        raise FinprintError(f"{args.onnx}: --data needs the model's manifest (for preprocessing); none found")
    paths = [args.data] if args.data.is_file() else sorted(
        p for p in args.data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not paths:
        raise DataError(args.data, "no images found (.jpg, .png, .bmp)")
    tensors = []
    for path in paths[: args.limit]:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(path, "not a readable image")
        tensors.append(preprocess_image(image, manifest.preprocess)[0])
    return np.stack(tensors)


def run_all(engine, name: str, x: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x), batch):
        for k, v in engine.infer({name: x[i : i + batch]}).items():
            parts.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in parts.items()}


def task_metrics(engine, manifest, data: Path) -> dict[str, float] | None:
    try:
        from finprint.data import load_detection, load_reid
        from finprint.distill import evaluate
    except ImportError as exc:
        log.warning("task metrics skipped: %s", exc)
        return None
    if manifest.kind == "detector":
        frames = load_detection(data)[0].frames
        result = evaluate.evaluate_detector(engine, manifest.preprocess, frames)
    else:
        result = evaluate.evaluate_embedder(engine, manifest.preprocess, load_reid(data)[0])
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def run(args: argparse.Namespace) -> int:
    from finprint.runtime.engines import find_manifest, open_engine

    for path in (args.onnx, args.engine):
        if not path.is_file():
            raise FinprintError(f"{path}: model file not found")
    manifest = find_manifest(args.onnx, None, required=False)
    with open_engine(args.onnx, args.onnx_backend, manifest=manifest) as ref, \
         open_engine(args.engine, args.engine_backend) as cand:
        (spec,) = ref.inputs if len(ref.inputs) == 1 else (None,)
        if spec is None:
            raise FinprintError(f"{args.onnx}: parity feeds one input; this model has {[t.name for t in ref.inputs]}")
        x = load_inputs(args, manifest, spec.name, spec.shape).astype(spec.dtype)
        out_ref = run_all(ref, spec.name, x, args.batch)
        out_cand = run_all(cand, spec.name, x, args.batch)
        rows = compare_outputs(out_ref, out_cand)
        print(f"parity: {args.onnx.name} [{ref.backend}] vs {args.engine.name} [{cand.backend}] on {len(x)} inputs")
        print(f"{'output':<16}{'max_abs':>12}{'cosine':>12}{'min/sample':>12}")
        failed = []
        for name, row in rows.items():
            print(f"{name:<16}{row['max_abs']:>12.3e}{row['cosine']:>12.6f}{row['min_sample_cosine']:>12.6f}")
            if row["min_sample_cosine"] < args.min_cosine or (args.max_abs is not None and row["max_abs"] > args.max_abs):
                failed.append(name)
        if args.metrics and args.data is not None and manifest is not None:
            for label, eng in ((f"{args.onnx.name} [{ref.backend}]", ref), (f"{args.engine.name} [{cand.backend}]", cand)):
                metrics = task_metrics(eng, manifest, args.data)
                if metrics is not None:
                    shown = {k: round(v, 4) for k, v in metrics.items() if "map" in k or "rank" in k or "auroc" in k}
                    print(f"metrics {label}: {shown}")
    if failed:
        print(f"parity FAILED for {failed} (min cosine {args.min_cosine}, max abs {args.max_abs})")
        return 1
    print("parity OK")
    return 0
