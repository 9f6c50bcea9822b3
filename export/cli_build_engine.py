"""`finprint build-engine`: a TensorRT engine from an ONNX file, built on the target it will run on.

Writes `OUT` (the engine), `OUT.json` (its sidecar: TensorRT version, GPU, ONNX sha256, profile)
and copies the model's manifest next to the engine, so `finprint serve` finds all three together.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from finprint.errors import ConfigError

log = logging.getLogger(__name__)


def _batch(text: str) -> tuple[int, int, int]:
    try:
        lo, opt, hi = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected MIN,OPT,MAX (three integers), got '{text}'") from exc
    return lo, opt, hi


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, type=Path, help="the exported model (its manifest next to it)")
    parser.add_argument("--out", required=True, type=Path, help="engine file to write, e.g. student.int8.engine")
    parser.add_argument("--batch", type=_batch, default=None,
                        help="MIN,OPT,MAX of the batch axis (default 1,MAX,MAX with the manifest's max_batch)")
    parser.add_argument("--workspace", type=int, default=None, metavar="MB", help="builder workspace limit in MiB")
    parser.add_argument("--timing-cache", type=Path, default=None,
                        help="timing cache file: read if present, updated after the build (keep one per device)")
    parser.add_argument("--version-compatible", action="store_true",
                        help="engine runs on later TensorRT releases of the same major version")
    parser.add_argument("--hardware-compat", choices=["none", "ampere+", "same-cc"], default="none",
                        help="ampere+: one engine for every Ampere-or-newer GPU (slower)")


def run(args: argparse.Namespace) -> int:
    from finprint.runtime.engines import find_manifest
    from finprint.runtime.manifest import manifest_path_for, verify_onnx_matches
    from finprint.runtime.trt_build import BuildOptions, build_engine

    if args.out.suffix not in (".engine", ".plan"):
        raise ConfigError(f"--out {args.out}: use a .engine (or .plan) file name")
    manifest = find_manifest(args.onnx, None, required=False)
    if manifest is not None:
        verify_onnx_matches(manifest, args.onnx)
    overrides: dict = {
        "workspace_mb": args.workspace,
        "timing_cache": args.timing_cache,
        "version_compatible": args.version_compatible,
        "hardware_compat": args.hardware_compat,
    }
    if args.batch is not None:
        overrides["batch"] = args.batch
    options = BuildOptions.from_manifest(manifest, **overrides)
    sidecar = build_engine(args.onnx, args.out, options)
    if manifest is not None:
        src, dst = manifest_path_for(args.onnx), manifest_path_for(args.out)
        if src.resolve() != dst.resolve():
            try:
                shutil.copyfile(src, dst)
            except OSError as exc:
                raise ConfigError(f"{dst}: cannot copy the manifest next to the engine ({exc.strerror or exc})") from exc
    print(
        f"built {args.out} ({sidecar.engine_bytes / 2**20:.1f} MiB) in {sidecar.build_seconds:.1f} s: "
        f"TensorRT {sidecar.tensorrt_version} on {sidecar.gpu_name} (sm {sidecar.compute_capability}), "
        f"{sidecar.precision}, profile " + ", ".join(f"{k} max {v.max}" for k, v in sidecar.profile.items())
    )
    return 0
