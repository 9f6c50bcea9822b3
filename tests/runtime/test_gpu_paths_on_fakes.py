"""The TensorRT and CUDA paths end to end on fakes that behave like pycuda and TensorRT 10.3 (tests/fakes).

No GPU here: these runs are what catches a context current on the wrong thread, a context stack popped
out of order, a buffer or engine left open, a name TensorRT 10.3 lacks, or a stream left with queued work.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from finprint.errors import FinprintError
from finprint.runtime import cuda_mem
from finprint.runtime.crops import EMBED_HEIGHT, EMBED_WIDTH
from finprint.runtime.cuda_mem import CudaError, open_cuda
from finprint.runtime.manifest import load_manifest, manifest_path_for, save_manifest
from finprint.runtime.sidecar import load_sidecar, save_sidecar, sidecar_path_for
from finprint.runtime.store import Store
from finprint.testing import make_toy_detector, make_toy_embedder

FAKES = Path(__file__).resolve().parents[1] / "fakes"
sys.path.insert(0, str(FAKES))
import fake_gpu  # noqa: E402 - tests/fakes, found through the path set just above

W, H = 160, 120


@pytest.fixture()
def gpu(monkeypatch) -> fake_gpu.FakePycuda:
    """Fake pycuda + TensorRT 10.3 in sys.modules for this test; nothing may be left behind at its end."""
    modules: dict = {}
    cuda = fake_gpu.install(modules)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delenv("FINPRINT_CUDA", raising=False)
    yield cuda
    assert getattr(cuda_mem, "_SHARED", {}) == {}, "a shared CUDA layer was never released"


@pytest.fixture(params=["pycuda", "cuda-python"])
def any_layer(request, monkeypatch) -> fake_gpu.FakePycuda:
    """As `gpu`, once through each CUDA layer (the fake cuda-python runs on the same fake device)."""
    modules: dict = {}
    cuda = fake_gpu.install(modules, cudart="works")
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("FINPRINT_CUDA", request.param)
    yield cuda
    assert getattr(cuda_mem, "_SHARED", {}) == {}, "a shared CUDA layer was never released"


def _embedder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return make_toy_embedder(folder / "emb.onnx", dim=16)


def _crops(n: int, value: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(n)
    return (rng.random((n, 3, EMBED_HEIGHT, EMBED_WIDTH), dtype=np.float32) * value).astype(np.float32)


def _open(onnx: Path, engine: Path):
    from finprint.runtime.engines import open_engine

    return open_engine(onnx, "tensorrt", engine_path=engine)


# ----------------------------------------------------------------------------------------------------
# the fakes themselves must bite
# ----------------------------------------------------------------------------------------------------


def test_the_fake_pycuda_behaves_like_pycuda_where_it_matters(gpu) -> None:
    drv = gpu.driver
    with pytest.raises(drv.LogicError, match="cannot pop non-current context"):
        drv.Context.pop()
    with pytest.raises(drv.LogicError, match="invalid device context"):
        drv.mem_alloc(16)  # no context current on this thread
    ctx = drv.Device(0).retain_primary_context()
    ctx.push()
    alloc = drv.mem_alloc(16)
    errors = []
    worker = threading.Thread(target=lambda: errors.append(_raises(lambda: drv.mem_alloc(16))))
    worker.start()
    worker.join()
    assert errors == ["LogicError"]  # the context is current on this thread only
    alloc.free()
    with pytest.raises(drv.LogicError, match="double free"):
        alloc.free()
    host = drv.pagelocked_empty((4,), np.float32)
    host.base.free()
    with pytest.raises(drv.LogicError, match="double free"):
        host.base.free()
    drv.Context.pop()
    ctx.detach()
    assert gpu.check_clean() == []


def _raises(fn) -> str | None:
    try:
        fn()
    except Exception as exc:  # the test wants the type's name, whatever it is
        return type(exc).__name__
    return None


# ----------------------------------------------------------------------------------------------------
# defect 3: two engines, one CUDA layer, closed in any order
# ----------------------------------------------------------------------------------------------------


def test_two_pycuda_engines_share_one_context_and_close_first_in_first_out(gpu, tmp_path: Path) -> None:
    onnx = _embedder(tmp_path / "m")
    first, second = _open(onnx, tmp_path / "a.engine"), _open(onnx, tmp_path / "b.engine")
    assert first._cuda.name == "pycuda"
    x = _crops(3)
    np.testing.assert_allclose(first.infer({"crops": x})["embedding"], second.infer({"crops": x})["embedding"])
    pushed = len(gpu.stack())
    first.close()  # first in, first out: pycuda's pop() would take the other engine's context
    np.testing.assert_allclose(second.infer({"crops": x})["embedding"], second.infer({"crops": x})["embedding"])
    second.close()
    assert gpu.check_clean() == []
    assert pushed == 1, "one shared layer pushes the primary context once"


def test_two_engines_on_either_layer_share_it_and_free_everything_once(any_layer, tmp_path: Path) -> None:
    onnx = _embedder(tmp_path / "m")
    first, second = _open(onnx, tmp_path / "a.engine"), _open(onnx, tmp_path / "b.engine")
    assert first._cuda is second._cuda and first._cuda.name == os.environ["FINPRINT_CUDA"]
    x = _crops(4)
    np.testing.assert_allclose(first.infer({"crops": x})["embedding"], second.infer({"crops": x})["embedding"])
    first.close()
    assert not second._cuda.closed and second.infer({"crops": x})["embedding"].shape == (4, 16)
    second.close()
    first.close()  # closing twice is harmless
    assert any_layer.check_clean() == []


def test_pipeline_on_tensorrt_closes_both_engines_cleanly(gpu, tmp_path: Path) -> None:
    from finprint.runtime.pipeline import Pipeline

    det = make_toy_detector(tmp_path / "det.onnx")
    emb = make_toy_embedder(tmp_path / "emb.onnx", dim=16)
    pipe = Pipeline(det, emb, "tensorrt", max_batch=2, engine_cache=tmp_path / "engines")
    assert (pipe.detector.backend, pipe.embedder.backend) == ("tensorrt", "tensorrt")
    image = np.full((H, W, 3), 40, np.uint8)
    results = pipe.process([image, image])
    assert [len(r.detections) for r in results] == [1, 1] and results[0].embeddings.shape == (1, 16)
    pipe.close()
    assert gpu.check_clean() == []
    assert len(sys.modules["tensorrt"].loggers) == 1  # defect 11: one trt.Logger per process


# ----------------------------------------------------------------------------------------------------
# defect 4: an engine refused by its manifest is never opened (no leak, no abort at exit)
# ----------------------------------------------------------------------------------------------------


def test_an_engine_refused_by_its_manifest_leaves_nothing_open(gpu, tmp_path: Path) -> None:
    from finprint.runtime.engines import open_engine
    from finprint.runtime.trt_build import BuildOptions, build_engine

    onnx = _embedder(tmp_path / "m")
    engine = tmp_path / "emb.engine"
    build_engine(onnx, engine, BuildOptions(batch=(1, 4, 4)))
    manifest = load_manifest(manifest_path_for(onnx))
    save_manifest(manifest.model_copy(update={"onnx_sha256": "0" * 64}), manifest_path_for(engine))
    with pytest.raises(FinprintError, match="other than the one its manifest describes"):
        open_engine(engine, "tensorrt")
    assert gpu.check_clean() == []


# ----------------------------------------------------------------------------------------------------
# defects 9 and 10: thread check before anything is touched; a failed execute synchronises first
# ----------------------------------------------------------------------------------------------------


def test_another_thread_is_refused_before_it_touches_buffers_or_the_context(any_layer, tmp_path: Path) -> None:
    eng = _open(_embedder(tmp_path / "m"), tmp_path / "e.engine")
    staging = eng._host["crops"]
    staging[:] = 7.0
    errors: list[str] = []

    def other() -> None:
        for call in (lambda: eng.infer({"crops": _crops(2)}), eng.close):
            try:
                call()
            except CudaError as exc:
                errors.append(str(exc))

    worker = threading.Thread(target=other)
    worker.start()
    worker.join()
    assert len(errors) == 2 and all("does not own its CUDA context" in e for e in errors)
    assert np.all(staging == 7.0), "the refused thread wrote the pinned staging buffer"
    assert eng.infer({"crops": _crops(2)})["embedding"].shape == (2, 16)  # still open and usable here
    eng.close()
    assert any_layer.check_clean() == []


def test_a_failed_execute_waits_for_its_queued_copies(any_layer, tmp_path: Path) -> None:
    eng = _open(_embedder(tmp_path / "m"), tmp_path / "e.engine")
    eng._context.execute_async_v3 = lambda stream: False  # TensorRT refused to enqueue, once
    with pytest.raises(FinprintError, match="execute_async_v3 failed") as info:
        eng.infer({"crops": _crops(2)})
    pending = any_layer.streams[eng._cuda.stream_handle].ops
    assert pending == [], "input copies still queued: the next frame would refill a buffer being read"
    assert isinstance(info.value, CudaError)  # fatal to the daemon, like any CUDA error on the worker
    del eng._context.execute_async_v3
    assert eng.infer({"crops": _crops(2)})["embedding"].shape == (2, 16)
    eng.close()
    assert any_layer.check_clean() == []


# ----------------------------------------------------------------------------------------------------
# defect 2: cuda-python that cannot start gives way to pycuda
# ----------------------------------------------------------------------------------------------------


def test_auto_falls_back_to_pycuda_when_cuda_python_cannot_start(gpu, monkeypatch, caplog) -> None:
    modules: dict = {}
    fake_gpu.fake_cudart_failing_start(modules)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    with caplog.at_level(logging.WARNING, logger="finprint.runtime.cuda_mem"):
        mem = open_cuda("auto")
    assert mem.name == "pycuda"
    assert any("cudaErrorInsufficientDriver" in r.getMessage() for r in caplog.records)
    mem.close()
    with pytest.raises(CudaError, match="cudaErrorInsufficientDriver"):
        open_cuda("cuda-python")  # asked for by name: no fallback
    assert gpu.check_clean() == []


# ----------------------------------------------------------------------------------------------------
# defects 5, 6, 8: the builder on TensorRT 10.3's names
# ----------------------------------------------------------------------------------------------------


def test_a_corrupt_timing_cache_is_replaced_with_a_fresh_one(gpu, tmp_path: Path, caplog) -> None:
    from finprint.runtime.trt_build import BuildOptions, build_engine

    onnx = _embedder(tmp_path / "m")
    cache = tmp_path / "orin.timing"
    cache.write_bytes(b"\x00garbage from a crashed write")
    with caplog.at_level(logging.WARNING):
        build_engine(onnx, tmp_path / "e.engine", BuildOptions(batch=(1, 2, 4), timing_cache=cache))
    assert any("timing cache is unreadable" in r.getMessage() for r in caplog.records)
    assert cache.read_bytes().startswith(fake_gpu.CACHE_MAGIC)
    assert gpu.check_clean() == []


def test_same_cc_needs_tensorrt_10_9_and_ampere_plus_works_on_10_3(gpu, tmp_path: Path) -> None:
    from finprint.runtime.trt_build import BuildOptions, build_engine

    onnx = _embedder(tmp_path / "m")
    with pytest.raises(FinprintError, match="same-cc needs TensorRT 10.9"):
        build_engine(onnx, tmp_path / "s.engine", BuildOptions(hardware_compat="same-cc"))
    assert not list(tmp_path.glob("s.engine*"))
    sidecar = build_engine(onnx, tmp_path / "a.engine", BuildOptions(batch=(1, 2, 4), hardware_compat="ampere+"))
    assert sidecar.hardware_compat == "ampere+" and sidecar.platform


def test_a_build_that_cannot_write_its_sidecar_leaves_no_engine(gpu, tmp_path: Path, monkeypatch) -> None:
    from finprint.runtime import trt_build
    from finprint.runtime.trt_build import BuildOptions, build_engine

    def disk_full(sidecar, engine_path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trt_build, "save_sidecar", disk_full)
    with pytest.raises(FinprintError, match="cannot write its sidecar"):
        build_engine(_embedder(tmp_path / "m"), tmp_path / "e.engine", BuildOptions(batch=(1, 2, 4)))
    assert not list(tmp_path.glob("e.engine*")), "an engine without its sidecar was left behind"


def test_tensorrt_8_is_refused_not_taken_for_11(gpu, tmp_path: Path) -> None:
    from finprint.runtime.trt_build import build_engine

    old = fake_gpu.make_fake_tensorrt(gpu, version="8.6.2.3")
    with pytest.raises(FinprintError, match="TensorRT 8.6.2.3 is too old.*JetPack 6.1"):
        build_engine(_embedder(tmp_path / "m"), tmp_path / "e.engine", trt_module=old)
    assert not list(tmp_path.glob("e.engine*"))


# ----------------------------------------------------------------------------------------------------
# the CLI: each refusal is one line and exit 2, with nothing half-written
# ----------------------------------------------------------------------------------------------------


def _fake_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, OMP_NUM_THREADS="1", FINPRINT_ORT_THREADS="1", **(env or {}))
    full_env.pop("FINPRINT_CUDA", None)
    return subprocess.run([sys.executable, str(FAKES / "run_on_fakes.py"), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def _one_line_exit_2(proc: subprocess.CompletedProcess, expected: str) -> None:
    """Exit 2 with one error line (after any INFO log lines), no traceback, nothing left to pycuda's exit."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in lines if line.startswith("finprint: error:")]
    assert errors == [lines[-1]] and expected in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr and "left behind" not in proc.stderr, proc.stderr


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_cli_refusals_are_one_line_exit_2_and_leave_nothing_behind(tmp_path: Path) -> None:
    onnx = _embedder(tmp_path / "models")
    before = _files(tmp_path)
    # an unwritable output folder (here: a path under a file, which stops root as well)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    before = _files(tmp_path)
    proc = _fake_cli("build-engine", "--onnx", str(onnx), "--out", str(blocker / "e.engine"))
    _one_line_exit_2(proc, "cannot create the engine folder")
    # TensorRT 8.x (JetPack 6.0)
    proc = _fake_cli("build-engine", "--onnx", str(onnx), "--out", str(tmp_path / "e.engine"),
                     env={"FAKE_TRT_VERSION": "8.6.2.3"})
    _one_line_exit_2(proc, "TensorRT 8.6.2.3 is too old")
    assert _files(tmp_path) == before
    # an engine built on another platform
    proc = _fake_cli("build-engine", "--onnx", str(onnx), "--out", str(tmp_path / "e.engine"), "--batch", "1,2,4")
    assert proc.returncode == 0, proc.stderr
    engine = tmp_path / "e.engine"
    sidecar = load_sidecar(engine)
    save_sidecar(sidecar.model_copy(update={"platform": "Windows-AMD64"}), engine)
    proc = _fake_cli("parity", "--onnx", str(onnx), "--engine", str(engine))
    _one_line_exit_2(proc, "built on Windows-AMD64, this machine is")
    assert "PyCUDA ERROR" not in proc.stderr


