"""`python tests/fakes/run_on_fakes.py <finprint arguments>`: the finprint CLI with fake pycuda and TensorRT 10.3.

For tests that run the real CLI (the daemon, build-engine) on the TensorRT backend without a GPU; the
process aborts at exit, as pycuda's module cleanup does, if a CUDA context is left on a thread's stack.
FAKE_TRT_VERSION picks the fake TensorRT's version; FAKE_CUDART=works adds the fake cuda-python, =fails one
that cannot start.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fake_gpu  # noqa: E402 - found through the path set just above

cuda = fake_gpu.install(sys.modules, trt_version=os.environ.get("FAKE_TRT_VERSION", "10.3.0.30"),
                        cudart=os.environ.get("FAKE_CUDART", "absent"))
cuda.exit_check()

from finprint.cli import main  # noqa: E402 - after the fakes are in place

sys.exit(main(sys.argv[1:]))
