"""A small CUDA layer for the TensorRT backend: pinned host and device buffers, one stream, async copies.

Two implementations behind one interface, chosen by `open_cuda`:
- `PycudaMem` (pycuda): the device's primary context is retained explicitly, pushed on this
  thread, and popped and released on `close()`, so interpreter shutdown never reports
  "context stack was not empty".
- `CudaBindingsMem` (cuda-python's `cuda.bindings.runtime`, or the older `cuda.cudart`): the
  runtime API, which also works in the primary context.

Every CUDA call is checked; a failure raises `CudaError` naming the call. The thread that
opened a `CudaMem` owns it (and the context): calls from another thread are refused, because a
CUDA context is current per thread and a second thread would silently use none. Buffers are
freed explicitly (`free`, or all at once by `close`), never left to garbage collection.

Engines share one layer per thread and device (`acquire_cuda` / `release_cuda`, reference
counted): with pycuda each layer pushes the primary context once, and `Context.pop()` pops
whatever is on top of the thread's stack, so two layers closed in any order but the reverse of
opening would pop each other's context ("cannot pop non-current context").
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from finprint.errors import FinprintError

log = logging.getLogger(__name__)

IMPLEMENTATIONS: tuple[str, ...] = ("cuda-python", "pycuda")


class CudaError(FinprintError):
    """A CUDA call failed (the message names the call and CUDA's own error text)."""


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    compute_capability: str  # "8.7", "9.0"
    total_memory: int


@dataclass
class DeviceBuffer:
    """`nbytes` of device memory at `ptr`; `freed` once given back."""

    ptr: int
    nbytes: int
    freed: bool = False


class CudaMem(ABC):
    """Pinned host + device buffers, one stream, async copies; owned by the thread that made it."""

    name: str = "?"

    def __init__(self, device: int = 0) -> None:
        self.device = device
        self._owner = threading.get_ident()
        self._device_buffers: dict[int, DeviceBuffer] = {}
        self._host_buffers: dict[int, np.ndarray] = {}
        self._closed = False

    # -- what each implementation provides ------------------------------------------------
    @property
    @abstractmethod
    def stream_handle(self) -> int:
        """The raw cudaStream_t, as TensorRT's `execute_async_v3` takes it."""

    @abstractmethod
    def device_info(self) -> DeviceInfo: ...

    @abstractmethod
    def _malloc_device(self, nbytes: int) -> int: ...

    @abstractmethod
    def _free_device(self, ptr: int) -> None: ...

    @abstractmethod
    def _malloc_host(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray: ...

    @abstractmethod
    def _free_host(self, array: np.ndarray) -> None: ...

    @abstractmethod
    def _h2d(self, dst_ptr: int, src: np.ndarray, nbytes: int) -> None: ...

    @abstractmethod
    def _d2h(self, dst: np.ndarray, src_ptr: int, nbytes: int) -> None: ...

    @abstractmethod
    def _sync(self) -> None: ...

    @abstractmethod
    def _release(self) -> None:
        """Destroy the stream and give the context back."""

    # -- the public, checked interface ----------------------------------------------------
    def device_alloc(self, nbytes: int) -> DeviceBuffer:
        self._check()
        if nbytes <= 0:
            raise CudaError(f"device_alloc: size must be positive, got {nbytes}")
        buf = DeviceBuffer(self._malloc_device(int(nbytes)), int(nbytes))
        self._device_buffers[buf.ptr] = buf
        return buf

    def host_alloc(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """A page-locked numpy array (needed for copies that really run asynchronously)."""
        self._check()
        array = self._malloc_host(tuple(int(s) for s in shape), np.dtype(dtype))
        self._host_buffers[array.ctypes.data] = array
        return array

    def copy_to_device(self, dst: DeviceBuffer, src: np.ndarray) -> None:
        self._check()
        self._check_copy(dst, src, "copy_to_device")
        self._h2d(dst.ptr, src, src.nbytes)

    def copy_to_host(self, dst: np.ndarray, src: DeviceBuffer) -> None:
        self._check()
        self._check_copy(src, dst, "copy_to_host")
        self._d2h(dst, src.ptr, dst.nbytes)

    def synchronize(self) -> None:
        self._check()
        self._sync()

    def free(self, buffer: DeviceBuffer | np.ndarray) -> None:
        self._check()
        if isinstance(buffer, DeviceBuffer):
            if buffer.freed or buffer.ptr not in self._device_buffers:
                raise CudaError(f"free: device buffer 0x{buffer.ptr:x} is not live (double free?)")
            self._free_device(buffer.ptr)
            buffer.freed = True
            del self._device_buffers[buffer.ptr]
        else:
            key = buffer.ctypes.data
            if key not in self._host_buffers:
                raise CudaError("free: host array was not allocated by this CudaMem (or already freed)")
            self._free_host(self._host_buffers.pop(key))

    def close(self) -> None:
        """Free every buffer still live, destroy the stream, release the context. Idempotent."""
        if self._closed:
            return
        self._check_thread()
        try:
            self._sync()
            for buf in list(self._device_buffers.values()):
                self.free(buf)
            for array in list(self._host_buffers.values()):
                self.free(array)
        finally:
            self._closed = True
            self._release()
        log.debug("%s: closed", self.name)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def live_buffers(self) -> int:
        return len(self._device_buffers) + len(self._host_buffers)

    def __enter__(self) -> CudaMem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checks -----------------------------------------------------------------------------
    def check_thread(self) -> None:
        """Raise unless called on the thread that owns this layer (and its context)."""
        self._check_thread()

    def _check_thread(self) -> None:
        if threading.get_ident() != self._owner:
            raise CudaError(
                f"{self.name}: used from a thread that does not own its CUDA context; "
                "do all CUDA work on the inference thread that opened it"
            )

    def _check(self) -> None:
        if self._closed:
            raise CudaError(f"{self.name}: already closed")
        self._check_thread()

    @staticmethod
    def _check_copy(dev: DeviceBuffer, host: np.ndarray, what: str) -> None:
        if dev.freed:
            raise CudaError(f"{what}: device buffer 0x{dev.ptr:x} was freed")
        if not host.flags.c_contiguous:
            raise CudaError(f"{what}: host array must be C-contiguous")
        if host.nbytes > dev.nbytes:
            raise CudaError(f"{what}: {host.nbytes} bytes do not fit a {dev.nbytes}-byte device buffer")


# ---------------------------------------------------------------------------------------------
# pycuda
# ---------------------------------------------------------------------------------------------


class PycudaMem(CudaMem):
    name = "pycuda"

    def __init__(self, device: int = 0) -> None:
        super().__init__(device)
        self._cuda = importlib.import_module("pycuda.driver")
        self._ctx = None
        self._pushed = False
        self._stream = None
        self._allocations: dict[int, Any] = {}  # pycuda's objects, so free() frees explicitly
        try:
            self._cuda.init()
            self._dev = self._cuda.Device(device)
            # The primary context is the one the CUDA runtime (and so TensorRT) uses; a private
            # context made with make_context() would leave TensorRT and our buffers apart.
            self._ctx = self._dev.retain_primary_context()
            self._ctx.push()
            self._pushed = True
            self._stream = self._cuda.Stream()
        except self._cuda.Error as exc:
            self._release()
            raise CudaError(f"pycuda: cannot open device {device}: {exc}") from exc

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._cuda.Error as exc:
            raise CudaError(f"pycuda {what} failed: {exc}") from exc

    @property
    def stream_handle(self) -> int:
        return int(self._stream.handle)

    @property
    def native_stream(self) -> Any:
        """pycuda's Stream object, for launching pycuda kernels on this layer's stream."""
        return self._stream

    def device_info(self) -> DeviceInfo:
        major, minor = self._call("compute_capability", self._dev.compute_capability)
        return DeviceInfo(self.device, self._dev.name(), f"{major}.{minor}", int(self._dev.total_memory()))

    def _malloc_device(self, nbytes: int) -> int:
        alloc = self._call("mem_alloc", self._cuda.mem_alloc, nbytes)
        self._allocations[int(alloc)] = alloc
        return int(alloc)

    def _free_device(self, ptr: int) -> None:
        self._call("free", self._allocations.pop(ptr).free)

    def _malloc_host(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self._call("pagelocked_empty", self._cuda.pagelocked_empty, shape, dtype)

    def _free_host(self, array: np.ndarray) -> None:
        self._call("host free", array.base.free)

    def _h2d(self, dst_ptr: int, src: np.ndarray, nbytes: int) -> None:
        self._call("memcpy_htod_async", self._cuda.memcpy_htod_async, dst_ptr, src, self._stream)

    def _d2h(self, dst: np.ndarray, src_ptr: int, nbytes: int) -> None:
        self._call("memcpy_dtoh_async", self._cuda.memcpy_dtoh_async, dst, src_ptr, self._stream)

    def _sync(self) -> None:
        self._call("stream synchronize", self._stream.synchronize)

    def _release(self) -> None:
        self._stream = None  # destroyed here, while its context is still current
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            try:
                if self._pushed:
                    # Context.pop() pops the top of this thread's stack, whoever pushed it: refuse
                    # rather than pop a context someone else pushed after ours.
                    if self._cuda.Context.get_current() != ctx:
                        raise CudaError("pycuda: another CUDA context was pushed on this thread after finprint's "
                                        "and is still current; pop it before closing finprint's engines")
                    self._cuda.Context.pop()
                    self._pushed = False
            finally:
                ctx.detach()  # releases the retained primary context


# ---------------------------------------------------------------------------------------------
# cuda-python (cuda.bindings)
# ---------------------------------------------------------------------------------------------


def _import_cudart() -> Any:
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return importlib.import_module("cuda.cudart")  # cuda-python < 12.6 layout


class CudaBindingsMem(CudaMem):
    name = "cuda-python"

    def __init__(self, device: int = 0) -> None:
        super().__init__(device)
        self._rt = _import_cudart()
        self._stream = None
        self._check_rt("cudaSetDevice", self._rt.cudaSetDevice(device))
        (self._stream,) = self._check_rt(
            "cudaStreamCreateWithFlags", self._rt.cudaStreamCreateWithFlags(self._rt.cudaStreamNonBlocking)
        )
        self._host_ptrs: dict[int, int] = {}

    def _check_rt(self, what: str, result: Any) -> tuple[Any, ...]:
        """cuda-python returns (error, *values): raise on error, return the values."""
        if not isinstance(result, tuple):
            result = (result,)
        err, values = result[0], result[1:]
        if int(err) != 0:
            _, text = self._rt.cudaGetErrorString(err)
            raise CudaError(f"cuda-python {what} failed: {getattr(err, 'name', err)}: {text.decode(errors='replace')}")
        return values

    @property
    def stream_handle(self) -> int:
        return int(self._stream)

    @property
    def native_stream(self) -> Any:
        """cuda-python's cudaStream_t, for launching kernels on this layer's stream."""
        return self._stream

    def device_info(self) -> DeviceInfo:
        (prop,) = self._check_rt("cudaGetDeviceProperties", self._rt.cudaGetDeviceProperties(self.device))
        name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
        return DeviceInfo(self.device, name, f"{prop.major}.{prop.minor}", int(prop.totalGlobalMem))

    def _malloc_device(self, nbytes: int) -> int:
        (ptr,) = self._check_rt("cudaMalloc", self._rt.cudaMalloc(nbytes))
        return int(ptr)

    def _free_device(self, ptr: int) -> None:
        self._check_rt("cudaFree", self._rt.cudaFree(ptr))

    def _malloc_host(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        (ptr,) = self._check_rt("cudaMallocHost", self._rt.cudaMallocHost(nbytes))
        raw = (ctypes.c_byte * nbytes).from_address(int(ptr))
        count = int(np.prod(shape, dtype=np.int64))
        array = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
        self._host_ptrs[array.ctypes.data] = int(ptr)
        return array

    def _free_host(self, array: np.ndarray) -> None:
        ptr = self._host_ptrs.pop(array.ctypes.data)
        self._check_rt("cudaFreeHost", self._rt.cudaFreeHost(ptr))

    def _h2d(self, dst_ptr: int, src: np.ndarray, nbytes: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check_rt("cudaMemcpyAsync H2D", self._rt.cudaMemcpyAsync(dst_ptr, src.ctypes.data, nbytes, kind, self._stream))

    def _d2h(self, dst: np.ndarray, src_ptr: int, nbytes: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check_rt("cudaMemcpyAsync D2H", self._rt.cudaMemcpyAsync(dst.ctypes.data, src_ptr, nbytes, kind, self._stream))

    def _sync(self) -> None:
        self._check_rt("cudaStreamSynchronize", self._rt.cudaStreamSynchronize(self._stream))

    def _release(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            self._check_rt("cudaStreamDestroy", self._rt.cudaStreamDestroy(stream))


# ---------------------------------------------------------------------------------------------
# Choosing one
# ---------------------------------------------------------------------------------------------

_CLASSES: dict[str, type[CudaMem]] = {"cuda-python": CudaBindingsMem, "pycuda": PycudaMem}
_MODULES: dict[str, str] = {"cuda-python": "cuda.bindings.runtime", "pycuda": "pycuda.driver"}


def _importable(impl: str) -> str | None:
    """None if the implementation's module imports, else why not."""
    try:
        if impl == "cuda-python":
            _import_cudart()
        else:
            importlib.import_module(_MODULES[impl])
    except ImportError as exc:
        return f"{impl} is not installed ({exc.msg})"
    except Exception as exc:  # pycuda raises its own errors at import when no driver is loadable
        return f"{impl} does not load here ({type(exc).__name__}: {exc})"
    return None


def _wanted(impl: str) -> str:
    if impl == "auto":
        impl = os.environ.get("FINPRINT_CUDA", "auto")
    if impl not in ("auto", *IMPLEMENTATIONS):
        raise FinprintError(f"unknown CUDA implementation '{impl}'; choose one of auto, {', '.join(IMPLEMENTATIONS)}")
    return impl


def open_cuda(impl: str = "auto", device: int = 0) -> CudaMem:
    """Open a CUDA layer of its own: `impl` is "pycuda", "cuda-python" or "auto" (env FINPRINT_CUDA,
    else cuda-python, else pycuda). With "auto" a layer that imports but cannot start (cuda-python
    13 on a CUDA 12 driver: cudaErrorInsufficientDriver) gives way to the next, and the log says why."""
    impl = _wanted(impl)
    candidates = IMPLEMENTATIONS if impl == "auto" else (impl,)
    reasons = []
    for name in candidates:
        reason = _importable(name)
        if reason is None:
            try:
                mem = _CLASSES[name](device)
            except CudaError as exc:
                if impl != "auto":
                    raise
                reason = f"{name} does not start: {exc}"
                log.warning("CUDA layer %s", reason)
            else:
                log.debug("CUDA layer: %s", name)
                return mem
        reasons.append(reason)
    raise CudaError(
        "no CUDA Python binding is usable: " + "; ".join(reasons)
        + " (install 'finprint[gpu]' for pycuda, or cuda-python, on a machine with a CUDA driver;"
        " JetPack 6 needs cuda-python>=12.6,<13)"
    )


# One layer per (thread, device), shared by every engine that thread opens.
_SHARED: dict[tuple[threading.Thread, int], list[Any]] = {}  # -> [CudaMem, users]
_SHARED_LOCK = threading.Lock()


def acquire_cuda(impl: str = "auto", device: int = 0) -> CudaMem:
    """The calling thread's shared CUDA layer for `device`, opened on first use. Every call needs a
    `release_cuda`; the last one closes the layer (with pycuda: pops the one context pushed)."""
    impl = _wanted(impl)
    key = (threading.current_thread(), device)
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is not None and not entry[0].closed:
            mem = entry[0]
            if impl not in ("auto", mem.name):
                raise FinprintError(f"this thread already uses CUDA through {mem.name}; cannot also open {impl}")
            entry[1] += 1
            return mem
    mem = open_cuda(impl, device)
    with _SHARED_LOCK:
        _SHARED[key] = [mem, 1]
    return mem


def release_cuda(mem: CudaMem) -> None:
    """Give back a layer from `acquire_cuda` (on the thread that acquired it); the last user closes it."""
    if mem.closed:
        return
    mem._check_thread()
    key = (threading.current_thread(), mem.device)
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is not None and entry[0] is mem:
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _SHARED[key]
    mem.close()


def cuda_unavailable_reason(device: int = 0) -> str | None:
    """None if a CUDA device can be opened through one of the bindings here, else why not."""
    try:
        mem = acquire_cuda("auto", device)
    except FinprintError as exc:
        return str(exc)
    release_cuda(mem)
    return None


def device_info(device: int = 0) -> DeviceInfo:
    """Name and compute capability of a device (through this thread's shared CUDA layer)."""
    mem = acquire_cuda("auto", device)
    try:
        return mem.device_info()
    finally:
        release_cuda(mem)
