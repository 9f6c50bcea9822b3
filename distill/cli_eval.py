"""`finprint eval`: score a run folder (torch) or an exported ONNX file (with its manifest) on a dataset.

The task comes from the run's config.json (`task`: detect|embed) or the manifest (`kind`:
detector|embedder). Detectors report COCO box/mask mAP, embedders re-ID rank-1/rank-5/mAP and
open-set AUROC/FPR95. Prints a table and, with --json, writes every number to a file.
Torch is imported only for a run folder, so an ONNX model is evaluated on a torch-free install.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finprint.errors import ConfigError, DataError, FinprintError

log = logging.getLogger(__name__)

DETECT_KEYS = ("box_map", "box_map50", "mask_map", "mask_map50", "mask_iou", "mask_leak", "crowded_fish", "images", "instances", "detections", "images_per_s")
EMBED_KEYS = (
    "rank1", "rank5", "map", "auroc", "fpr95", "open_set_threshold",
    "cross_camera", "queries", "skipped_queries", "unknown_queries", "gallery", "crops_per_s",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a run folder (RUN/) or an exported .onnx with its manifest")
    parser.add_argument("--data", required=True, help="farm folder, YOLO folder, COCO json, or re-ID crop folder")
    parser.add_argument(
        "--split", default=None,
        help="dataset split to score (default: 'test' where the dataset has one, else every frame)",
    )
    parser.add_argument("--json", dest="json_out", default=None, help="write the results to this JSON file")
    parser.add_argument(
        "--val-groups", default=None,
        help="comma-separated frame groups to score only (e.g. DeepFish habitats 7398,9866)",
    )
    parser.add_argument("--which", choices=("best", "last"), default="best", help="run checkpoint (default best)")
    parser.add_argument("--backend", default="cpu", help="ONNX backend: cpu, ort-gpu, tensorrt or auto (default cpu)")
    parser.add_argument("--device", default="auto", help="torch device for a run folder (default auto)")
    parser.add_argument("--batch", type=int, default=8, help="images per inference call (default 8)")
    parser.add_argument(
        "--cross-camera", choices=("auto", "yes", "no"), default="auto",
        help="re-ID: leave out gallery matches from the query's own camera (Market-1501); auto = only "
        "where every query keeps a match on another camera (default auto)",
    )
    parser.add_argument("--matches", metavar="PNG", help="re-ID: draw 8 queries with their top-5 gallery crops (right/wrong marked)")
    parser.add_argument(
        "--open-set-split", choices=("auto", "half", "none"), default="auto",
        help="re-ID open set: 'half' enrols a fixed half of the gallery's identities and takes the other half's "
        "queries as strangers; auto = that only where no query is a stranger already (default auto)",
    )


@dataclass
class LoadedModel:
    task: str  # "detect" | "embed"
    engine: Any
    pre: Any  # finprint.runtime.manifest.Preprocess
    name: str
    source: str  # "torch" or the backend
    iou_threshold: float = 0.6


def _open_run(run: Path, which: str, device: str) -> LoadedModel:
    from finprint.distill.runs import load_model, read_config
    from finprint.distill.torch_engine import TorchEngine, resolve_device

    device = str(resolve_device(device))  # "auto" -> cuda where available, else cpu
    config = read_config(run)
    task = config.get("task")
    if task not in ("detect", "embed"):
        raise ConfigError(f"{run}/config.json: task must be 'detect' or 'embed', got {task!r}")
    model, config = load_model(run, which=which, device=device)
    if task == "detect":
        from finprint.distill.detect_data import detector_preprocess

        pre = detector_preprocess(int(config.get("imgsz", 320)))
    else:
        from finprint.runtime.crops import embedder_preprocess

        pre = embedder_preprocess()
    engine = TorchEngine(model, device)
    return LoadedModel(task, engine, pre, f"{run.name} ({config.get('model')}, {which})", f"torch {engine.device}")


def _open_exported(path: Path, backend: str) -> LoadedModel:
    from finprint.runtime.engines import open_engine
    from finprint.runtime.manifest import load_manifest, manifest_path_for

    manifest = load_manifest(manifest_path_for(path))
    engine = open_engine(path, backend=backend, manifest=manifest, require_manifest=True)
    task = "detect" if manifest.kind == "detector" else "embed"
    return LoadedModel(
        task, engine, manifest.preprocess, f"{path.name} ({manifest.model_name}, {manifest.precision})",
        getattr(engine, "backend", backend), manifest.iou_threshold or 0.6,
    )


def open_model(model: str | Path, which: str = "best", device: str = "auto", backend: str = "cpu") -> LoadedModel:
    path = Path(model)
    if path.is_dir():
        return _open_run(path, which, device)
    if path.is_file():
        return _open_exported(path, backend)
    raise FinprintError(f"{path}: no such run folder or model file")


def _default_split(data: Path) -> str | None:
    """'test' where the dataset is split that way (farm annotations or YOLO images/test), else None."""
    if (data / "annotations" / "instances_test.json").is_file() or (data / "images" / "test").is_dir():
        return "test"
    return None


def _parse_groups(text: str | None) -> list[str] | None:
    if not text:
        return None
    groups = [g.strip() for g in text.split(",") if g.strip()]
    return groups or None


def load_eval_frames(data: Path, split: str | None, val_groups: list[str] | None) -> list:
    from finprint.data import load_detection

    split = split if split is not None else _default_split(data)
    dataset, skipped = load_detection(data, split=split)
    for item in skipped:
        log.warning("skipped %s", item)
    frames = list(dataset.frames)
    if val_groups:
        wanted = set(val_groups)
        available = sorted({f.group for f in frames})
        frames = [f for f in frames if f.group in wanted]
        if not frames:
            raise DataError(data, f"no frames in groups {sorted(wanted)}; the dataset's groups are {available}")
    if not frames:
        raise DataError(data, f"no frames to evaluate (split {split!r})")
    return frames


def load_eval_reid(data: Path):
    from finprint.data import load_reid

    root = data / "reid" if (data / "reid").is_dir() else data  # a farm folder holds its crops in reid/
    reid_set, skipped = load_reid(root)
    for item in skipped:
        log.warning("skipped %s", item)
    return reid_set


def evaluate(
    loaded: LoadedModel,
    data: Path,
    split: str | None,
    val_groups: list[str] | None,
    batch: int,
    cross_camera: bool | None = None,
    open_set_split: str = "auto",
    matches_png: str | None = None,
) -> dict:
    from finprint.distill.evaluate import evaluate_detector, evaluate_embedder

    if loaded.task == "detect":
        frames = load_eval_frames(data, split, val_groups)
        return evaluate_detector(loaded.engine, loaded.pre, frames, batch=batch, iou_threshold=loaded.iou_threshold)
    if val_groups:
        log.warning("--val-groups applies to detection data; ignored for the embedder")
    return evaluate_embedder(
        loaded.engine, loaded.pre, load_eval_reid(data), batch=max(batch, 32), cross_camera=cross_camera,
        open_set_split=open_set_split, matches_png=matches_png,
    )


def run(args: argparse.Namespace) -> int:
    from finprint.distill.report import metric_rows, text_table

    if args.batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {args.batch}")
    data = Path(args.data)
    if not data.exists():
        raise DataError(data, "dataset path does not exist")
    val_groups = _parse_groups(args.val_groups)
    loaded = open_model(args.model, which=args.which, device=args.device, backend=args.backend)
    try:
        cross_camera = {"auto": None, "yes": True, "no": False}[args.cross_camera]
        metrics = evaluate(loaded, data, args.split, val_groups, args.batch, cross_camera, args.open_set_split, args.matches)
    finally:
        close = getattr(loaded.engine, "close", None)
        if callable(close):
            close()

    keys = DETECT_KEYS if loaded.task == "detect" else EMBED_KEYS
    print(f"{loaded.name} [{loaded.task}, {loaded.source}] on {data}" + (f" groups {','.join(val_groups)}" if val_groups else ""))
    print(text_table(metric_rows(metrics, [k for k in keys if k in metrics])))
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "model": str(args.model),
            "name": loaded.name,
            "task": loaded.task,
            "engine": loaded.source,
            "data": str(data),
            "split": args.split if args.split is not None else (_default_split(data) if loaded.task == "detect" else None),
            "val_groups": val_groups,
            "metrics": metrics,
        }
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {out}")
    return 0
