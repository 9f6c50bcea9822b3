"""`finprint bench --models DIR`: latency, throughput, size, parameters and FLOPs of exported models.

All models are measured side by side in ONE process: every round runs each model once, in an
order rotated per round, so load from other processes hits all of them alike and the ratios hold on
a noisy shared machine. Sessions do not spin (session.intra_op.allow_spinning = 0, set by
finprint.runtime.engines), or one session's idle spinning would steal the cores of the next.
`--pipeline` runs detector -> crops -> embedder (finprint.runtime.pipeline) on frames for frames/s
and per-stage latency.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from finprint.errors import ConfigError, FinprintError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, type=Path, help="folder of exported .onnx files with manifests")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads per model (default 2)")
    parser.add_argument("--rounds", type=int, default=30, help="timed runs per model (default 30)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="images per call (default 1: per-frame latency)")
    parser.add_argument("--backend", default="auto", help="auto | cpu | cuda | tensorrt (see finprint.runtime.engines)")
    parser.add_argument("--json", type=Path, help="write the results here (default: MODELS/bench.json)")
    parser.add_argument("--pipeline", action="store_true", help="also run detector -> embedder on frames")
    parser.add_argument("--frames", type=Path, help="image folder for --pipeline (default: generated frames)")
    parser.add_argument("--pipeline-frames", type=int, default=20)


@dataclass
class ModelBench:
    file: str
    kind: str
    model: str
    precision: str
    backend: str
    size_bytes: int
    parameters: int
    flops: int  # per image, 2 x multiply-accumulates of Conv/Gemm/MatMul
    latency_ms: list[float] = field(default_factory=list, repr=False)
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    images_per_s: float = 0.0
    speedup_vs_teacher: float | None = None

    def summarise(self, batch: int) -> None:
        lat = np.asarray(self.latency_ms)
        self.p50_ms = float(np.percentile(lat, 50))
        self.p95_ms = float(np.percentile(lat, 95))
        self.images_per_s = float(batch * 1000.0 / lat.mean())


def count_parameters(model: onnx.ModelProto) -> int:
    """Weights: initializers feeding Conv/Gemm/MatMul (directly or through DequantizeLinear) + biases."""
    inits = {i.name: int(np.prod(i.dims)) if i.dims else 1 for i in model.graph.initializer}
    dq_source = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    total, seen = 0, set()
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
            continue
        for name in node.input[1:3]:
            name = dq_source.get(name, name)
            if name in inits and name not in seen:
                seen.add(name)
                total += inits[name]
    return total


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX Runtime's symbolic inference where available: it follows Resize scales computed behind a
    Cast (fp16 graphs), which onnx's own inference leaves unknown."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:
        return onnx.shape_inference.infer_shapes(model)
    try:
        return SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception as exc:  # its failures are assorted (AssertionError, KeyError ...); fall back
        log.debug("symbolic shape inference failed (%s); using onnx's", exc)
        return onnx.shape_inference.infer_shapes(model)


def count_flops(model: onnx.ModelProto) -> int:
    """FLOPs of one image: 2 x MACs of Conv/Gemm/MatMul, from shapes inferred with batch 1."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.graph.value_info[:]  # stale shapes (e.g. from fp16 conversion) would shadow the batch-1 inference
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    model = _infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    for i in model.graph.initializer:
        shapes[i.name] = list(i.dims)
    flops = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w, out = shapes.get(node.input[1]), shapes.get(node.output[0])
            if w and out and all(out):
                flops += 2 * int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out and all(out) and a[-1]:
                flops += 2 * int(np.prod(out)) * a[-1]
    return flops


def is_teacher_file(name: str) -> bool:
    """teacher-*.onnx as `finprint export` names it, or <kind>-teacher-*.onnx as the demo stages it."""
    return name.startswith(("teacher-", "detector-teacher-", "embedder-teacher-"))


