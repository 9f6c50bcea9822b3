"""Engine sidecars: what an engine was built for, refusal with a message that says what to run,
and `ensure_engine` building once under a lock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finprint.errors import FinprintError
from finprint.runtime.manifest import sha256_file
from finprint.runtime.sidecar import (
    MachineInfo,
    ProfileShapes,
    Sidecar,
    ensure_engine,
    load_sidecar,
    save_sidecar,
    sidecar_path_for,
    sidecar_problems,
    validate_engine,
)

ORIN = MachineInfo("10.3.0.30", "Orin", "8.7")


def fake_build(onnx: Path, engine: Path, manifest=None, machine: MachineInfo = ORIN, **changes) -> Sidecar:
    """What build_engine leaves behind, without TensorRT: engine bytes + a sidecar."""
    engine.write_bytes(b"PLAN" + onnx.read_bytes())
    fields = dict(
        tensorrt_version=machine.tensorrt_version,
        gpu_name=machine.gpu_name,
        compute_capability=machine.compute_capability,
        platform=machine.platform,
        onnx_file=onnx.name,
        onnx_sha256=sha256_file(onnx),
        engine_sha256=sha256_file(engine),
        engine_bytes=engine.stat().st_size,
        profile={"images": ProfileShapes(min=[1, 3, 32, 32], opt=[8, 3, 32, 32], max=[8, 3, 32, 32])},
        precision="int8",
        build_time="2026-01-01T00:00:00+00:00",
    )
    fields.update(changes)
    sidecar = Sidecar(**fields)
    save_sidecar(sidecar, engine)
    return sidecar


@pytest.fixture()
def built(tmp_path: Path) -> tuple[Path, Path]:
    onnx = tmp_path / "det.int8.onnx"
    onnx.write_bytes(b"onnx model bytes")
    engine = tmp_path / "det.int8.engine"
    fake_build(onnx, engine)
    return onnx, engine


def test_round_trip_and_valid_engine(built) -> None:
    onnx, engine = built
    assert sidecar_path_for(engine).name == "det.int8.engine.json"
    sidecar = validate_engine(engine, onnx, ORIN)
    assert sidecar == load_sidecar(engine)
    assert json.loads(sidecar_path_for(engine).read_text())["compute_capability"] == "8.7"


@pytest.mark.parametrize(
    ("machine", "message"),
    [
        (MachineInfo("10.13.0.35", "Orin", "8.7"), "built with TensorRT 10.3.0.30, this machine has 10.13.0.35"),
        (MachineInfo("10.3.0.30", "NVIDIA H100", "9.0"), "built for compute capability 8.7 (Orin), this GPU is 9.0"),
    ],
)
def test_engine_from_another_tensorrt_or_gpu_is_refused_with_the_fix(built, machine, message) -> None:
    onnx, engine = built
    with pytest.raises(FinprintError) as info:
        validate_engine(engine, onnx, machine)
    text = str(info.value)
    assert message in text
    assert f"finprint build-engine --onnx {onnx} --out {engine}" in text


def test_version_and_hardware_compatible_engines_are_accepted(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"m")
    engine = tmp_path / "m.engine"
    sidecar = fake_build(onnx, engine, version_compatible=True, hardware_compat="ampere+")
    newer_minor = MachineInfo("10.13.0.35", "NVIDIA H100", "9.0")
    assert sidecar_problems(sidecar, newer_minor) == []
    older = MachineInfo("10.1.0.0", "Orin", "8.7")
    assert "built with TensorRT" in sidecar_problems(sidecar, older)[0]
    next_major = MachineInfo("11.4.0.106", "Orin", "8.7")
    assert sidecar_problems(sidecar, next_major)
    turing = MachineInfo("10.3.0.30", "T4", "7.5")
    assert "compute capability" in sidecar_problems(sidecar, turing)[0]


def test_truncated_engine_file_is_refused(built) -> None:
    onnx, engine = built
    engine.write_bytes(engine.read_bytes()[:6])
    with pytest.raises(FinprintError, match="truncated or replaced"):
        validate_engine(engine, onnx, ORIN)


def test_engine_for_another_onnx_is_refused(built) -> None:
    onnx, engine = built
    onnx.write_bytes(b"a re-exported model")
    with pytest.raises(FinprintError, match="built from an ONNX with sha256"):
        validate_engine(engine, onnx, ORIN)


def test_missing_or_corrupt_sidecar(built) -> None:
    onnx, engine = built
    sidecar_path_for(engine).write_text("{not json")
    with pytest.raises(FinprintError, match="unreadable engine sidecar"):
        validate_engine(engine, onnx, ORIN)
    sidecar_path_for(engine).unlink()
    with pytest.raises(FinprintError, match="no sidecar"):
        validate_engine(engine, onnx, ORIN)
    with pytest.raises(FinprintError, match="engine file not found"):
        validate_engine(engine.with_name("nope.engine"), onnx, ORIN)


def test_ensure_engine_builds_when_missing_or_stale_and_reuses_when_valid(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"v1")
    engine = tmp_path / "m.engine"
    builds: list[str] = []

    def builder(o: Path, e: Path, manifest) -> Sidecar:
        builds.append(o.read_text())
        return fake_build(o, e)

    ensure_engine(onnx, engine, machine=ORIN, builder=builder)
    ensure_engine(onnx, engine, machine=ORIN, builder=builder)
    assert builds == ["v1"]
    onnx.write_bytes(b"v2")  # re-exported: the engine is stale
    assert ensure_engine(onnx, engine, machine=ORIN, builder=builder).onnx_sha256 == sha256_file(onnx)
    assert builds == ["v1", "v2"]
    with pytest.raises(FinprintError, match="ONNX file not found"):
        ensure_engine(tmp_path / "gone.onnx", engine, machine=ORIN, builder=builder)


def test_ensure_engine_rejects_a_builder_that_leaves_a_bad_engine(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"v1")
    engine = tmp_path / "m.engine"

    def wrong_gpu(o: Path, e: Path, manifest) -> Sidecar:
        return fake_build(o, e, machine=MachineInfo("10.3.0.30", "T4", "7.5"))

    with pytest.raises(FinprintError, match="cannot be used here"):
        ensure_engine(onnx, engine, machine=ORIN, builder=wrong_gpu)


CHILD = """
import sys, time
from pathlib import Path
from finprint.errors import FinprintError
from finprint.runtime.manifest import sha256_file
from finprint.runtime.sidecar import MachineInfo, ProfileShapes, Sidecar, ensure_engine, save_sidecar

