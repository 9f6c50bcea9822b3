"""Fakes of pycuda, cuda-python and TensorRT 10.3 that behave like the real ones where finprint can go wrong.

No GPU here, so the TensorRT backend runs against these. They have teeth:
- pycuda (`FakePycuda.driver`): a context is current per thread, on a per-thread stack; `Context.pop()`
  pops the top of the calling thread's stack and raises "cannot pop non-current context" on an empty
  one, as pycuda's C++ does; memory, pinned memory and streams need a current context, are freed once
  (a second free raises) and `check_clean()` lists whatever was left behind. `exit_check()` aborts the
  process at exit when a context stack is not empty, as pycuda's module cleanup does.
- copies and kernels are queued on their stream and run at `synchronize()`, reading the host buffer
  then (an async DMA does too): a caller that refills a pinned buffer before synchronising is caught.
- cuda-python (`make_fake_cudart`): the runtime API on the same fake device, pointers and streams freed
  once; or (`fake_cudart_failing_start`) one that imports but cannot start (cudaErrorInsufficientDriver:
  cuda-python 13 on a CUDA 12.6 driver).
- TensorRT (`make_fake_tensorrt`): only names TensorRT 10.3 has (no SAME_COMPUTE_CAPABILITY), a
  builder that "compiles" an ONNX file into a plan (the ONNX bytes plus its profile) and an execution
  context that runs the plan with ONNX Runtime on the fake device memory, on the stream.
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import json
import os
import sys
import threading
import types
import weakref
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------------
# pycuda
# --------------------------------------------------------------------------------------------------


class FakePycuda:
    """State of one fake CUDA driver (one process), with a `pycuda.driver`-shaped module in `.driver`."""

    def __init__(self, name: str = "Orin (fake)", cc: tuple[int, int] = (8, 7)) -> None:
        self.gpu_name, self.cc = name, cc
        self._tls = threading.local()
        self._stacks: dict[int, list[Any]] = {}  # thread ident -> that thread's context stack
        self.retained = 0  # primary context retains not yet released
        self.memory: dict[int, np.ndarray] = {}  # device pointer -> bytes
        self.host: dict[int, Any] = {}  # live pinned allocations
        # live streams by handle; weak, so that dropping the last reference destroys one (as in pycuda)
        self.streams: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self.live_streams: set[int] = set()
        self.problems: list[str] = []  # misuse seen while running (a stream destroyed without context ...)
        self._ptrs = itertools.count(0x7F0000000000, 1 << 20)
        self._handles = itertools.count(0x5000)
        self.driver = self._make_module()

    # -- per-thread context stack -----------------------------------------------------------------
    def stack(self) -> list[Any]:
        stack = getattr(self._tls, "stack", None)
        if stack is None:
            stack = self._tls.stack = []
            self._stacks[threading.get_ident()] = stack
        return stack

    def current(self) -> Any:
        stack = self.stack()
        return stack[-1] if stack else None

    def require_context(self, what: str) -> Any:
        ctx = self.current()
        if ctx is None or not ctx.valid:
            raise self.driver.LogicError(f"cu{what} failed: invalid device context")
        return ctx

    def check_clean(self) -> list[str]:
        """Whatever a clean shutdown would have given back, still held."""
        left = [f"thread {t}: {len(s)} context(s) still on the stack" for t, s in self._stacks.items() if s]
        if self.retained:
            left.append(f"{self.retained} primary context retain(s) not released")
        if self.memory:
            left.append(f"{len(self.memory)} device allocation(s) not freed")
        if self.host:
            left.append(f"{len(self.host)} pinned host allocation(s) not freed")
        if self.live_streams:
            left.append(f"{len(self.live_streams)} stream(s) not destroyed")
        return left + self.problems

    def exit_check(self) -> None:
        """At exit, as pycuda's context_stack destructor: a context left on a stack aborts the process."""

        def check() -> None:
            left = self.check_clean()
            if any("context" in p for p in left):
                sys.stderr.write("PyCUDA ERROR: The context stack was not empty upon module cleanup.\n"
                                 + "\n".join(left) + "\n")
                sys.stderr.flush()
                os.abort()
            if left:
                sys.stderr.write("fake pycuda: left behind at exit: " + "; ".join(left) + "\n")

        atexit.register(check)

    # -- the module ---------------------------------------------------------------------------------
    def _make_module(self) -> types.ModuleType:  # noqa: C901 - one fake module, its classes side by side
        fake = self
        mod = types.ModuleType("pycuda.driver")

        class Error(Exception):
            pass

        class LogicError(Error):
            pass

        mod.Error, mod.LogicError = Error, LogicError
        mod.init = lambda flags=0: None

        class Context:
            def __init__(self, handle: int) -> None:
                self.handle, self.valid, self.thread = handle, True, threading.get_ident()

            def __eq__(self, other: object) -> bool:
                return isinstance(other, Context) and other.handle == self.handle

            def __hash__(self) -> int:
                return hash(self.handle)

            def push(self) -> None:
                if not self.valid:
                    raise LogicError("cannot push invalid context")
                fake.stack().append(self)

            @staticmethod
            def pop() -> None:
                stack = fake.stack()
                if not stack:
                    raise LogicError("context::pop failed: invalid device context - cannot pop non-current context")
                stack.pop()

            @staticmethod
            def get_current() -> Any:
                return fake.current()

            def detach(self) -> None:
                if not self.valid:
                    raise LogicError("context::detach failed: invalid device context - cannot detach from invalid context")
                stack = fake.stack()
                if threading.get_ident() == self.thread:
                    fake.retained -= 1  # cuDevicePrimaryCtxRelease
                    if stack and stack[-1] is self:
                        stack.pop()
                else:  # pycuda silently skips a context of another thread: it leaks
                    fake.problems.append("primary context detached from a thread other than its own: leaked")
                self.valid = False

        mod.Context = Context

        class Device:
            def __init__(self, index: int) -> None:
                if index != 0:
                    raise LogicError(f"cuDeviceGet failed: invalid device ordinal {index}")
                self.index = index

            def name(self) -> str:
                return fake.gpu_name

            def compute_capability(self) -> tuple[int, int]:
                return fake.cc

            def total_memory(self) -> int:
                return 8 << 30

            def retain_primary_context(self) -> Context:
                fake.retained += 1
                return Context(0xC0C0)  # one primary context per device: every retain has the same handle

        mod.Device = Device

        class Stream:
            def __init__(self, flags: int = 0) -> None:
                self.context = fake.require_context("StreamCreate")
                self.handle = next(fake._handles)
                self.ops: list[Any] = []
                fake.streams[self.handle] = self
                fake.live_streams.add(self.handle)

            def enqueue(self, op: Any) -> None:
                self.ops.append(op)

            def synchronize(self) -> None:
                fake.require_context("StreamSynchronize")
                ops, self.ops = self.ops, []
                for op in ops:
                    op()

            def __del__(self) -> None:  # pycuda destroys a stream with its context activated
                if self.handle not in fake.live_streams:
                    return
                fake.live_streams.discard(self.handle)
                if not self.context.valid or threading.get_ident() != self.context.thread:
                    fake.problems.append("stream destroyed after its context was released or on another thread")

        mod.Stream = Stream

        class DeviceAllocation:
            def __init__(self, nbytes: int) -> None:
                fake.require_context("MemAlloc")
                self.ptr, self.nbytes = next(fake._ptrs), nbytes
                fake.memory[self.ptr] = np.zeros(nbytes, np.uint8)

            def __int__(self) -> int:
                return self.ptr

            def free(self) -> None:
                if self.ptr not in fake.memory:
                    raise LogicError("cuMemFree failed: invalid value (double free)")
                fake.require_context("MemFree")
                del fake.memory[self.ptr]

        mod.mem_alloc = DeviceAllocation

        class HostAllocation:
            def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
                fake.require_context("MemHostAlloc")
                dtype = np.dtype(dtype)
                self.store = np.zeros(max(1, int(np.prod(shape, dtype=np.int64))) * dtype.itemsize, np.uint8)
                self.__array_interface__ = {"shape": tuple(shape), "typestr": dtype.str,
                                            "data": (self.store.ctypes.data, False), "version": 3}
                fake.host[id(self)] = self

            def free(self) -> None:
                if fake.host.pop(id(self), None) is None:
                    raise LogicError("cuMemFreeHost failed: invalid value (double free)")

        mod.pagelocked_empty = lambda shape, dtype: np.asarray(HostAllocation(tuple(shape), dtype))

        def _device(ptr: int, nbytes: int, what: str) -> np.ndarray:
            mem = fake.memory.get(int(ptr))
            if mem is None or mem.nbytes < nbytes:
                raise LogicError(f"{what} failed: invalid argument (device pointer 0x{int(ptr):x} not allocated)")
            return mem

        def memcpy_htod_async(dst: Any, src: np.ndarray, stream: Stream) -> None:
            fake.require_context("MemcpyHtoDAsync")
            mem = _device(dst, src.nbytes, "cuMemcpyHtoDAsync")

            def run() -> None:  # reads the host buffer when the copy runs, not when it was queued
                mem[: src.nbytes] = src.reshape(-1).view(np.uint8)

            stream.enqueue(run)

        def memcpy_dtoh_async(dst: np.ndarray, src: Any, stream: Stream) -> None:
            fake.require_context("MemcpyDtoHAsync")
            mem = _device(src, dst.nbytes, "cuMemcpyDtoHAsync")

            def run() -> None:
                dst.reshape(-1).view(np.uint8)[...] = mem[: dst.nbytes]

            stream.enqueue(run)

        mod.memcpy_htod_async, mod.memcpy_dtoh_async = memcpy_htod_async, memcpy_dtoh_async
        return mod

    def install(self, modules: dict[str, Any]) -> None:
        """Make `import pycuda.driver` find this fake (in `modules`, normally sys.modules)."""
        pkg = types.ModuleType("pycuda")
        pkg.driver = self.driver
        modules["pycuda"], modules["pycuda.driver"] = pkg, self.driver


