"""`finprint calib build --data PATH --out CALIB [--size N]`: a stratified, hashed calibration set."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from finprint.errors import ConfigError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="calib_command", metavar="ACTION")
    build = sub.add_parser("build", help="select, preprocess and hash a calibration set")
    build.add_argument(
        "--data", required=True, type=Path, action="append",
        help="detection data (farm, YOLO, COCO, or a folder of unlabelled frames) or a re-ID crop folder; repeat to mix sources",
    )
    build.add_argument("--out", required=True, type=Path, help="calibration set folder to write")
    build.add_argument("--size", type=int, default=128, help="images to select (default 128)")
    build.add_argument("--kind", choices=("detector", "embedder"), default="detector", help="which model it calibrates")
    build.add_argument("--imgsz", type=int, default=320, help="detector input size (ignored for the embedder)")
    build.add_argument("--manifest", type=Path, help="take the preprocessing from an exported model's manifest instead")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--exclude-groups", help="comma list of groups (habitats, videos) held out for the gate: never calibrate on them")


def _preprocess(args: argparse.Namespace):
    if args.manifest is not None:
        from finprint.runtime.manifest import load_manifest

        manifest = load_manifest(args.manifest)
        args.kind = manifest.kind
        return manifest.preprocess
    if args.kind == "embedder":
        from finprint.data.synth import embedder_crop_flags
        from finprint.runtime.crops import embedder_preprocess

        # Crops of a farm written with --reid-masked or --reid-aligned calibrate an embedder that reads such crops.
        return embedder_preprocess().model_copy(update=embedder_crop_flags(args.data[0]))
    from finprint.runtime.manifest import Preprocess

    # The detector contract (docs/CONTRACTS.md section 3; distill.detect_data.detector_preprocess),
    # spelled out here so building a calibration set needs no torch.
    return Preprocess(width=args.imgsz, height=args.imgsz, resize="letterbox", pad_value=114, color_order="RGB")


def run(args: argparse.Namespace) -> int:
    from finprint.calib.calibset import build_calibset

    if args.calib_command != "build":
        raise ConfigError("choose an action: finprint calib build --data PATH --out CALIB")
    if args.size < 1:
        raise ConfigError(f"--size must be at least 1, got {args.size}")
    pre = _preprocess(args)
    excluded = [g.strip() for g in (args.exclude_groups or "").split(",") if g.strip()]
    calib = build_calibset(args.data, args.out, pre, kind=args.kind, size=args.size, seed=args.seed, exclude_groups=excluded)
    strata = {it.get("stratum") for it in calib.items}
    print(f"calibration set {args.out}: {len(calib)} images over {len(strata)} strata, sha256 {calib.set_sha256}")
    return 0
