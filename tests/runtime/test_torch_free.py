"""runtime/ is what the edge box runs: it imports no torch, directly or through anything it imports (a Jetson runs
it without), nothing the `runtime` extra does not install, and no other finprint layer."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import finprint.runtime

MODULES = sorted(
    f"finprint.runtime.{m.name}" for m in pkgutil.iter_modules([str(Path(finprint.runtime.__file__).parent)])
)
# Installed by the `train` extra (and so here), never by `runtime`: importing one from runtime/ would fail on the box.
TRAIN_ONLY = ("torch", "torchvision", "torchao", "onnx", "onnxscript", "pycocotools", "matplotlib")
# The finprint packages runtime/ may import besides itself.
ALLOWED = ("finprint", "finprint.runtime", "finprint.data", "finprint.errors")


def test_every_runtime_module_imports_without_torch():
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "    assert 'torch' not in sys.modules, name\n"
        "print(len(sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert MODULES, "no runtime modules found"


def test_runtime_imports_with_only_the_runtime_extra_and_no_other_finprint_layer():
    # A meta-path finder that refuses the train extra's packages, as a box with only `finprint[runtime]` would.
    code = (
        "import importlib, importlib.abc, sys\n"
        f"BLOCKED = {TRAIN_ONLY!r}\n"
        "class Blocker(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'blocked: {name} is not in the runtime extra', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Blocker())\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        f"allowed = {ALLOWED!r}\n"
        "outside = sorted(m for m in sys.modules if m.startswith('finprint')\n"
        "                 and not any(m == a or m.startswith(a + '.') for a in allowed[1:]) and m != 'finprint')\n"
        "assert not outside, outside\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