class _CudaErr(int):
    """cuda-python's cudaError_t: an int with a name."""

    def __new__(cls, value: int, name: str) -> _CudaErr:
        err = super().__new__(cls, value)
        err.name = name
        return err


def make_fake_cudart(fake: FakePycuda) -> types.ModuleType:  # noqa: C901 - one fake module
    """cuda-python's runtime API (`cuda.bindings.runtime`) on the same fake device as `fake`: pointers,
    pinned memory and streams are freed once (a second free is an error code, as in CUDA), copies are
    queued on their stream. The runtime API makes the primary context current on any thread by itself."""
    ok = _CudaErr(0, "cudaSuccess")
    invalid = _CudaErr(1, "cudaErrorInvalidValue")
    bad_handle = _CudaErr(400, "cudaErrorInvalidResourceHandle")
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaStreamNonBlocking = 1
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    rt.cudaSetDevice = lambda device: (ok,) if device == 0 else (_CudaErr(101, "cudaErrorInvalidDevice"),)
    rt.cudaGetErrorString = lambda err: (ok, f"fake CUDA error {getattr(err, 'name', err)}".encode())
    rt.cudaGetDeviceProperties = lambda device: (ok, types.SimpleNamespace(
        name=fake.gpu_name.encode(), major=fake.cc[0], minor=fake.cc[1], totalGlobalMem=8 << 30))

    class RtStream:
        runtime_api = True  # no pycuda context needed to run work on it

        def __init__(self) -> None:
            self.handle, self.ops = next(fake._handles), []

        def __int__(self) -> int:
            return self.handle

        def enqueue(self, op: Any) -> None:
            self.ops.append(op)

    streams: dict[int, RtStream] = {}  # strong: a cudaStream_t lives until cudaStreamDestroy

    def create(flags: int) -> tuple:
        stream = RtStream()
        streams[stream.handle] = fake.streams[stream.handle] = stream
        fake.live_streams.add(stream.handle)
        return ok, stream

    def destroy(stream: Any) -> tuple:
        if streams.pop(int(stream), None) is None:
            return (bad_handle,)
        fake.live_streams.discard(int(stream))
        return (ok,)

    def synchronize(stream: Any) -> tuple:
        live = streams.get(int(stream))
        if live is None:
            return (bad_handle,)
        ops, live.ops = live.ops, []
        for op in ops:
            op()
        return (ok,)

    def malloc(nbytes: int) -> tuple:
        ptr = next(fake._ptrs)
        fake.memory[ptr] = np.zeros(nbytes, np.uint8)
        return ok, ptr

    def free(ptr: int) -> tuple:
        return (ok,) if fake.memory.pop(int(ptr), None) is not None else (invalid,)

    def malloc_host(nbytes: int) -> tuple:
        store = np.zeros(nbytes, np.uint8)
        fake.host[store.ctypes.data] = store
        return ok, store.ctypes.data

    def free_host(ptr: int) -> tuple:
        return (ok,) if fake.host.pop(int(ptr), None) is not None else (invalid,)

    def memcpy_async(dst: int, src: int, count: int, kind: int, stream: Any) -> tuple:
        live = streams.get(int(stream))
        device = fake.memory.get(int(dst) if kind == 1 else int(src))
        if live is None or device is None or device.nbytes < count:
            return (invalid,)

        def run() -> None:  # reads its source when it runs, as an async copy does
            if kind == 1:
                ctypes.memmove(device.ctypes.data, int(src), count)
            else:
                ctypes.memmove(int(dst), device.ctypes.data, count)

        live.enqueue(run)
        return (ok,)

    rt.cudaStreamCreateWithFlags, rt.cudaStreamDestroy, rt.cudaStreamSynchronize = create, destroy, synchronize
    rt.cudaMalloc, rt.cudaFree, rt.cudaMallocHost, rt.cudaFreeHost = malloc, free, malloc_host, free_host
    rt.cudaMemcpyAsync = memcpy_async
    return rt


