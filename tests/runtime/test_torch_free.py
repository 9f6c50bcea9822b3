"""runtime/ must import no torch, directly or through anything it imports (a Jetson runs it without)."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import finprint.runtime

MODULES = sorted(
    f"finprint.runtime.{m.name}" for m in pkgutil.iter_modules([str(Path(finprint.runtime.__file__).parent)])
)


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
