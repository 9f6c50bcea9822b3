"""The TensorRT code uses only API that exists (10.13's stubs) and none that TensorRT 10/11 removed.

TensorRT cannot be installed here, so the code is checked statically against `tensorrt-stubs`
(the 10.13 API as .pyi files). The stubs are fetched with `pip download --no-deps` into a cache
folder and extracted there; they are never installed, since an installed `tensorrt-stubs` makes
`import tensorrt` succeed as an empty package.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STUBS_VERSION = "10.13.0.35.1"
TRT_MODULES = ["runtime/trt_engine.py", "runtime/trt_build.py", "runtime/sidecar.py", "export/cli_build_engine.py"]
# The modules that hold TensorRT objects in the variables below (cli_build_engine's `parser` is argparse's).
TRT_OBJECT_MODULES = ["runtime/trt_engine.py", "runtime/trt_build.py"]

# Variables that hold TensorRT objects in those modules -> the stub class they are.
OBJECT_CLASSES = {
    "builder": "Builder",
    "network": "INetworkDefinition",
    "parser": "OnnxParser",
    "config": "IBuilderConfig",
    "trt_config": "IBuilderConfig",
    "profile": "IOptimizationProfile",
    "cache": "ITimingCache",
    "tensor": "ITensor",
    "engine": "ICudaEngine",
    "_engine": "ICudaEngine",
    "_runtime": "Runtime",
    "_context": "IExecutionContext",
}

# Removed in TensorRT 10 or 11 (or deprecated on the way there): must not appear in our code.
REMOVED = re.compile(
    r"IInt8\w*Calibrator|int8_calibrator|BuilderFlag\.(INT8|FP16)|EXPLICIT_BATCH|execute_async_v2|\bexecute_v2\b"
    r"|get_binding_\w+|binding_is_input|num_bindings|max_workspace_size|builder\.build_engine\b"
)


def _cache_dir() -> Path:
    root = Path(os.environ.get("FINPRINT_CACHE", Path.home() / ".cache" / "finprint"))
    return root / f"tensorrt-stubs-{STUBS_VERSION}"


def _fetch_stubs() -> Path:
    target = _cache_dir()
    pyi = target / "tensorrt_bindings" / "tensorrt.pyi"
    if pyi.is_file():
        return target
    download = target.with_name(target.name + ".download")
    download.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(download),
         f"tensorrt-stubs=={STUBS_VERSION}"],
        capture_output=True, text=True, timeout=180,
    )
    wheels = sorted(download.glob("tensorrt_stubs-*.whl"))
    if proc.returncode != 0 or not wheels:
        pytest.skip(f"tensorrt-stubs=={STUBS_VERSION} could not be downloaded: {proc.stderr.strip()[-300:]}")
    with zipfile.ZipFile(wheels[0]) as zf:
        zf.extractall(target)
    return target


def _parse_lenient(path: Path) -> ast.Module:
    """The stubs have a few syntax slips (a parameter named `in`, a default before a non-default):
    replace such a def's signature with `(self, *args, **kwargs)` and keep its members."""
    lines = path.read_text().splitlines()
    for _ in range(100):
        try:
            return ast.parse("\n".join(lines))
        except SyntaxError as exc:
            line = lines[exc.lineno - 1]
            match = re.match(r"(\s*)def (\w+)\(", line)
            if not match:
                raise
            lines[exc.lineno - 1] = f"{match.group(1)}def {match.group(2)}(self, *args, **kwargs):"
    raise AssertionError(f"{path}: too many syntax errors")


class StubApi:
    def __init__(self, root: Path) -> None:
        tree = _parse_lenient(root / "tensorrt_bindings" / "tensorrt.pyi")
        self.classes: dict[str, ast.ClassDef] = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        self.module_names = set(self.classes) | {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        init = ast.parse((root / "tensorrt" / "__init__.pyi").read_text())
        for node in ast.walk(init):
            if isinstance(node, ast.ImportFrom):
                self.module_names.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.FunctionDef):
                self.module_names.add(node.name)

    def members(self, cls: str) -> set[str]:
        node = self.classes[cls]
        out: set[str] = set()
        for item in node.body:
            if isinstance(item, ast.FunctionDef):
                out.add(item.name)
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                out.add(item.target.id)
            elif isinstance(item, ast.Assign):
                out.update(t.id for t in item.targets if isinstance(t, ast.Name))
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id in self.classes:
                out |= self.members(base.id)
        return out


