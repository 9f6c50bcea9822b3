"""Build a TensorRT engine from an ONNX file, strongly typed, one code path for TensorRT 10.x and 11.x.

Precision lives in the ONNX (fp16 weights or Q/DQ pairs); the builder is told nothing about it.
That is the only way that works on TensorRT 11, where the implicit-quantisation calibrators and the
reduced-precision builder flags are gone, and it is what 10.x does with a strongly typed network.

Lives in runtime/ (torch-free) because the daemon builds a missing engine on first start
(`sidecar.ensure_engine`) and runtime/ may not import export/; `finprint build-engine` calls it too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from finprint.errors import FinprintError
from finprint.runtime.manifest import Manifest, sha256_file
from finprint.runtime.sidecar import (
    HardwareCompat,
    MachineInfo,
    ProfileShapes,
    Sidecar,
    current_machine,
    save_sidecar,
)
from finprint.runtime.trt_engine import import_tensorrt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    batch: tuple[int, int, int] = (1, 8, 8)  # min, opt, max of every dynamic batch axis
    workspace_mb: int | None = None  # None = TensorRT's default (the device's memory)
    timing_cache: Path | None = None  # read if present, written back after the build
    version_compatible: bool = False
    hardware_compat: HardwareCompat = "none"
    precision: str = "fp32"  # recorded in the sidecar; the ONNX decides it
    input_shapes: dict[str, list[int | str]] | None = None  # from the manifest: fills other dynamic axes

    def __post_init__(self) -> None:
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise FinprintError(f"--batch must be MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX, got {lo},{opt},{hi}")
        if self.workspace_mb is not None and self.workspace_mb <= 0:
            raise FinprintError(f"--workspace must be a positive number of MiB, got {self.workspace_mb}")

    @classmethod
    def from_manifest(cls, manifest: Manifest | None, **overrides: Any) -> BuildOptions:
        if manifest is None:
            return cls(**overrides)
        base: dict[str, Any] = {
            "batch": (1, manifest.max_batch, manifest.max_batch),
            "precision": manifest.precision,
            "input_shapes": {s.name: list(s.shape) for s in manifest.inputs},
        }
        base.update(overrides)
        return cls(**base)


def profile_for(name: str, shape: list[int], options: BuildOptions) -> ProfileShapes:
    """min/opt/max for one network input: the batch axis from `options.batch`, any other dynamic
    axis from the manifest's input shape."""
    lo, opt, hi = [], [], []
    declared = (options.input_shapes or {}).get(name)
    for axis, dim in enumerate(shape):
        if dim >= 0:
            lo.append(dim), opt.append(dim), hi.append(dim)
        elif axis == 0:
            lo.append(options.batch[0]), opt.append(options.batch[1]), hi.append(options.batch[2])
        elif declared is not None and axis < len(declared) and isinstance(declared[axis], int):
            size = int(declared[axis])
            lo.append(size), opt.append(size), hi.append(size)
        else:
            raise FinprintError(
                f"input '{name}' axis {axis} is dynamic and the manifest gives no size for it; "
                "export the ONNX with a fixed image size"
            )
    return ProfileShapes(min=lo, opt=opt, max=hi)


def _strongly_typed_flags(trt: Any) -> int:
    flags_enum = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if flags_enum is not None and hasattr(flags_enum, "STRONGLY_TYPED"):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0  # TensorRT 11: every network is strongly typed, the flag may be gone


def _set_timing_cache(trt_config: Any, path: Path | None) -> Any:
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    cache = trt_config.create_timing_cache(data)
    if not trt_config.set_timing_cache(cache, False):
        log.warning("%s: timing cache is from another device or TensorRT version; starting a fresh one", path)
        cache = trt_config.create_timing_cache(b"")
        trt_config.set_timing_cache(cache, True)
    return cache


def _write_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(memoryview(data))
    tmp.replace(path)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    options: BuildOptions | None = None,
    *,
    trt_module: Any = None,
    machine: MachineInfo | None = None,
) -> Sidecar:
    """Parse the ONNX, build a strongly typed engine with one optimisation profile, write the engine,
    its sidecar and (if asked) the timing cache. Returns the sidecar."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    options = options or BuildOptions()
    if not onnx_path.is_file():
        raise FinprintError(f"{onnx_path}: ONNX file not found")
    trt = trt_module if trt_module is not None else import_tensorrt()
    if not hasattr(trt, "Builder") or not hasattr(trt, "OnnxParser"):
        raise FinprintError(
            "this TensorRT has no builder or ONNX parser (a lean/dispatch runtime); build the engine on a "
            "machine with full TensorRT of the same version"
        )
    machine = machine or current_machine()
    started = time.perf_counter()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise FinprintError(f"{onnx_path}: TensorRT cannot parse this ONNX: " + " | ".join(errors[:5]))

    config = builder.create_builder_config()
    if options.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compat == "ampere+":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    elif options.hardware_compat == "same-cc":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY

    profile = builder.create_optimization_profile()
    shapes: dict[str, ProfileShapes] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shapes[tensor.name] = profile_for(tensor.name, [int(d) for d in tensor.shape], options)
        profile.set_shape(tensor.name, shapes[tensor.name].min, shapes[tensor.name].opt, shapes[tensor.name].max)
    config.add_optimization_profile(profile)
    _set_timing_cache(config, options.timing_cache)

    log.info("building %s from %s (profile %s)", engine_path.name, onnx_path.name,
             {k: v.max for k, v in shapes.items()})
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise FinprintError(f"{onnx_path}: TensorRT failed to build an engine (see the TensorRT errors above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(engine_path, serialized)
    if options.timing_cache is not None:
        _write_atomic(options.timing_cache, config.get_timing_cache().serialize())

    sidecar = Sidecar(
        tensorrt_version=machine.tensorrt_version,
        gpu_name=machine.gpu_name,
        compute_capability=machine.compute_capability,
        onnx_file=onnx_path.name,
        onnx_sha256=sha256_file(onnx_path),
        engine_sha256=sha256_file(engine_path),
        engine_bytes=engine_path.stat().st_size,
        profile=shapes,
        precision=options.precision,
        build_time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(time.perf_counter() - started, 2),
        version_compatible=options.version_compatible,
        hardware_compat=options.hardware_compat,
        workspace_mb=options.workspace_mb,
    )
    save_sidecar(sidecar, engine_path)
    log.info("built %s (%.1f MiB) in %.1f s", engine_path, sidecar.engine_bytes / 2**20, sidecar.build_seconds)
    return sidecar
