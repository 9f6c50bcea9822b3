"""Every model backend behind one contract: `infer(dict[str, ndarray]) -> dict[str, ndarray]`.

Backends: TensorRT (`finprint.runtime.trt_engine`, a serialized engine plus its sidecar) and
ONNX Runtime (`OrtEngine`, with its TensorRT, CUDA or CPU execution provider). `open_engine`
picks one, logs what it picked and why, and checks the model against its manifest first, so a
truncated or swapped file is refused with a message instead of producing wrong numbers.

Heavy optional dependencies (onnxruntime, tensorrt, CUDA bindings) are imported lazily.
"""

from __future__ import annotations

import importlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from finprint.errors import FinprintError
from finprint.runtime.manifest import Manifest, load_manifest, manifest_path_for, verify_onnx_matches

log = logging.getLogger(__name__)

Backend = Literal["auto", "tensorrt", "ort-gpu", "cpu"]
BACKENDS: tuple[str, ...] = ("auto", "tensorrt", "ort-gpu", "cpu")

# ONNX Runtime's type strings -> numpy dtypes (the ones an ONNX model's I/O may carry).
_ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(bool)": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of an engine. A dimension that is a str or None is dynamic."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype

    def is_dynamic(self, axis: int) -> bool:
        dim = self.shape[axis]
        return not isinstance(dim, int) or dim < 0

    def describe(self) -> str:
        dims = ",".join("?" if self.is_dynamic(i) else str(d) for i, d in enumerate(self.shape))
        return f"{self.name}[{dims}] {self.dtype}"