@pytest.fixture(scope="module")
def api() -> StubApi:
    return StubApi(_fetch_stubs())


def _trt_chains(tree: ast.AST) -> list[tuple[str, ...]]:
    """Every `trt.X` / `trt.X.Y` in a module, outermost chain only."""
    chains = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts, cur = [], node
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id == "trt":
                chains.append(tuple(reversed(parts)))
    return sorted({c[:2] for c in chains})


def _object_uses(tree: ast.AST) -> list[tuple[str, str]]:
    """(stub class, attribute) for every attribute read on a variable that holds a TensorRT object."""
    uses = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        holder = node.value
        if isinstance(holder, ast.Name):
            name = holder.id
        elif isinstance(holder, ast.Attribute) and isinstance(holder.value, ast.Name) and holder.value.id == "self":
            name = holder.attr
        else:
            continue
        if name in OBJECT_CLASSES:
            uses.append((OBJECT_CLASSES[name], node.attr))
    return sorted(set(uses))


def test_every_trt_name_we_use_exists_in_the_stubs(api: StubApi) -> None:
    missing, checked = [], 0
    for rel in TRT_MODULES:
        tree = ast.parse((REPO / rel).read_text())
        for chain in _trt_chains(tree):
            checked += 1
            head = chain[0]
            if head.startswith("__"):  # __version__ is set at import, not declared in the stubs
                continue
            if head not in api.module_names:
                missing.append(f"{rel}: trt.{head}")
            elif len(chain) > 1 and head in api.classes and chain[1] not in api.members(head):
                missing.append(f"{rel}: trt.{head}.{chain[1]}")
    assert checked >= 15, "the scan found too few TensorRT names: is TRT_MODULES right?"
    assert not missing, missing


def test_every_method_we_call_on_trt_objects_exists(api: StubApi) -> None:
    missing, seen = [], set()
    for rel in TRT_OBJECT_MODULES:
        for cls, attr in _object_uses(ast.parse((REPO / rel).read_text())):
            seen.add(attr)
            if attr not in api.members(cls):
                missing.append(f"{rel}: {cls}.{attr}")
    # the run path and the build path must both have been seen by the scan
    assert {"execute_async_v3", "set_tensor_address", "set_input_shape", "get_tensor_name",
            "build_serialized_network", "set_memory_pool_limit", "parse_from_file"} <= seen
    assert not missing, missing


def test_no_removed_tensorrt_api_is_referenced() -> None:
    hits = []
    for folder in ("runtime", "export"):
        for path in sorted((REPO / folder).glob("*.py")):
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                if REMOVED.search(line):
                    hits.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not hits, hits


def test_removed_names_are_really_absent_or_deprecated_upstream(api: StubApi) -> None:
    # Guard the guard: the pattern must match names the 10.13 stubs still carry as deprecated.
    assert "IInt8EntropyCalibrator2" in api.module_names
    assert REMOVED.search("config.set_flag(trt.BuilderFlag.INT8)")
    assert REMOVED.search("context.execute_async_v2(bindings, stream)")
    assert not REMOVED.search("context.execute_async_v3(stream)")


def test_run_path_exists_in_a_real_tensorrt_11_lean_runtime_if_installed() -> None:
    """TensorRT 11's lean runtime (`pip install tensorrt-lean-cu13`, no GPU needed to import) must
    carry every name the run path uses: one code path for 10.x and 11.x."""
    import importlib

    for name in ("tensorrt_lean", "tensorrt_lean_bindings"):
        try:
            lean = importlib.import_module(name)
            break
        except (ImportError, OSError):
            continue
    else:
        pytest.skip("no TensorRT lean runtime importable here (pip install tensorrt-lean-cu13 to run this)")
    tree = ast.parse((REPO / "runtime" / "trt_engine.py").read_text())
    missing = []
    for chain in _trt_chains(tree):
        obj = lean
        for part in chain:
            if not hasattr(obj, part):
                missing.append("trt." + ".".join(chain))
                break
            obj = getattr(obj, part)
    for cls, attr in _object_uses(tree):
        if not hasattr(getattr(lean, cls), attr):
            missing.append(f"{cls}.{attr}")
    assert not missing, missing
    from finprint.runtime.trt_engine import trt_dtype

    assert trt_dtype(lean.DataType.HALF).name == "float16"