def _discover(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FinprintError(f"{folder}: no such folder of exported models")
    files = sorted(p for p in folder.glob("*.onnx"))
    if not files:
        raise FinprintError(f"{folder}: no .onnx files; run `finprint export` first")
    return files


def open_models(folder: Path, threads: int, backend: str):
    """(ModelBench, engine, example input) per ONNX file, each checked against its manifest."""
    from finprint.export.onnx_export import load_exported
    from finprint.runtime.engines import open_engine

    opened: list = []
    try:
        for path in _discover(folder):
            manifest = load_exported(path)  # refuses a truncated file or one its manifest does not describe
            engine = open_engine(path, backend, manifest=manifest, require_manifest=True, intra_threads=threads)
            opened.append((None, engine, manifest.input().name, None))  # closed below if a later one fails
            proto = onnx.load(str(path))
            bench = ModelBench(
                file=path.name, kind=manifest.kind, model=manifest.model_name, precision=manifest.precision,
                backend=getattr(engine, "backend", backend), size_bytes=path.stat().st_size,
                parameters=count_parameters(proto), flops=count_flops(proto),
            )
            pre = manifest.preprocess
            opened[-1] = (bench, engine, manifest.input().name, (3, pre.height, pre.width))
    except BaseException:
        close_models(opened)
        raise
    return opened


def close_models(opened: list) -> None:
    """Close in the reverse order of opening (TensorRT engines share one CUDA context), every one."""
    errors = []
    for _, engine, _, _ in reversed(opened):
        try:
            engine.close()
        except FinprintError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def bench_models(folder: Path, threads: int = 2, rounds: int = 30, warmup: int = 3, batch: int = 1, backend: str = "auto") -> list[ModelBench]:
    opened = open_models(folder, threads, backend)
    try:
        return _bench_opened(opened, rounds, warmup, batch)
    finally:
        close_models(opened)


def _bench_opened(opened: list, rounds: int, warmup: int, batch: int) -> list[ModelBench]:
    rng = np.random.default_rng(0)
    feeds = [{name: rng.random((batch, *chw), dtype=np.float32)} for _, _, name, chw in opened]
    for _ in range(warmup):
        for (_, engine, _, _), feed in zip(opened, feeds, strict=True):
            engine.infer(feed)
    n = len(opened)
    for r in range(rounds):
        for k in range(n):
            i = (r + k) % n  # rotate who goes first, so no model always runs on a cold (or hot) core
            bench, engine, _, _ = opened[i]
            start = time.perf_counter()
            engine.infer(feeds[i])
            bench.latency_ms.append((time.perf_counter() - start) * 1000.0)
    results = [b for b, _, _, _ in opened]
    for b in results:
        b.summarise(batch)
    for kind in {b.kind for b in results}:
        teacher = next((b for b in results if b.kind == kind and is_teacher_file(b.file) and b.precision == "fp32"), None)
        if teacher is not None:
            for b in results:
                if b.kind == kind:
                    b.speedup_vs_teacher = teacher.p50_ms / b.p50_ms
    return results


def format_table(results: list[ModelBench]) -> str:
    header = ["model file", "kind", "prec", "backend", "p50 ms", "p95 ms", "img/s", "x teacher", "MB", "params", "GFLOPs"]
    rows = [header]
    for b in results:
        rows.append([
            b.file, b.kind, b.precision, b.backend, f"{b.p50_ms:.2f}", f"{b.p95_ms:.2f}", f"{b.images_per_s:.1f}",
            "-" if b.speedup_vs_teacher is None else f"{b.speedup_vs_teacher:.1f}x",
            f"{b.size_bytes / 1e6:.2f}", f"{b.parameters / 1e6:.2f}M", f"{b.flops / 1e9:.2f}",
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _pipeline_frames(folder: Path | None, count: int) -> list[np.ndarray]:
    import cv2

    if folder is not None:
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
        frames = [im for p in paths if (im := cv2.imread(str(p))) is not None]
        if not frames:
            raise FinprintError(f"{folder}: no readable images for --pipeline")
        return frames
    return synthetic_frames(count)


def synthetic_frames(count: int, fish: int = 6, width: int = 640, height: int = 480) -> list[np.ndarray]:
    """Farm frames holding `fish` fish each, drawn by the synthetic generator: a pipeline timed on empty
    frames never runs its embedder, so it would report a speed no farm sees."""
    from finprint.data.fish import Pose, make_population, render_texture
    from finprint.data.frame import Placement, render_frame
    from finprint.data.scene import sample_camera_water

    rng = np.random.default_rng(0)
    textures = [render_texture(ind) for ind in make_population(fish, rng)]
    style = sample_camera_water(rng)
    frames = []
    for _ in range(count):
        placements = [
            Placement(k, tex, Pose(cx=float(rng.uniform(80, width - 80)), cy=float(rng.uniform(60, height - 60)),
                                   length_px=float(rng.uniform(90, 160)), angle=float(rng.uniform(-0.3, 0.3)),
                                   facing_right=bool(rng.integers(2)), bend=0.05, bend_phase=float(rng.uniform(0, 6.3))),
                      float(rng.uniform(0, 1)))
            for k, tex in enumerate(textures)
        ]
        image, _ = render_frame(placements, style, width, height, rng)
        frames.append(image)
    return frames


def bench_pipeline(folder: Path, frames: list[np.ndarray], threads: int, backend: str) -> list[dict]:
    """Each detector/embedder pair of the same precision (students only) through the pipeline."""
    from finprint.runtime.manifest import load_manifest, manifest_path_for
    from finprint.runtime.pipeline import Pipeline

    os.environ["FINPRINT_ORT_THREADS"] = str(threads)  # the pipeline opens its engines with this
    by_kind: dict[str, dict[str, Path]] = {"detector": {}, "embedder": {}}
    for path in _discover(folder):
        if is_teacher_file(path.name):
            continue
        m = load_manifest(manifest_path_for(path))
        by_kind[m.kind][m.precision] = path
    results = []
    for precision, det in sorted(by_kind["detector"].items()):
        emb = by_kind["embedder"].get(precision)
        if emb is None:
            continue
        pipe = Pipeline(det, emb, backend=backend, max_batch=1)
        try:
            pipe.process(frames[:2])  # warm-up
            pipe.latency_ms.clear()
            start = time.perf_counter()
            fish = [len(pipe.process([frame])[0].detections) for frame in frames]
            seconds = time.perf_counter() - start
            results.append({"precision": precision, "detector": det.name, "embedder": emb.name,
                            "frames_per_s": len(frames) / seconds, "ms_per_frame": 1000 * seconds / len(frames),
                            "fish_per_frame": float(np.mean(fish)), "fish": fish,
                            # the per-fish share of a frame's time: crops and embedder, over the fish they served
                            "ms_per_fish": (sum(pipe.latency_ms["crops"]) + sum(pipe.latency_ms["embedder"])) / max(1, sum(fish)),
                            "stages": pipe.latency_summary()})
        finally:
            pipe.close()
    if not results:
        log.warning("--pipeline: no detector/embedder pair of the same precision in %s", folder)
    return results


def run(args: argparse.Namespace) -> int:
    if args.threads < 1 or args.rounds < 1 or args.batch < 1:
        raise ConfigError("--threads, --rounds and --batch must be at least 1")
    results = bench_models(args.models, args.threads, args.rounds, args.warmup, args.batch, args.backend)
    print(f"{len(results)} models, {args.rounds} interleaved rounds, batch {args.batch}, {args.threads} threads")
    print(format_table(results))
    report: dict = {"threads": args.threads, "rounds": args.rounds, "batch": args.batch,
                    "models": [{k: v for k, v in asdict(b).items() if k != "latency_ms"} for b in results]}
    if args.pipeline:
        frames = _pipeline_frames(args.frames, args.pipeline_frames)
        report["pipeline"] = bench_pipeline(args.models, frames, args.threads, args.backend)
        for p in report["pipeline"]:
            stages = ", ".join(f"{k} {v['p50_ms']:.1f}" for k, v in p["stages"].items())
            print(f"pipeline {p['precision']}: {p['frames_per_s']:.1f} frames/s, {p['fish_per_frame']:.1f} fish per frame, "
                  f"{p['ms_per_fish']:.1f} ms per fish (p50 ms: {stages})")
    out = args.json or args.models / "bench.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0