class Engine(ABC):
    """A loaded model: named arrays in, named arrays out. Use as a context manager or call `close()`."""

    backend: str = "?"
    source: Path

    @property
    @abstractmethod
    def inputs(self) -> list[TensorInfo]: ...

    @property
    @abstractmethod
    def outputs(self) -> list[TensorInfo]: ...

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None:  # noqa: B027 - backends without native resources need no cleanup
        """Release native resources; a closed engine refuses to infer."""

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._run(self.check_inputs(feeds))

    def check_inputs(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Names, rank, static dimensions and dtype must match; returns C-contiguous arrays."""
        expected = {t.name: t for t in self.inputs}
        missing = sorted(set(expected) - set(feeds))
        extra = sorted(set(feeds) - set(expected))
        if missing or extra:
            raise FinprintError(
                f"{self.source.name}: expects inputs {sorted(expected)}, got {sorted(feeds)}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unexpected {extra})" if extra else "")
            )
        checked: dict[str, np.ndarray] = {}
        for name, spec in expected.items():
            arr = np.asarray(feeds[name])
            if arr.dtype != spec.dtype:
                raise FinprintError(
                    f"{self.source.name}: input '{name}' is {arr.dtype}, the engine expects {spec.dtype} "
                    f"(cast with .astype(np.{spec.dtype.name}))"
                )
            if arr.ndim != len(spec.shape):
                raise FinprintError(
                    f"{self.source.name}: input '{name}' has shape {list(arr.shape)}, "
                    f"the engine expects {spec.describe()}"
                )
            for axis, dim in enumerate(spec.shape):
                if not spec.is_dynamic(axis) and arr.shape[axis] != dim:
                    raise FinprintError(
                        f"{self.source.name}: input '{name}' has shape {list(arr.shape)}, "
                        f"the engine expects {spec.describe()} (axis {axis} must be {dim})"
                    )
            checked[name] = np.ascontiguousarray(arr)
        return checked

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        ins = ", ".join(t.describe() for t in self.inputs)
        return f"<{type(self).__name__} {self.backend} {self.source.name}: {ins}>"


# ---------------------------------------------------------------------------------------------
# ONNX Runtime
# ---------------------------------------------------------------------------------------------

PROVIDERS_FOR: dict[str, list[str]] = {
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-gpu": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "cpu": ["CPUExecutionProvider"],
}


def _import_onnxruntime() -> Any:
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise FinprintError(
            "ONNX Runtime is not installed; install it with: pip install 'finprint[runtime]' "
            "(or 'finprint[gpu]' on a CUDA machine)"
        ) from exc


def session_options(ort: Any, intra_threads: int | None = None) -> Any:
    """Options that let several sessions share a small CPU.

    Each session otherwise owns a thread pool whose workers spin while idle; two of them in one
    process steal each other's cores and double every latency on a 2-core board.
    """
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    threads = intra_threads if intra_threads is not None else int(os.environ.get("FINPRINT_ORT_THREADS", "0"))
    opts.intra_op_num_threads = max(0, threads)  # 0 = one per physical core
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: provider fall-backs are logged by us, once
    return opts


class OrtEngine(Engine):
    """ONNX Runtime with the TensorRT, CUDA or CPU execution provider.

    `providers` is a preference list; what ONNX Runtime actually enabled is in `active_providers`
    (read from the session: `get_available_providers()` also lists providers that fail to load).
    """

    def __init__(
        self,
        onnx_path: str | Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_threads: int | None = None,
    ) -> None:
        self.source = Path(onnx_path)
        if not self.source.is_file():
            raise FinprintError(f"{self.source}: ONNX file not found")
        ort = _import_onnxruntime()
        available = set(ort.get_available_providers())
        wanted = [p for p in providers if p in available]
        if not wanted:
            wanted = ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(
                str(self.source), sess_options=session_options(ort, intra_threads), providers=wanted
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types; one message for all
            raise FinprintError(f"{self.source}: ONNX Runtime cannot load this model: {exc}") from exc
        self.active_providers: list[str] = list(self._session.get_providers())
        self.backend = _backend_name(self.active_providers)
        self._inputs = [_ort_info(a) for a in self._session.get_inputs()]
        self._outputs = [_ort_info(a) for a in self._session.get_outputs()]
        self._output_names = [t.name for t in self._outputs]
        log.debug("%s: ONNX Runtime session with %s", self.source.name, self.active_providers)

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise FinprintError(f"{self.source.name}: engine is closed")
        results = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        self._session = None


def _backend_name(active: Sequence[str]) -> str:
    first = active[0] if active else "CPUExecutionProvider"
    return {
        "TensorrtExecutionProvider": "ort-tensorrt",
        "CUDAExecutionProvider": "ort-gpu",
    }.get(first, "cpu")


def _ort_info(arg: Any) -> TensorInfo:
    dtype = _ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise FinprintError(f"tensor '{arg.name}' has type {arg.type}, which finprint does not feed or read")
    shape = tuple(d if isinstance(d, int) else (d or None) for d in arg.shape)
    return TensorInfo(arg.name, shape, dtype)


# ---------------------------------------------------------------------------------------------
# Manifest checks
# ---------------------------------------------------------------------------------------------


def check_io_against_manifest(engine: Engine, manifest: Manifest) -> None:
    """The model's inputs/outputs must be the ones its manifest promises (names, rank, dims, dtype)."""
    problems: list[str] = []
    for kind, specs, actual in (
        ("input", manifest.inputs, engine.inputs),
        ("output", manifest.outputs, engine.outputs),
    ):
        by_name = {t.name: t for t in actual}
        want_names = [s.name for s in specs]
        if sorted(want_names) != sorted(by_name):
            problems.append(f"{kind}s are {sorted(by_name)}, manifest says {sorted(want_names)}")
            continue
        for spec in specs:
            got = by_name[spec.name]
            if got.dtype != np.dtype(spec.dtype):
                problems.append(f"{kind} '{spec.name}' is {got.dtype}, manifest says {spec.dtype}")
            if len(got.shape) != len(spec.shape):
                problems.append(f"{kind} '{spec.name}' has rank {len(got.shape)}, manifest says {spec.shape}")
                continue
            for axis, want in enumerate(spec.shape):
                if isinstance(want, int) and not got.is_dynamic(axis) and got.shape[axis] != want:
                    problems.append(f"{kind} '{spec.name}' is {got.describe()}, manifest says {spec.shape}")
                    break
    if problems:
        raise FinprintError(
            f"{engine.source}: does not match its manifest: " + "; ".join(problems)
            + "; re-run `finprint export` so model and manifest are written together"
        )


def find_manifest(model_path: Path, manifest: Manifest | str | Path | None, required: bool) -> Manifest | None:
    if isinstance(manifest, Manifest):
        return manifest
    path = Path(manifest) if manifest is not None else manifest_path_for(model_path)
    if path.exists() and not path.is_file():  # a folder where the manifest belongs is a mistake, never "no manifest"
        raise FinprintError(f"{path}: the manifest of {Path(model_path).name} is not a file; put the manifest.json "
                            "`finprint export` wrote there")
    if path.is_file():
        return load_manifest(path)
    if required:
        raise FinprintError(f"{path}: manifest not found for {Path(model_path).name}; re-run `finprint export` to write it "
                            "next to the model (a farm config may set models.require_manifest: false to run it unchecked)")
    log.warning("%s: no manifest at %s; inputs are not checked against the export", model_path.name, path)
    return None


# ---------------------------------------------------------------------------------------------
# Picking a backend
# ---------------------------------------------------------------------------------------------


def tensorrt_unavailable_reason() -> str | None:
    """None when the TensorRT runtime and a CUDA device can be used here, else why not."""
    from finprint.runtime.trt_engine import import_tensorrt

    try:
        import_tensorrt()
    except FinprintError as exc:
        return str(exc)
    from finprint.runtime.cuda_mem import cuda_unavailable_reason

    return cuda_unavailable_reason()


def default_engine_path(onnx_path: Path, engine_cache: str | Path | None = None) -> Path:
    """Where the engine built from `onnx_path` lives: in the folder `engine_cache` (the model folder may
    be read-only), else beside the ONNX."""
    name = onnx_path.with_suffix(".engine").name
    return Path(engine_cache) / name if engine_cache is not None else onnx_path.with_name(name)


@dataclass(frozen=True)
class BackendChoice:
    """Which backend a model will run on, decided before anything is loaded (Polygraphy's loaders vs runners)."""

    backend: str  # "tensorrt" | "ort-gpu" | "cpu"
    serialized: bool  # the model file is a built TensorRT engine, not ONNX
    reason: str  # for the log: why this backend
    cpu_fallback: bool = False  # ort-gpu under "auto": a session whose CUDA provider does not start runs on the CPU


def choose_backend(path: str | Path, backend: Backend | str = "auto") -> BackendChoice:
    """The backend for a model file on this machine: with "auto" TensorRT where it imports and a GPU is present,
    else ONNX Runtime on CUDA (the CPU when its CUDA provider does not start), else the CPU."""
    path = Path(path)
    if backend not in BACKENDS:
        raise FinprintError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    if not path.is_file():
        raise FinprintError(f"{path}: model file not found")
    if path.suffix in (".engine", ".plan"):
        if backend not in ("auto", "tensorrt"):
            raise FinprintError(f"{path}: a TensorRT engine runs only on the 'tensorrt' backend, not '{backend}'")
        reason = tensorrt_unavailable_reason()
        if reason:
            raise FinprintError(f"{path}: cannot run a TensorRT engine here: {reason}")
        return BackendChoice("tensorrt", True, "serialized engine, sidecar matches this machine")
    if backend in ("auto", "tensorrt"):
        reason = tensorrt_unavailable_reason()
        if reason is None:
            return BackendChoice("tensorrt", False, "TensorRT and a CUDA device found")
        if backend == "tensorrt":
            raise FinprintError(f"{path}: backend 'tensorrt' asked for, but {reason}")
        log.info("%s: TensorRT not used: %s", path.name, reason)
    if backend in ("auto", "ort-gpu"):
        return BackendChoice("ort-gpu", False, "ONNX Runtime enabled CUDAExecutionProvider", cpu_fallback=backend == "auto")
    return BackendChoice("cpu", False, "asked for")


def open_engine(
    path: str | Path,
    backend: Backend | str = "auto",
    *,
    manifest: Manifest | str | Path | None = None,
    require_manifest: bool = False,
    engine_path: str | Path | None = None,
    intra_threads: int | None = None,
) -> Engine:
    """Open a model for inference on the best backend this machine has (or the one asked for).

    `path` is an ONNX file, or a serialized TensorRT engine (`.engine`/`.plan`); `choose_backend` picks the
    backend, `load_engine` loads the model on it (an ONNX file on TensorRT builds or refreshes the engine next
    to it, or at `engine_path`, via `sidecar.ensure_engine`). The model is checked against its manifest (sha256
    and I/O) when one is found; with `require_manifest` a missing manifest is an error.
    """
    choice = choose_backend(path, backend)
    return load_engine(Path(path), choice, find_manifest(Path(path), manifest, require_manifest), engine_path=engine_path,
                       intra_threads=intra_threads)


def load_engine(
    path: Path, choice: BackendChoice, found: Manifest | None, *, engine_path: str | Path | None = None,
    intra_threads: int | None = None,
) -> Engine:
    """Load a model on the chosen backend and check it against its manifest (None: none found)."""
    if choice.serialized:
        from finprint.runtime.sidecar import validate_engine
        from finprint.runtime.trt_engine import TrtEngine

        meta = validate_engine(path)
        # Every check on files before the engine is opened: an engine opened and then refused would hold
        # CUDA memory and (with pycuda) a pushed context until exit.
        if found is not None and meta.onnx_sha256 != found.onnx_sha256:
            raise FinprintError(
                f"{path}: engine was built from an ONNX (sha256 {meta.onnx_sha256[:12]}…) other than "
                f"the one its manifest describes ({found.onnx_sha256[:12]}…); rebuild it with "
                f"`finprint build-engine --onnx <model>.onnx --out {path}`"
            )
        eng: Engine = TrtEngine(path, host_code_allowed=meta.version_compatible)
        _checked(eng, found)
        log.info("%s: backend tensorrt (%s)", path.name, choice.reason)
        return eng

    if found is not None:
        verify_onnx_matches(found, path)

    if choice.backend == "tensorrt":
        from finprint.runtime.sidecar import ensure_engine
        from finprint.runtime.trt_engine import TrtEngine

        target = Path(engine_path) if engine_path else default_engine_path(path)
        meta = ensure_engine(path, target, manifest=found)
        eng = TrtEngine(target, host_code_allowed=meta.version_compatible)
        if found is not None:
            _checked(eng, found)
        log.info("%s: backend tensorrt (%s; engine %s)", path.name, choice.reason, target.name)
        return eng

    if choice.backend == "ort-gpu":
        eng = OrtEngine(path, providers=PROVIDERS_FOR["ort-gpu"], intra_threads=intra_threads)
        if "CUDAExecutionProvider" in eng.active_providers:
            log.info("%s: backend ort-gpu (%s)", path.name, choice.reason)
            return _checked(eng, found)
        if not choice.cpu_fallback:
            eng.close()
            raise FinprintError(
                f"{path}: backend 'ort-gpu' asked for, but ONNX Runtime enabled only {eng.active_providers} "
                "(install 'finprint[gpu]' on a machine with a CUDA driver, or use --backend cpu)"
            )
        # The session already fell back to the CPU provider: reuse it rather than load twice.
        log.info("%s: backend cpu (ONNX Runtime has no working CUDA provider here)", path.name)
        return _checked(eng, found)

    eng = OrtEngine(path, providers=PROVIDERS_FOR["cpu"], intra_threads=intra_threads)
    log.info("%s: backend cpu (%s)", path.name, choice.reason)
    return _checked(eng, found)


def _checked(engine: Engine, manifest: Manifest | None) -> Engine:
    if manifest is not None:
        try:
            check_io_against_manifest(engine, manifest)
        except FinprintError:
            engine.close()
            raise
    return engine