def _install_cudart(modules: dict[str, Any], rt: types.ModuleType) -> None:
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.bindings, bindings.runtime = bindings, rt
    modules.update({"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": rt})


def fake_cudart_failing_start(modules: dict[str, Any]) -> None:
    """cuda-python that imports but cannot start: cudaSetDevice -> cudaErrorInsufficientDriver (35)."""

    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaSetDevice = lambda device: (_CudaErr(35, "cudaErrorInsufficientDriver"),)
    rt.cudaGetErrorString = lambda err: (0, b"CUDA driver version is insufficient for CUDA runtime version")
    _install_cudart(modules, rt)


# --------------------------------------------------------------------------------------------------
# TensorRT 10.3
# --------------------------------------------------------------------------------------------------


class _Enum:
    def __init__(self, name: str, value: int) -> None:
        self.name, self.value = name, value

    def __int__(self) -> int:
        return self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Enum) and (other.name, other.value) == (self.name, self.value)

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"<{self.name}>"


def _enum(*names: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{n: _Enum(n, i) for i, n in enumerate(names)})


PLAN_MAGIC = b"FAKEPLAN\n"
CACHE_MAGIC = b"FAKECACHE"
_ORT_TO_TRT = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(int32)": "INT32",
               "tensor(int64)": "INT64", "tensor(int8)": "INT8", "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL"}


