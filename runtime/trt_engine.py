"""The TensorRT backend: a serialized engine run through the name-based tensor API.

Per engine, once: deserialize, read every I/O tensor by name (`num_io_tensors`, `get_tensor_name`,
`get_tensor_mode`, `get_tensor_shape`, `get_tensor_dtype`, the profile's min/max), plan one pinned
host and one device buffer per tensor at the profile's max shape, and bind each device buffer to
its tensor with `set_tensor_address`. Per frame only: copy in, `set_input_shape`,
`execute_async_v3(stream)`, copy out, synchronise. Buffers are matched to tensors by NAME, never by
position (binding indices are gone from TensorRT 10).

`tensorrt` and the CUDA bindings are imported lazily; `trt_module` and `cuda` can be injected, which
is how the tests drive the whole loop on a machine without a GPU. Every engine a thread opens shares
that thread's CUDA layer (`cuda_mem.acquire_cuda`); open, run and close it on that one thread.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finprint.errors import FinprintError
from finprint.runtime.cuda_mem import CudaError, CudaMem, DeviceBuffer, acquire_cuda, release_cuda
from finprint.runtime.engines import Engine, TensorInfo

log = logging.getLogger(__name__)

# TensorRT DataType names -> numpy (by name: the enum objects differ between 10.x and 11.x modules).
TRT_DTYPES: dict[str, np.dtype] = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "INT8": np.dtype(np.int8),
    "UINT8": np.dtype(np.uint8),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class TrtTensorSpec:
    """One I/O tensor as the engine declares it; -1 marks a dynamic dimension."""

    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]
    profile_min: tuple[int, ...] | None = None  # inputs only (profile 0)
    profile_max: tuple[int, ...] | None = None


@dataclass(frozen=True)
class BufferPlan:
    """The buffers one tensor needs: sized once, at the profile's max shape."""

    name: str
    is_input: bool
    dtype: np.dtype
    max_shape: tuple[int, ...]

    @property
    def max_elements(self) -> int:
        return int(np.prod(self.max_shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.max_elements * self.dtype.itemsize


# The full TensorRT module, then the lean runtime (TensorRT 10+/11: runs version-compatible engines only).
TENSORRT_MODULES: tuple[str, ...] = ("tensorrt", "tensorrt_lean", "tensorrt_lean_bindings")


MIN_TENSORRT_MAJOR = 10  # strongly typed networks and the 10.x API the code is checked against; JetPack 6.0 has 8.6


def trt_version(trt: Any) -> tuple[int, ...]:
    """The module's version as numbers, (10, 3, 0, 30); (0,) when it does not say."""
    parts = []
    for piece in str(getattr(trt, "__version__", "0")).split(".")[:4]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or (0,)


def check_tensorrt_version(trt: Any) -> None:
    version = trt_version(trt)
    if version[0] < MIN_TENSORRT_MAJOR:
        raise FinprintError(
            f"TensorRT {getattr(trt, '__version__', '?')} is too old: finprint needs TensorRT 10 or later "
            "(JetPack 6.1 or later on a Jetson); run the .onnx with --backend cpu or ort-gpu instead"
        )


def import_tensorrt() -> Any:
    """The first TensorRT Python module here that has a runtime, else a FinprintError saying why."""
    reasons = []
    for name in TENSORRT_MODULES:
        try:
            trt = importlib.import_module(name)
        except ImportError as exc:
            reasons.append(f"{name}: {exc.msg}")
            continue
        except OSError as exc:  # the Python module is there but its shared libraries are not
            reasons.append(f"{name} does not load ({exc})")
            continue
        if hasattr(trt, "Runtime"):
            check_tensorrt_version(trt)
            return trt
        # tensorrt-stubs or PyPI's placeholder wheel import as empty packages
        reasons.append(f"{name} is a stub or placeholder without a runtime")
    raise FinprintError(
        "TensorRT is not installed (it comes with JetPack on a Jetson, or from NVIDIA's index): "
        + "; ".join(reasons) + "; run the .onnx with --backend cpu or ort-gpu instead"
    )


# TensorRT keeps one logger per process and warns when handed another: one per module object here
# (a test's fake module gets its own).
_LOGGERS: dict[int, tuple[Any, Any]] = {}
_LOGGERS_LOCK = threading.Lock()


def trt_logger(trt: Any) -> Any:
    """The process's one `trt.Logger` for this TensorRT module."""
    with _LOGGERS_LOCK:
        entry = _LOGGERS.get(id(trt))
        if entry is None or entry[0] is not trt:
            entry = (trt, trt.Logger(trt.Logger.WARNING))
            _LOGGERS[id(trt)] = entry
        return entry[1]


def trt_dtype(dtype: Any) -> np.dtype:
    name = getattr(dtype, "name", str(dtype)).split(".")[-1]
    if name not in TRT_DTYPES:
        raise FinprintError(f"TensorRT tensor type {name} has no numpy equivalent finprint can feed or read")
    return TRT_DTYPES[name]


def read_tensor_specs(engine: Any, trt: Any) -> list[TrtTensorSpec]:
    """Every I/O tensor of a deserialized engine, by name."""
    specs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        lo = hi = None
        if is_input:
            lo_s, _opt, hi_s = engine.get_tensor_profile_shape(name, 0)
            lo, hi = tuple(int(d) for d in lo_s), tuple(int(d) for d in hi_s)
        specs.append(TrtTensorSpec(name, is_input, trt_dtype(engine.get_tensor_dtype(name)), shape, lo, hi))
    return specs


def plan_buffers(specs: Sequence[TrtTensorSpec], max_shapes: Mapping[str, Sequence[int]]) -> list[BufferPlan]:
    """One buffer per tensor, by name, at its max shape (inputs: profile max; outputs: the shape the
    context reports with every input at its max). A dimension still unknown there is an error:
    data-dependent output sizes need an output allocator, which finprint's models never need."""
    plans = []
    for spec in specs:
        if spec.name not in max_shapes:
            raise FinprintError(f"no max shape for tensor '{spec.name}' (the engine's profile does not cover it)")
        shape = tuple(int(d) for d in max_shapes[spec.name])
        if len(shape) != len(spec.shape) or any(d < 0 for d in shape):
            raise FinprintError(
                f"tensor '{spec.name}' has no bounded max shape ({list(shape)}); "
                "rebuild the engine with an optimization profile that covers every dynamic input"
            )
        plans.append(BufferPlan(spec.name, spec.is_input, spec.dtype, shape))
    return plans


def _engine_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FinprintError(f"{path}: engine file not found; build it with `finprint build-engine`")
    data = path.read_bytes()
    if not data:
        raise FinprintError(f"{path}: engine file is empty; rebuild it with `finprint build-engine`")
    return data


class TrtEngine(Engine):
    """A TensorRT engine behind the `Engine` contract. Owns (or borrows) a `CudaMem`: create, infer
    and close it on one thread, the one that owns the CUDA context."""

    backend = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        *,
        cuda: CudaMem | None = None,
        cuda_impl: str = "auto",
        trt_module: Any = None,
        host_code_allowed: bool = False,
    ) -> None:
        self.source = Path(engine_path)
        data = _engine_bytes(self.source)
        trt = trt_module if trt_module is not None else import_tensorrt()
        self._trt = trt
        self._owns_cuda = cuda is None
        self._context = self._engine = self._runtime = None
        self._device: dict[str, DeviceBuffer] = {}
        self._host: dict[str, np.ndarray] = {}
        # The context must be current before TensorRT touches the GPU: this thread's shared layer.
        self._cuda = cuda if cuda is not None else acquire_cuda(cuda_impl)
        try:
            self._runtime = trt.Runtime(trt_logger(trt))
            if host_code_allowed:  # a version-compatible engine carries its own lean runtime
                self._runtime.engine_host_code_allowed = True
            self._engine = self._runtime.deserialize_cuda_engine(data)
            if self._engine is None:
                raise FinprintError(
                    f"{self.source}: TensorRT could not deserialize this engine (truncated, or built by another "
                    "TensorRT version or for another GPU); rebuild it on this machine with `finprint build-engine`"
                )
            self.specs = read_tensor_specs(self._engine, trt)
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise FinprintError(f"{self.source}: TensorRT could not create an execution context (GPU memory?)")
            self.plans = plan_buffers(self.specs, self._max_shapes())
            self._allocate()
        except BaseException:
            self.close()
            raise
        self._inputs = [self._info(s) for s in self.specs if s.is_input]
        self._outputs = [self._info(s) for s in self.specs if not s.is_input]
        total = sum(p.nbytes for p in self.plans)
        log.info("%s: TensorRT engine, %d tensors, %.1f MiB of buffers via %s", self.source.name,
                 len(self.plans), total / 2**20, self._cuda.name)

    @staticmethod
    def _info(spec: TrtTensorSpec) -> TensorInfo:
        return TensorInfo(spec.name, tuple(d if d >= 0 else None for d in spec.shape), spec.dtype)

    def _max_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for spec in self.specs:
            if spec.is_input:
                assert spec.profile_max is not None
                shapes[spec.name] = spec.profile_max
                if not self._context.set_input_shape(spec.name, spec.profile_max):
                    raise FinprintError(f"{self.source}: TensorRT refused the profile max shape of '{spec.name}'")
        for spec in self.specs:
            if not spec.is_input:
                shapes[spec.name] = tuple(int(d) for d in self._context.get_tensor_shape(spec.name))
        return shapes

    def _allocate(self) -> None:
        for plan in self.plans:
            self._device[plan.name] = self._cuda.device_alloc(max(plan.nbytes, 1))
            self._host[plan.name] = self._cuda.host_alloc((max(plan.max_elements, 1),), plan.dtype)
            if not self._context.set_tensor_address(plan.name, self._device[plan.name].ptr):
                raise FinprintError(f"{self.source}: TensorRT refused the buffer address of '{plan.name}'")

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    def _check_profile(self, name: str, shape: tuple[int, ...]) -> None:
        spec = next(s for s in self.specs if s.name == name)
        assert spec.profile_min is not None and spec.profile_max is not None
        for axis, (lo, hi, got) in enumerate(zip(spec.profile_min, spec.profile_max, shape, strict=True)):
            if not lo <= got <= hi:
                raise FinprintError(
                    f"{self.source.name}: input '{name}' axis {axis} is {got}, outside the engine's profile "
                    f"[{lo}, {hi}]; split the batch or rebuild with `finprint build-engine --batch MIN,OPT,MAX`"
                )

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._context is None:
            raise FinprintError(f"{self.source.name}: engine is closed")
        # Before touching the pinned buffers or the execution context: another thread's frame would
        # overwrite a buffer this thread's copy may still be reading.
        self._cuda.check_thread()
        for name, arr in feeds.items():
            self._check_profile(name, arr.shape)
            staged = self._host[name][: arr.size].reshape(arr.shape)
            staged[...] = arr
            if not self._context.set_input_shape(name, arr.shape):
                raise FinprintError(f"{self.source.name}: TensorRT refused input shape {list(arr.shape)} for '{name}'")
            self._cuda.copy_to_device(self._device[name], staged)
        if not self._context.execute_async_v3(self._cuda.stream_handle):
            # The input copies are queued on the stream: wait for them before the next frame may
            # refill the pinned buffers they read from.
            self._cuda.synchronize()
            raise CudaError(f"{self.source.name}: TensorRT execute_async_v3 failed (see the TensorRT log above)")
        views = {}
        for spec in self.specs:
            if spec.is_input:
                continue
            shape = tuple(int(d) for d in self._context.get_tensor_shape(spec.name))
            view = self._host[spec.name][: int(np.prod(shape, dtype=np.int64))].reshape(shape)
            self._cuda.copy_to_host(view, self._device[spec.name])
            views[spec.name] = view
        self._cuda.synchronize()
        # The pinned buffers are reused by the next frame: hand out copies.
        return {name: view.copy() for name, view in views.items()}

    def close(self) -> None:
        """Destroy TensorRT objects before the buffers and context they use; free explicitly. Idempotent;
        on the thread that opened the engine (TensorRT's destructors need its context current)."""
        cuda = getattr(self, "_cuda", None)
        if cuda is None or cuda.closed:
            self._context = self._engine = self._runtime = None
            return
        cuda.check_thread()
        self._context = None
        self._engine = None
        self._runtime = None
        try:
            for buf in self._device.values():
                cuda.free(buf)
            for arr in self._host.values():
                cuda.free(arr)
        finally:
            self._device.clear()
            self._host.clear()
            if self._owns_cuda:
                self._cuda = None
                release_cuda(cuda)