def test_cli_engine_refused_by_its_manifest_exits_2_instead_of_aborting_at_exit(tmp_path: Path) -> None:
    """An engine opened before its manifest refused it used to stay open: pycuda's exit cleanup then
    aborted the process (a core dump) where the user should get one line and exit 2."""
    onnx = _embedder(tmp_path / "models")
    engine = tmp_path / "emb.engine"
    proc = _fake_cli("build-engine", "--onnx", str(onnx), "--out", str(engine), "--batch", "1,2,4")
    assert proc.returncode == 0, proc.stderr
    manifest = load_manifest(manifest_path_for(engine))
    save_manifest(manifest.model_copy(update={"onnx_sha256": "f" * 64}), manifest_path_for(engine))
    proc = _fake_cli("parity", "--onnx", str(onnx), "--engine", str(engine))
    _one_line_exit_2(proc, "other than the one its manifest describes")
    assert "PyCUDA ERROR" not in proc.stderr


def test_cli_build_with_a_corrupt_timing_cache_warns_and_succeeds(tmp_path: Path) -> None:
    onnx = _embedder(tmp_path / "models")
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"truncated")
    proc = _fake_cli("build-engine", "--onnx", str(onnx), "--out", str(tmp_path / "e.engine"), "--batch", "1,2,4",
                     "--timing-cache", str(cache))
    assert proc.returncode == 0, proc.stderr
    assert "timing cache is unreadable" in proc.stderr
    assert cache.read_bytes().startswith(fake_gpu.CACHE_MAGIC)
    assert not list(tmp_path.glob("*.tmp"))
    json.loads(sidecar_path_for(tmp_path / "e.engine").read_text())


