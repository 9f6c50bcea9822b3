"""The sidecar JSON next to every TensorRT engine, and the daemon's "build it if it is missing".

An engine runs only with the TensorRT version and the GPU it was built for (unless built
version-compatible / hardware-compatible), and only means something for the ONNX it came from.
The sidecar records all of that at build time; `validate_engine` compares it with this machine
and the ONNX and refuses with a message that says what to run. `ensure_engine` rebuilds a
missing or stale engine from its ONNX under a file lock, so two processes never build at once.
"""

from __future__ import annotations

import json
import logging
import os
import platform as _platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from finprint.errors import FinprintError
from finprint.runtime.manifest import Manifest, sha256_file

log = logging.getLogger(__name__)

SIDECAR_VERSION = 1
HardwareCompat = Literal["none", "ampere+", "same-cc"]


class ProfileShapes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: list[int]
    opt: list[int]
    max: list[int]


class Sidecar(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sidecar_version: int = SIDECAR_VERSION
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    # OS and CPU architecture ("Linux-aarch64"): engines do not move between platforms, whatever their
    # hardware compatibility. None in sidecars written before it was recorded: such engines are rebuilt.
    platform: str | None = None
    onnx_file: str
    onnx_sha256: str
    engine_sha256: str
    engine_bytes: int = Field(ge=0)
    profile: dict[str, ProfileShapes]  # input name -> min/opt/max shapes
    precision: str  # what the ONNX carries: fp32 | fp16 | int8 (strongly typed build)
    build_time: str  # ISO 8601, UTC
    build_seconds: float = 0.0
    version_compatible: bool = False
    hardware_compat: HardwareCompat = "none"
    workspace_mb: int | None = None


def this_platform() -> str:
    """OS and CPU architecture, as the sidecar records them: "Linux-aarch64", "Linux-x86_64"."""
    return f"{_platform.system()}-{_platform.machine()}"


@dataclass(frozen=True)
class MachineInfo:
    """What an engine must match: this machine's TensorRT, GPU and platform."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    platform: str = field(default_factory=this_platform)


def sidecar_path_for(engine_path: str | Path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def save_sidecar(sidecar: Sidecar, engine_path: str | Path) -> Path:
    path = sidecar_path_for(engine_path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(sidecar.model_dump_json(indent=2) + "\n")
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return path


def check_writable_folder(folder: Path, what: str) -> None:
    """Create `folder` if needed; a FinprintError when it cannot be written (a read-only model folder
    under systemd's ProtectSystem=strict, say)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FinprintError(f"{folder}: cannot create the {what} folder ({exc.strerror or exc}); "
                            "set models.engine_cache (or --out) to a writable folder") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FinprintError(f"{folder}: the {what} folder is not writable; "
                            "set models.engine_cache (or --out) to a writable folder")


def load_sidecar(engine_path: str | Path) -> Sidecar:
    path = sidecar_path_for(engine_path)
    rebuild = f"rebuild it with `finprint build-engine --onnx <model>.onnx --out {engine_path}`"
    if not path.is_file():
        raise FinprintError(f"{engine_path}: no sidecar {path.name} next to the engine; {rebuild}")
    try:
        return Sidecar.model_validate(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise FinprintError(f"{path}: unreadable engine sidecar ({exc.__class__.__name__}); {rebuild}") from exc


def current_machine() -> MachineInfo:
    """This machine's TensorRT version and GPU 0 (needs TensorRT and a CUDA binding)."""
    from finprint.runtime.cuda_mem import device_info
    from finprint.runtime.trt_engine import import_tensorrt

    trt = import_tensorrt()
    dev = device_info(0)
    return MachineInfo(str(trt.__version__), dev.name, dev.compute_capability, this_platform())


def _major(version: str) -> int:
    return int(version.split(".")[0])


def _cc(value: str) -> tuple[int, int]:
    major, _, minor = value.partition(".")
    return int(major), int(minor or 0)


def sidecar_problems(
    sidecar: Sidecar, machine: MachineInfo, engine_path: Path | None = None, onnx_sha256: str | None = None
) -> list[str]:
    """Why this engine cannot run here (empty when it can). Each problem reads as one sentence."""
    problems: list[str] = []
    if sidecar.platform is None:
        problems.append("its sidecar records no platform (written by an older finprint)")
    elif sidecar.platform != machine.platform:
        problems.append(
            f"built on {sidecar.platform}, this machine is {machine.platform} (engines do not move between platforms)"
        )
    if sidecar.tensorrt_version != machine.tensorrt_version:
        same_major_newer = _major(sidecar.tensorrt_version) == _major(machine.tensorrt_version) and tuple(
            int(x) for x in machine.tensorrt_version.split(".")[:3]
        ) >= tuple(int(x) for x in sidecar.tensorrt_version.split(".")[:3])
        if not (sidecar.version_compatible and same_major_newer):
            problems.append(
                f"built with TensorRT {sidecar.tensorrt_version}, this machine has {machine.tensorrt_version}"
            )
    if sidecar.compute_capability != machine.compute_capability:
        ok = sidecar.hardware_compat == "ampere+" and _cc(machine.compute_capability) >= (8, 0)
        if not ok:
            problems.append(
                f"built for compute capability {sidecar.compute_capability} ({sidecar.gpu_name}), "
                f"this GPU is {machine.compute_capability} ({machine.gpu_name})"
            )
    elif sidecar.gpu_name != machine.gpu_name and sidecar.hardware_compat == "none":
        # Same architecture, different model: TensorRT runs it but tactics were timed elsewhere.
        log.warning("engine built on %s, running on %s: rebuild here for best speed", sidecar.gpu_name, machine.gpu_name)
    if engine_path is not None:
        size = engine_path.stat().st_size if engine_path.is_file() else -1
        if size != sidecar.engine_bytes or sha256_file(engine_path) != sidecar.engine_sha256:
            problems.append(
                f"engine file is {size} bytes, sha256 does not match the {sidecar.engine_bytes} bytes the sidecar "
                "records (truncated or replaced)"
            )
    if onnx_sha256 is not None and onnx_sha256 != sidecar.onnx_sha256:
        problems.append(
            f"built from an ONNX with sha256 {sidecar.onnx_sha256[:12]}…, the ONNX now is {onnx_sha256[:12]}…"
        )
    return problems


def validate_engine(
    engine_path: str | Path,
    onnx_path: str | Path | None = None,
    machine: MachineInfo | None = None,
) -> Sidecar:
    """Return the engine's sidecar if it may run here (and matches `onnx_path`), else raise saying what to run."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise FinprintError(f"{engine_path}: engine file not found; build it with `finprint build-engine`")
    sidecar = load_sidecar(engine_path)
    machine = machine or current_machine()
    onnx_sha = sha256_file(onnx_path) if onnx_path is not None else None
    problems = sidecar_problems(sidecar, machine, engine_path, onnx_sha)
    if problems:
        onnx_hint = onnx_path or sidecar.onnx_file
        raise FinprintError(
            f"{engine_path}: cannot be used here: " + "; ".join(problems)
            + f". Rebuild it on this machine: finprint build-engine --onnx {onnx_hint} --out {engine_path}"
        )
    return sidecar


EngineBuilder = Callable[[Path, Path, Manifest | None], Sidecar]


def _default_builder(onnx: Path, engine: Path, manifest: Manifest | None) -> Sidecar:
    from finprint.runtime.trt_build import BuildOptions, build_engine

    return build_engine(onnx, engine, BuildOptions.from_manifest(manifest))


def ensure_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    manifest: Manifest | None = None,
    machine: MachineInfo | None = None,
    builder: EngineBuilder | None = None,
    lock_timeout_s: float = 3600.0,
) -> Sidecar:
    """Make sure `engine_path` is a valid engine for `onnx_path` on this machine, building it if needed.

    Two daemons starting together: the first takes `<engine>.lock` and builds, the second waits
    for the lock, then finds a valid engine and uses it.
    """
    from filelock import FileLock, Timeout

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise FinprintError(f"{onnx_path}: ONNX file not found; cannot build {engine_path.name}")
    machine = machine or current_machine()
    if engine_path.is_file():
        try:  # a valid engine needs nothing written, so no lock: its folder may be read-only
            return validate_engine(engine_path, onnx_path, machine)
        except FinprintError as exc:
            log.info("%s: %s", engine_path.name, exc)
    # The lock and a rebuilt engine go beside the engine: that folder must be writable.
    check_writable_folder(engine_path.parent, "engine")
    lock = FileLock(str(engine_path.with_name(engine_path.name + ".lock")))
    try:
        with lock.acquire(timeout=lock_timeout_s):
            reason = "missing"
            if engine_path.is_file():
                try:
                    return validate_engine(engine_path, onnx_path, machine)
                except FinprintError as exc:
                    reason = str(exc)
            log.warning("%s: building TensorRT engine from %s (%s); this takes minutes, once",
                        engine_path.name, onnx_path.name, reason)
            (builder or _default_builder)(onnx_path, engine_path, manifest)
            return validate_engine(engine_path, onnx_path, machine)
    except Timeout as exc:
        raise FinprintError(
            f"{engine_path}: another process has been building this engine for over {lock_timeout_s:.0f} s "
            f"(lock {lock.lock_file}); if none is running, delete the lock file"
        ) from exc
