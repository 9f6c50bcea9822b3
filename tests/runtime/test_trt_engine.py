"""The TensorRT backend's own logic on a machine without a GPU.

A fake `tensorrt` module (only the name-based API finprint uses) and a numpy-backed `CudaMem`
drive the real `TrtEngine` loop (buffer planning, binding by name, copy-execute-copy, profile
checks, cleanup) and the real `build_engine` code path (strongly typed flags, profile, workspace,
timing cache, sidecar). tests/export/test_trt_conformance.py checks those names against the real API.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from finprint.errors import FinprintError
from finprint.runtime.cuda_mem import CudaError, CudaMem, DeviceInfo
from finprint.runtime.sidecar import MachineInfo, load_sidecar, validate_engine
from finprint.runtime.trt_build import BuildOptions, build_engine, profile_for
from finprint.runtime.trt_engine import BufferPlan, TrtEngine, TrtTensorSpec, plan_buffers

# --------------------------------------------------------------------------------------------
# fakes
# --------------------------------------------------------------------------------------------


class NumpyCuda(CudaMem):
    """CudaMem whose "device" is a dict of numpy byte arrays; copies happen at once."""

    name = "numpy"

    def __init__(self) -> None:
        super().__init__(0)
        self.memory: dict[int, np.ndarray] = {}
        self._next = 0x1000
        self.released = False
        self.syncs = 0

    @property
    def stream_handle(self) -> int:
        return 0xABC

    def device_info(self) -> DeviceInfo:
        return DeviceInfo(0, "Fake GPU", "8.7", 1 << 30)

    def _malloc_device(self, nbytes: int) -> int:
        ptr, self._next = self._next, self._next + nbytes + 256
        self.memory[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def _free_device(self, ptr: int) -> None:
        del self.memory[ptr]

    def _malloc_host(self, shape, dtype):
        return np.zeros(shape, dtype)

    def _free_host(self, array) -> None:
        pass

    def _h2d(self, dst_ptr, src, nbytes) -> None:
        self.memory[dst_ptr][:nbytes] = src.reshape(-1).view(np.uint8)

    def _d2h(self, dst, src_ptr, nbytes) -> None:
        dst.reshape(-1).view(np.uint8)[...] = self.memory[src_ptr][:nbytes]

    def _sync(self) -> None:
        self.syncs += 1

    def _release(self) -> None:
        self.released = True


class _Enum:
    def __init__(self, name: str, value: int = 0) -> None:
        self.name, self.value = name, value

    def __int__(self) -> int:
        return self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Enum) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def make_fake_trt(cuda: NumpyCuda, *, deserialize_ok: bool = True, max_batch: int = 4) -> types.SimpleNamespace:
    """A model y = 2 * x + 1 with input x[B,3] (B dynamic, profile 1..max_batch) and output y[B,3]."""
    trt = types.SimpleNamespace()
    trt.__version__ = "10.13.0.35"
    trt.TensorIOMode = types.SimpleNamespace(INPUT=_Enum("INPUT"), OUTPUT=_Enum("OUTPUT"))
    trt.DataType = types.SimpleNamespace(FLOAT=_Enum("FLOAT"))
    trt.calls = []

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class Context:
        def __init__(self):
            self.shapes = {"x": (-1, 3)}
            self.addresses = {}

        def set_input_shape(self, name, shape):
            trt.calls.append(("set_input_shape", name, tuple(shape)))
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self.shapes["x"] if name in ("x", "y") else None

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream):
            trt.calls.append(("execute_async_v3", stream))
            b = self.shapes["x"][0]
            x = cuda.memory[self.addresses["x"]][: b * 12].view(np.float32)
            y = cuda.memory[self.addresses["y"]][: b * 12].view(np.float32)
            y[...] = 2 * x + 1
            return True

    class CudaEngine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["y", "x"][i]  # outputs first: binding by position would be wrong

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "x" else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return (-1, 3)

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT

        def get_tensor_profile_shape(self, name, profile):
            return (1, 3), (2, 3), (max_batch, 3)

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            trt.calls.append(("deserialize", len(data)))
            return CudaEngine() if deserialize_ok and data.startswith(b"PLAN") else None

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


# --------------------------------------------------------------------------------------------
# buffer planning
# --------------------------------------------------------------------------------------------


def test_plan_buffers_by_name_at_max_shape() -> None:
    specs = [
        TrtTensorSpec("images", True, np.dtype(np.float32), (-1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64)),
        TrtTensorSpec("scores", False, np.dtype(np.float16), (-1, 100)),
    ]
    plans = plan_buffers(specs, {"scores": (8, 100), "images": (8, 3, 64, 64)})
    assert plans == [
        BufferPlan("images", True, np.dtype(np.float32), (8, 3, 64, 64)),
        BufferPlan("scores", False, np.dtype(np.float16), (8, 100)),
    ]
    assert plans[0].nbytes == 8 * 3 * 64 * 64 * 4 and plans[1].nbytes == 8 * 100 * 2
    with pytest.raises(FinprintError, match="no bounded max shape"):
        plan_buffers(specs, {"scores": (8, -1), "images": (8, 3, 64, 64)})
    with pytest.raises(FinprintError, match="no max shape for tensor 'scores'"):
        plan_buffers(specs, {"images": (8, 3, 64, 64)})


# --------------------------------------------------------------------------------------------
# the engine loop
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.engine"
    path.write_bytes(b"PLAN" + bytes(60))
    return path


def test_trt_engine_runs_copy_execute_copy(plan_file: Path) -> None:
    cuda = NumpyCuda()
    trt = make_fake_trt(cuda)
    eng = TrtEngine(plan_file, cuda=cuda, trt_module=trt)
    assert [t.name for t in eng.inputs] == ["x"] and [t.name for t in eng.outputs] == ["y"]
    assert eng.inputs[0].shape == (None, 3)
    allocated = cuda.live_buffers
    assert allocated == 4  # one device + one pinned host buffer per tensor, at profile max
    for batch in (1, 3, 4):
        x = np.arange(batch * 3, dtype=np.float32).reshape(batch, 3)
        out = eng.infer({"x": x})
        np.testing.assert_array_equal(out["y"], 2 * x + 1)
    assert cuda.live_buffers == allocated  # nothing allocated per frame
    assert ("execute_async_v3", 0xABC) in trt.calls
    with pytest.raises(FinprintError, match=r"outside the engine's profile \[1, 4\]"):
        eng.infer({"x": np.zeros((5, 3), np.float32)})
    with pytest.raises(FinprintError, match="float64"):
        eng.infer({"x": np.zeros((2, 3))})
    eng.close()
    assert cuda.live_buffers == 0 and not cuda.closed  # a borrowed CudaMem stays open
    with pytest.raises(FinprintError, match="closed"):
        eng.infer({"x": np.zeros((1, 3), np.float32)})
    cuda.close()
    assert cuda.released


def test_outputs_are_copies_not_the_reused_pinned_buffer(plan_file: Path) -> None:
    cuda = NumpyCuda()
    with TrtEngine(plan_file, cuda=cuda, trt_module=make_fake_trt(cuda)) as eng:
        first = eng.infer({"x": np.ones((2, 3), np.float32)})["y"]
        eng.infer({"x": np.zeros((2, 3), np.float32)})
        np.testing.assert_array_equal(first, np.full((2, 3), 3.0, np.float32))


def test_truncated_or_foreign_engine_is_a_clear_error(plan_file: Path, tmp_path: Path) -> None:
    cuda = NumpyCuda()
    with pytest.raises(FinprintError, match="could not deserialize.*finprint build-engine"):
        TrtEngine(plan_file, cuda=cuda, trt_module=make_fake_trt(cuda, deserialize_ok=False))
    assert cuda.live_buffers == 0
    empty = tmp_path / "empty.engine"
    empty.write_bytes(b"")
    with pytest.raises(FinprintError, match="empty"):
        TrtEngine(empty, cuda=cuda, trt_module=make_fake_trt(cuda))


def test_cuda_mem_bookkeeping() -> None:
    with NumpyCuda() as cuda:
        buf = cuda.device_alloc(16)
        host = cuda.host_alloc((4,), np.float32)
        host[:] = [1, 2, 3, 4]
        cuda.copy_to_device(buf, host)
        back = cuda.host_alloc((4,), np.float32)
        cuda.copy_to_host(back, buf)
        np.testing.assert_array_equal(back, host)
        with pytest.raises(CudaError, match="do not fit"):
            cuda.copy_to_device(buf, np.zeros(8, np.float32))
        with pytest.raises(CudaError, match="C-contiguous"):
            cuda.copy_to_device(buf, np.zeros((4, 2), np.float32)[:, 0])
        cuda.free(buf)
        with pytest.raises(CudaError, match="double free"):
            cuda.free(buf)
        with pytest.raises(CudaError, match="freed"):
            cuda.copy_to_host(back, buf)
    assert cuda.closed and cuda.live_buffers == 0 and cuda.released
    with pytest.raises(CudaError, match="closed"):
        cuda.device_alloc(4)


def test_cuda_mem_refuses_other_threads() -> None:
    import threading

    cuda = NumpyCuda()
    errors = []

    def worker() -> None:
        try:
            cuda.device_alloc(4)
        except CudaError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert errors and "does not own its CUDA context" in errors[0]
    cuda.close()


# --------------------------------------------------------------------------------------------
# the build code path
# --------------------------------------------------------------------------------------------


def make_fake_builder_trt(version: str = "10.13.0.35", strongly_typed_flag: bool = True) -> types.SimpleNamespace:
    trt = types.SimpleNamespace(__version__=version, calls=[])
    if strongly_typed_flag:
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=_Enum("STRONGLY_TYPED", 1))
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=_Enum("WORKSPACE"))
    trt.BuilderFlag = types.SimpleNamespace(VERSION_COMPATIBLE=_Enum("VERSION_COMPATIBLE"))
    trt.HardwareCompatibilityLevel = types.SimpleNamespace(
        AMPERE_PLUS=_Enum("AMPERE_PLUS"), SAME_COMPUTE_CAPABILITY=_Enum("SAME_COMPUTE_CAPABILITY")
    )

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Tensor:
        name, shape = "images", (-1, 3, 32, 32)

    class Network:
        num_inputs = 1

        def get_input(self, i):
            return Tensor()

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            trt.calls.append(("parse_from_file", Path(path).name))
            return True

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"CACHE" + self.data

    class Config:
        def __init__(self):
            self.hardware_compatibility_level = None
            self.cache = None

        def set_memory_pool_limit(self, pool, size):
            trt.calls.append(("workspace", size))

        def set_flag(self, flag):
            trt.calls.append(("flag", flag.name))

        def add_optimization_profile(self, profile):
            trt.calls.append(("profile", dict(profile.shapes)))

        def create_timing_cache(self, data):
            return Cache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (list(lo), list(opt), list(hi))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            trt.calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            trt.config = Config()
            return trt.config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"PLAN-serialized"

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, Parser
    return trt


MACHINE = MachineInfo("10.13.0.35", "NVIDIA Jetson Orin", "8.7")


def test_build_engine_strongly_typed_with_profile_cache_and_sidecar(tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"onnx bytes")
    cache = tmp_path / "orin.timing"
    trt = make_fake_builder_trt()
    options = BuildOptions(batch=(1, 2, 4), workspace_mb=256, timing_cache=cache, version_compatible=True,
                           hardware_compat="ampere+", precision="int8")
    sidecar = build_engine(onnx_path, tmp_path / "m.engine", options, trt_module=trt, machine=MACHINE)
    assert ("create_network", 2) in trt.calls  # 1 << STRONGLY_TYPED
    assert ("workspace", 256 << 20) in trt.calls
    assert ("flag", "VERSION_COMPATIBLE") in trt.calls
    assert trt.config.hardware_compatibility_level.name == "AMPERE_PLUS"
    assert ("profile", {"images": ([1, 3, 32, 32], [2, 3, 32, 32], [4, 3, 32, 32])}) in trt.calls
    assert cache.read_bytes() == b"CACHE"
    assert (tmp_path / "m.engine").read_bytes() == b"PLAN-serialized"
    assert load_sidecar(tmp_path / "m.engine") == sidecar
    assert sidecar.precision == "int8" and sidecar.profile["images"].max == [4, 3, 32, 32]
    assert validate_engine(tmp_path / "m.engine", onnx_path, MACHINE) == sidecar


def test_build_engine_on_tensorrt_11_without_the_flag(tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"onnx bytes")
    trt = make_fake_builder_trt("11.4.0.106", strongly_typed_flag=False)
    build_engine(onnx_path, tmp_path / "m.engine", BuildOptions(), trt_module=trt, machine=MACHINE)
    assert ("create_network", 0) in trt.calls


def test_build_engine_refuses_runtime_only_tensorrt(tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"x")
    lean = types.SimpleNamespace(__version__="11.4.0.106", Runtime=object)
    with pytest.raises(FinprintError, match="no builder"):
        build_engine(onnx_path, tmp_path / "m.engine", trt_module=lean, machine=MACHINE)


def test_profile_for_dynamic_axes() -> None:
    opts = BuildOptions(batch=(1, 4, 8), input_shapes={"images": ["batch", 3, 320, 320]})
    p = profile_for("images", [-1, 3, -1, -1], opts)
    assert p.min == [1, 3, 320, 320] and p.opt == [4, 3, 320, 320] and p.max == [8, 3, 320, 320]
    with pytest.raises(FinprintError, match="axis 2 is dynamic"):
        profile_for("images", [-1, 3, -1, -1], BuildOptions())
    with pytest.raises(FinprintError, match="MIN,OPT,MAX"):
        BuildOptions(batch=(4, 2, 8))