ORIN = MachineInfo("10.3.0.30", "Orin", "8.7")

def slow_builder(o, e, manifest):
    with open(o.with_name("builds.log"), "a") as fh:
        fh.write("build\\n")
    time.sleep(1.0)  # long enough that the second process arrives while the first builds
    e.write_bytes(b"PLAN" + o.read_bytes())
    sc = Sidecar(tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7", onnx_file=o.name,
                 platform=ORIN.platform,
                 onnx_sha256=sha256_file(o), engine_sha256=sha256_file(e), engine_bytes=e.stat().st_size,
                 profile={}, precision="fp32", build_time="2026-01-01T00:00:00+00:00")
    save_sidecar(sc, e)
    return sc

try:
    ensure_engine(sys.argv[1], sys.argv[2], machine=ORIN, builder=slow_builder, lock_timeout_s=float(sys.argv[3]))
except FinprintError as exc:
    print(exc)
    sys.exit(3)
"""


def _child(tmp_path: Path, onnx: Path, engine: Path, timeout_s: float) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return subprocess.Popen(
        [sys.executable, str(script), str(onnx), str(engine), str(timeout_s)], stdout=subprocess.PIPE, text=True
    )


def test_two_processes_build_once(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"v1")
    engine = tmp_path / "m.engine"
    procs = [_child(tmp_path, onnx, engine, 60) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert (tmp_path / "builds.log").read_text() == "build\n"
    validate_engine(engine, onnx, ORIN)


def test_ensure_engine_lock_timeout_says_what_to_do(tmp_path: Path) -> None:
    from filelock import FileLock

    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"v1")
    engine = tmp_path / "m.engine"
    with FileLock(str(tmp_path / "m.engine.lock")):
        proc = _child(tmp_path, onnx, engine, 0.3)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 3 and "delete the lock file" in out
    assert not engine.exists()


def test_ensure_engine_refuses_an_unwritable_engine_folder_with_one_finprint_error(tmp_path: Path, monkeypatch) -> None:
    """Under systemd's ProtectSystem=strict the model folder is read-only: an engine (and its lock) cannot
    go beside the ONNX. Refused with a FinprintError before anything is built, not an OSError traceback."""
    from finprint.runtime import sidecar as sidecar_module

    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"v1")
    builds: list[Path] = []

    def builder(o: Path, e: Path, manifest) -> Sidecar:
        builds.append(e)
        return fake_build(o, e)

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")  # a file where the folder should be: stops root as well
    with pytest.raises(FinprintError, match="cannot create the engine folder"):
        ensure_engine(onnx, blocker / "engines" / "m.engine", machine=ORIN, builder=builder)
    read_only = tmp_path / "models"
    read_only.mkdir()
    real_access = sidecar_module.os.access
    # a read-only mount (EROFS) as root sees it; chmod would not stop root
    monkeypatch.setattr(sidecar_module.os, "access", lambda p, mode: False if Path(p) == read_only else real_access(p, mode))
    with pytest.raises(FinprintError, match="models: the engine folder is not writable"):
        ensure_engine(onnx, read_only / "m.engine", machine=ORIN, builder=builder)
    assert builds == [] and list(read_only.iterdir()) == []
    fake_build(onnx, read_only / "m.engine")  # a valid engine there (copied in, say) needs nothing written
    assert ensure_engine(onnx, read_only / "m.engine", machine=ORIN, builder=builder).onnx_file == "m.onnx"
    assert builds == [] and not (read_only / "m.engine.lock").exists()