# ----------------------------------------------------------------------------------------------------
# defects 1 and 7: the daemon on TensorRT (two engines, the inference worker thread, SIGTERM)
# ----------------------------------------------------------------------------------------------------


def _frame(i: int) -> np.ndarray:
    img = np.full((H, W, 3), 40, np.uint8)
    img[40:70, 20:100] = (30, 140, 200)  # the fish the toy detector reports
    cv2.putText(img, str(i), (120, 110), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return img


@pytest.fixture(scope="module")
def farm(tmp_path_factory) -> Path:
    from finprint.runtime.pipeline import Pipeline

    root = tmp_path_factory.mktemp("trt-farm")
    models = root / "models"
    models.mkdir()
    det = make_toy_detector(models / "det.onnx")
    emb = make_toy_embedder(models / "emb.onnx", open_set_threshold=0.9)
    writer = cv2.VideoWriter(str(root / "pen.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
    for i in range(40):
        writer.write(_frame(i))
    writer.release()
    pipeline = Pipeline(det, emb, "cpu")
    store = Store(root / "template.db")
    store.enroll("fish007", pipeline.embed_crops([_frame(0)[40:70, 20:100]]), source="test")
    store.close()
    pipeline.close()
    return root


def _farm_config(farm: Path, folder: Path, **models) -> Path:
    (folder / "gallery.db").write_bytes((farm / "template.db").read_bytes())
    cfg = {
        "cameras": [{"id": "pen1", "source": str(farm / "pen.avi"), "loop": True, "px_per_cm": 4.0, "fps_limit": 100},
                    {"id": "pen2", "source": str(farm / "pen.avi"), "loop": True, "px_per_cm": 4.0, "fps_limit": 100}],
        "models": {"detector": str(farm / "models" / "det.onnx"), "embedder": str(farm / "models" / "emb.onnx"),
                   "backend": "tensorrt", "max_batch": 2, **models},
        "gallery": "gallery.db",
        "sinks": {"jsonl": "events.jsonl"},
        "http": {"enabled": False},
        "tracking": {"min_hits": 2},
    }
    path = folder / "farm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("layer", ["pycuda", "cuda-python"])
def test_daemon_on_tensorrt_fakes_gets_results_and_shuts_down_cleanly(farm: Path, tmp_path: Path, layer: str) -> None:
    models_before = _files(farm / "models")
    env = dict(os.environ, OMP_NUM_THREADS="1", FINPRINT_ORT_THREADS="1", FAKE_CUDART="works", FINPRINT_CUDA=layer)
    proc = subprocess.Popen([sys.executable, str(FAKES / "run_on_fakes.py"), "serve", "--config",
                             str(_farm_config(farm, tmp_path))], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    events = tmp_path / "events.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        lines = events.read_text().splitlines() if events.exists() else []
        if sum(json.loads(line)["type"] == "identified" for line in lines) >= 2:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert "inference failed" not in err and "PyCUDA ERROR" not in err and "left behind" not in err, err[-3000:]
    jsonl = [json.loads(line) for line in events.read_text().splitlines()]
    identified = [e for e in jsonl if e["type"] == "identified"]
    assert {e["camera"] for e in identified} == {"pen1", "pen2"}, "results from both cameras through TensorRT"
    assert all(e["individual_id"] == "fish007" for e in identified)
    assert [e["type"] for e in jsonl].count("track_end") >= 2  # open tracks closed and flushed on SIGTERM
    # defect 7: engines go to the cache beside the gallery, never into the (possibly read-only) model folder
    assert _files(farm / "models") == models_before
    assert sorted(p.name for p in (tmp_path / "engines").glob("*.engine")) == ["det.engine", "emb.engine"]


def test_serve_check_builds_into_the_engine_cache_and_refuses_an_unwritable_one(farm: Path, tmp_path: Path) -> None:
    models_before = _files(farm / "models")
    proc = _fake_cli("serve", "--config", str(_farm_config(farm, tmp_path)), "--check")
    assert proc.returncode == 0 and "tensorrt/tensorrt" in proc.stdout, proc.stderr[-2000:]
    assert _files(farm / "models") == models_before
    assert (tmp_path / "engines" / "det.engine.json").is_file()
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "file").write_text("x")
    proc = _fake_cli("serve", "--config", str(_farm_config(farm, blocked, engine_cache="file/engines")), "--check")
    _one_line_exit_2(proc, "cannot create the engine folder")
    assert _files(farm / "models") == models_before


def test_a_cuda_error_on_the_worker_stops_the_daemon_with_exit_1(farm: Path, tmp_path: Path, monkeypatch) -> None:
    from finprint.runtime.config import load_config
    from finprint.runtime.daemon import Daemon
    from finprint.runtime.pipeline import Pipeline

    process = Pipeline.process
    calls = []

    def broken(self, images):
        calls.append(len(images))
        if len(calls) == 1:  # open_pipeline's test inference on the worker passes; the first real batch fails
            return process(self, images)
        raise CudaError("cudaMemcpyAsync H2D failed: cudaErrorLaunchFailure: unspecified launch failure")

    monkeypatch.setattr(Pipeline, "process", broken)
    daemon = Daemon(load_config(_farm_config(farm, tmp_path, backend="cpu")))
    assert daemon.run_until_signalled(max_frames=200) == 1
    assert len(calls) == 2  # stopped at the first CUDA error, not counted as one more failed batch
    assert daemon.fatal is not None and "unspecified launch failure" in daemon.fatal
    assert daemon.inference_errors == 0


def test_gpu_check_runs_its_tensorrt_checks_on_the_fakes(tmp_path: Path) -> None:
    """scripts/gpu-check cannot run here; its dry run on tests/fakes keeps the script's own logic honest."""
    repo = FAKES.parents[1]
    env = dict(os.environ, GPU_CHECK_FAKES="1", GPU_CHECK_DIR=str(tmp_path), PYTHON=sys.executable,
               OMP_NUM_THREADS="1", FINPRINT_ORT_THREADS="1")
    proc = subprocess.run(["bash", str(repo / "scripts" / "gpu-check")], capture_output=True, text=True, env=env,
                          timeout=280)
    assert proc.returncode == 0 and "gpu-check: PASSED" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith(("tensorrt", "daemon"))]
    for check in ("tensorrt build+infer+parity", "tensorrt two engines, pycuda", "tensorrt on a worker thread",
                  "daemon on tensorrt"):
        row = next((line for line in table if line.startswith(check)), "")
        assert row[len(check):].strip().startswith("ok"), (check, table)
