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
    check_writable_folder,
    current_machine,
    save_sidecar,
)
from finprint.runtime.trt_engine import check_tensorrt_version, import_tensorrt, trt_logger, trt_version

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
    """STRONGLY_TYPED on 10.x (where it exists since 9.x and is required); 0 on 11+, where every network
    is strongly typed and the flag may be gone. The version decides, not the flag's presence."""
    if trt_version(trt)[0] >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


# Added after 10.3 (JetPack 6.1/6.2): used only behind a version check.
SAME_CC_SINCE = (10, 9)


def _hardware_compat_level(trt: Any, level: HardwareCompat) -> Any:
    if level == "ampere+":
        return trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if trt_version(trt) >= SAME_CC_SINCE:
        return trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
    raise FinprintError(
        f"--hardware-compat same-cc needs TensorRT 10.9 or later, this machine has {trt.__version__}; "
        "use ampere+ or none"
    )


def _set_timing_cache(trt_config: Any, path: Path | None) -> Any:
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    cache = trt_config.create_timing_cache(data)
    if cache is None:  # TensorRT returns None for bytes it cannot read (a truncated or foreign file)
        log.warning("%s: timing cache is unreadable (corrupt or truncated); starting a fresh one", path)
        cache = trt_config.create_timing_cache(b"")
        if cache is None:
            raise FinprintError("TensorRT could not create an empty timing cache (see the TensorRT errors above)")
    if not trt_config.set_timing_cache(cache, False):
        log.warning("%s: timing cache is from another device or TensorRT version; starting a fresh one", path)
        cache = trt_config.create_timing_cache(b"")
        trt_config.set_timing_cache(cache, True)
    return cache


def _write_atomic(path: Path, data: Any) -> None:
    """Write `path` whole or not at all: a temporary file beside it, renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(memoryview(data))
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FinprintError(f"{path}: cannot write ({exc.strerror or exc}); give finprint a writable folder") from exc


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
    check_tensorrt_version(trt)
    if not hasattr(trt, "Builder") or not hasattr(trt, "OnnxParser"):
        raise FinprintError(
            "this TensorRT has no builder or ONNX parser (a lean/dispatch runtime); build the engine on a "
            "machine with full TensorRT of the same version"
        )
    # Refuse before minutes of building, not after: nothing is written unless all of it can be.
    for folder in {engine_path.parent, *([options.timing_cache.parent] if options.timing_cache else [])}:
        check_writable_folder(folder, "engine" if folder == engine_path.parent else "timing cache")
    machine = machine or current_machine()
    started = time.perf_counter()

    logger = trt_logger(trt)
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
    if options.hardware_compat != "none":
        config.hardware_compatibility_level = _hardware_compat_level(trt, options.hardware_compat)

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
    _write_atomic(engine_path, serialized)
    try:
        sidecar = _save_sidecar_for(engine_path, onnx_path, machine, options, shapes, started)
    except BaseException:
        engine_path.unlink(missing_ok=True)  # an engine without its sidecar is refused anyway: leave none
        raise
    if options.timing_cache is not None:
        _write_atomic(options.timing_cache, config.get_timing_cache().serialize())
    log.info("built %s (%.1f MiB) in %.1f s", engine_path, sidecar.engine_bytes / 2**20, sidecar.build_seconds)
    return sidecar


def _save_sidecar_for(engine_path: Path, onnx_path: Path, machine: MachineInfo, options: BuildOptions,
                      shapes: dict[str, ProfileShapes], started: float) -> Sidecar:
    sidecar = Sidecar(
        tensorrt_version=machine.tensorrt_version,
        gpu_name=machine.gpu_name,
        compute_capability=machine.compute_capability,
        platform=machine.platform,
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
    try:
        save_sidecar(sidecar, engine_path)
    except OSError as exc:
        raise FinprintError(f"{engine_path}: cannot write its sidecar ({exc.strerror or exc})") from exc
    return sidecar