# ---------------------------------------------------------------------------------------------------
# TensorRT 10.3 (JetPack 6.1/6.2): the oldest TensorRT finprint runs on
# ---------------------------------------------------------------------------------------------------

NAMES_10_3 = Path(__file__).with_name("trt_10_3_names.txt")  # made by tests/export/make_trt_names.py
VERSION_CHECKS = {"trt_version"}  # a name used inside `if trt_version(trt) >= (...):` may be newer than 10.3


def _names_10_3() -> set[str]:
    """Every suffix of every listed name: the linker stores "Logger" inside "ILogger" (make_trt_names.py)."""
    entries = [line for line in NAMES_10_3.read_text().splitlines() if line and not line.startswith("#")]
    return {entry[i:] for entry in entries for i in range(len(entry))}


def _gated(ancestors: list[ast.AST], node: ast.AST) -> bool:
    """Inside the body of an `if` that tests the TensorRT version."""
    for parent, child in zip(ancestors, [*ancestors[1:], node], strict=True):
        if isinstance(parent, ast.If) and child in parent.body:
            calls = [n for n in ast.walk(parent.test) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
            if any(c.func.id in VERSION_CHECKS for c in calls):
                return True
    return False


def _trt_names_on_the_10x_path(tree: ast.AST, objects: bool = True) -> tuple[set[str], set[str]]:
    """(names used unconditionally, names used only behind a version check): every part of every `trt.X.Y`
    chain and (with `objects`) every attribute read on a variable that holds a TensorRT object."""
    used, gated = set(), set()

    def visit(node: ast.AST, ancestors: list[ast.AST]) -> None:
        if isinstance(node, ast.Attribute):
            parts, cur = [], node
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            holder = cur.id if isinstance(cur, ast.Name) else None
            if isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name) \
                    and node.value.value.id == "self":
                holder, parts = node.value.attr, [node.attr]
            if holder == "trt" or (objects and holder in OBJECT_CLASSES):
                names = {p for p in parts if not p.startswith("__")}
                (gated if _gated(ancestors, node) else used).update(names)
        for child in ast.iter_child_nodes(node):
            visit(child, [*ancestors, node])

    visit(tree, [])
    return used, gated - used


def test_every_trt_name_on_the_10x_path_exists_in_tensorrt_10_3() -> None:
    known = _names_10_3()
    missing, gated_seen = [], set()
    for rel in TRT_MODULES:  # in the other modules `parser` and friends are argparse's: only `trt.*` there
        used, gated = _trt_names_on_the_10x_path(ast.parse((REPO / rel).read_text()), rel in TRT_OBJECT_MODULES)
        if rel in TRT_OBJECT_MODULES:
            assert {"execute_async_v3", "set_tensor_address", "STRONGLY_TYPED", "create_timing_cache"} & used
        missing += [f"{rel}: {name}" for name in sorted(used) if name not in known]
        gated_seen |= gated
    assert not missing, f"not in TensorRT 10.3 and not behind a version check: {missing}"
    # the oracle can say no: the one newer name finprint uses is absent from 10.3 and used behind its check
    assert "SAME_COMPUTE_CAPABILITY" not in known and "SAME_COMPUTE_CAPABILITY" in gated_seen
    assert {"AMPERE_PLUS", "get_tensor_profile_shape", "engine_host_code_allowed"} <= known


def test_the_fake_tensorrt_has_only_tensorrt_10_3_names() -> None:
    """tests/fakes' TensorRT stands in for JetPack's 10.3: a name it offers that 10.3 lacks would hide a bug."""
    sys.path.insert(0, str(REPO / "tests" / "fakes"))
    import fake_gpu

    trt = fake_gpu.make_fake_tensorrt(fake_gpu.FakePycuda())
    known = _names_10_3()
    offered = {name for name in vars(trt) if not name.startswith("_") and name not in ("loggers", "errors")}
    for enum in ("DataType", "TensorIOMode", "NetworkDefinitionCreationFlag", "MemoryPoolType", "BuilderFlag",
                 "HardwareCompatibilityLevel"):
        offered |= set(vars(getattr(trt, enum)))
    assert sorted(n for n in offered if n not in known) == []