def make_fake_tensorrt(cuda: FakePycuda, version: str = "10.3.0.30") -> types.ModuleType:  # noqa: C901
    """A `tensorrt` module with TensorRT 10.3's names, whose engines run ONNX files through ONNX Runtime."""
    import onnxruntime as ort

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.loggers = []  # every Logger made: TensorRT wants one per process
    trt.errors = []  # what the TensorRT log would say
    trt.DataType = _enum("FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64", "INT4")
    trt.TensorIOMode = _enum("NONE", "INPUT", "OUTPUT")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=_Enum("STRONGLY_TYPED", 5))
    trt.MemoryPoolType = _enum("WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM", "DLA_GLOBAL_DRAM", "TACTIC_DRAM")
    trt.BuilderFlag = types.SimpleNamespace(VERSION_COMPATIBLE=_Enum("VERSION_COMPATIBLE", 13))
    trt.HardwareCompatibilityLevel = _enum("NONE", "AMPERE_PLUS")  # SAME_COMPUTE_CAPABILITY came in 10.9

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity: int = 2) -> None:
            if trt.loggers:
                trt.errors.append("[TRT] [W] a second logger was created; TensorRT uses the first one")
            trt.loggers.append(self)

    trt.Logger = Logger

    # -- building --------------------------------------------------------------------------------
    class Tensor:
        def __init__(self, name: str, shape: list[int]) -> None:
            self.name, self.shape = name, tuple(shape)

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags, self.inputs, self.onnx = flags, [], b""

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path: str) -> bool:
            self.network.onnx = Path(path).read_bytes()
            session = ort.InferenceSession(self.network.onnx, providers=["CPUExecutionProvider"])
            self.network.inputs = [Tensor(a.name, [d if isinstance(d, int) else -1 for d in a.shape])
                                   for a in session.get_inputs()]
            return True

        def get_error(self, i: int) -> str:
            return ""

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return CACHE_MAGIC + self.data

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, list[list[int]]] = {}

        def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class BuilderConfig:
        def __init__(self) -> None:
            self.profiles: list[Profile] = []
            self.cache: TimingCache | None = None
            self.hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            pass

        def set_flag(self, flag: Any) -> None:
            pass

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache | None:
            data = bytes(data)
            if data and not data.startswith(CACHE_MAGIC):
                trt.errors.append("[TRT] [E] timing cache: corrupt or foreign data")
                return None  # what TensorRT does with bytes it cannot read
            return TimingCache(data[len(CACHE_MAGIC):])

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            if not isinstance(cache, TimingCache):
                raise TypeError("set_timing_cache(): incompatible function arguments")
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return self.cache

    class Builder:
        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flags: int = 0) -> Network:
            return Network(flags)

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes:
            header = json.dumps({"profile": config.profiles[0].shapes}).encode()
            return PLAN_MAGIC + header + b"\n" + network.onnx

    trt.Builder, trt.OnnxParser = Builder, OnnxParser

    # -- running ---------------------------------------------------------------------------------
    class ExecutionContext:
        def __init__(self, engine: Any) -> None:
            self.engine = engine
            self.shapes = {n: list(engine.shape_of(n)) for n in engine.names}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: Any) -> bool:
            lo, _, hi = self.engine.profile[name]
            shape = [int(d) for d in shape]
            if len(shape) != len(lo) or any(not a <= d <= b for a, d, b in zip(lo, shape, hi, strict=True)):
                return False
            self.shapes[name] = shape
            batch = shape[0]
            for out in self.engine.outputs:  # every output's first axis is the batch
                self.shapes[out.name] = [batch, *self.engine.shape_of(out.name)[1:]]
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return tuple(self.shapes[name])

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            stream = cuda.streams.get(int(stream_handle))
            if stream is None or (not getattr(stream, "runtime_api", False) and cuda.current() is None):
                trt.errors.append("[TRT] [E] execute_async_v3: invalid stream or no current CUDA context")
                return False
            if set(self.addresses) != set(self.engine.names) or any(a not in cuda.memory for a in self.addresses.values()):
                trt.errors.append("[TRT] [E] execute_async_v3: a tensor address is unset or freed")
                return False
            engine, shapes, addresses = self.engine, dict(self.shapes), dict(self.addresses)

            def kernel() -> None:  # runs in stream order, at synchronize
                feeds = {}
                for arg in engine.inputs:
                    shape = shapes[arg.name]
                    n = int(np.prod(shape)) * engine.dtype_of(arg.name).itemsize
                    feeds[arg.name] = cuda.memory[addresses[arg.name]][:n].view(engine.dtype_of(arg.name)).reshape(shape).copy()
                for arg, value in zip(engine.outputs, engine.session.run(None, feeds), strict=True):
                    raw = np.ascontiguousarray(value, engine.dtype_of(arg.name)).reshape(-1).view(np.uint8)
                    cuda.memory[addresses[arg.name]][: raw.nbytes] = raw

            stream.enqueue(kernel)
            return True

    class CudaEngine:
        def __init__(self, plan: bytes) -> None:
            header, onnx_bytes = plan[len(PLAN_MAGIC):].split(b"\n", 1)
            self.profile = json.loads(header)["profile"]
            self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            self.inputs, self.outputs = self.session.get_inputs(), self.session.get_outputs()
            self.names = [a.name for a in self.outputs] + [a.name for a in self.inputs]  # outputs first, on purpose

        def _arg(self, name: str) -> Any:
            return next(a for a in [*self.inputs, *self.outputs] if a.name == name)

        def shape_of(self, name: str) -> tuple[int, ...]:
            return tuple(d if isinstance(d, int) else -1 for d in self._arg(name).shape)

        def dtype_of(self, name: str) -> np.dtype:
            import finprint.runtime.trt_engine as te

            return te.TRT_DTYPES[_ORT_TO_TRT[self._arg(name).type]]

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> _Enum:
            return trt.TensorIOMode.INPUT if any(a.name == name for a in self.inputs) else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.shape_of(name)

        def get_tensor_dtype(self, name: str) -> _Enum:
            return getattr(trt.DataType, _ORT_TO_TRT[self._arg(name).type])

        def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
            return [tuple(s) for s in self.profile[name]]

        def create_execution_context(self) -> ExecutionContext:
            return ExecutionContext(self)

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data: bytes) -> CudaEngine | None:
            if not bytes(data).startswith(PLAN_MAGIC):
                trt.errors.append("[TRT] [E] deserialize: not a plan for this TensorRT")
                return None
            return CudaEngine(bytes(data))

    trt.Runtime = Runtime
    return trt


def install(modules: dict[str, Any], *, trt_version: str = "10.3.0.30", cudart: str = "absent") -> FakePycuda:
    """Fake pycuda and TensorRT into `modules`, with cuda-python `cudart`: "absent" (a real one on a GPU
    machine is hidden, so "auto" picks the fake pycuda), "works" (the fake runtime API) or "fails" (imports
    but cannot start)."""
    cuda = FakePycuda()
    cuda.install(modules)
    modules["tensorrt"] = make_fake_tensorrt(cuda, trt_version)
    if cudart == "fails":
        fake_cudart_failing_start(modules)
    elif cudart == "works":
        _install_cudart(modules, make_fake_cudart(cuda))
    else:
        modules.update({"cuda": None, "cuda.bindings": None, "cuda.bindings.runtime": None, "cuda.cudart": None})
    return cuda
