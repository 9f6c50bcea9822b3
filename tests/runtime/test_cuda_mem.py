"""The CUDA buffer layer: clean refusal without CUDA here; real round trips on a GPU (gpu-marked)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from finprint.errors import FinprintError
from finprint.runtime import cuda_mem
from finprint.runtime.cuda_mem import IMPLEMENTATIONS, CudaError, open_cuda


def test_unknown_implementation_is_refused() -> None:
    with pytest.raises(FinprintError, match="unknown CUDA implementation 'opencl'"):
        open_cuda("opencl")


def test_missing_bindings_give_one_reason_per_implementation(monkeypatch) -> None:
    monkeypatch.setattr(cuda_mem, "_importable", lambda impl: f"{impl} is not installed (test)")
    with pytest.raises(CudaError) as info:
        open_cuda("auto")
    assert "cuda-python is not installed" in str(info.value) and "pycuda is not installed" in str(info.value)
    reason = cuda_mem.cuda_unavailable_reason()
    assert reason is not None and "finprint[gpu]" in reason


def _usable(impl: str) -> bool:
    return cuda_mem._importable(impl) is None


@pytest.mark.gpu
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_round_trip_through_the_device(impl: str) -> None:
    if not _usable(impl):
        pytest.skip(f"{impl} not importable here")
    with open_cuda(impl) as cuda:
        info = cuda.device_info()
        assert info.name and "." in info.compute_capability
        src = cuda.host_alloc((1024,), np.float32)
        src[:] = np.arange(1024, dtype=np.float32)
        dst = cuda.host_alloc((1024,), np.float32)
        buf = cuda.device_alloc(src.nbytes)
        for _ in range(3):  # reuse the same buffers: nothing per iteration
            cuda.copy_to_device(buf, src)
            cuda.copy_to_host(dst, buf)
            cuda.synchronize()
            np.testing.assert_array_equal(dst, src)
        assert cuda.stream_handle != 0 or impl == "pycuda"
        assert cuda.live_buffers == 3
    assert cuda.closed and cuda.live_buffers == 0


@pytest.mark.gpu
def test_pycuda_shutdown_leaves_no_context_on_the_stack() -> None:
    if not _usable("pycuda"):
        pytest.skip("pycuda not importable here")
    code = (
        "import numpy as np\n"
        "from finprint.runtime.cuda_mem import open_cuda\n"
        "cuda = open_cuda('pycuda')\n"
        "b = cuda.device_alloc(64)\n"
        "cuda.close()\n"
        "print('closed')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "context stack was not empty" not in proc.stderr
