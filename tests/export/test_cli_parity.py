"""`finprint parity` and `finprint build-engine` from the command line, on a machine without TensorRT."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from finprint.cli import main

_spec = importlib.util.spec_from_file_location("engines_helpers", Path(__file__).parents[1] / "runtime" / "test_engines.py")
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    path = helpers.tiny_onnx(tmp_path / "tiny.onnx")
    helpers.write_manifest(path)
    return path


def test_parity_of_a_model_with_itself_on_random_inputs(model: Path, capsys) -> None:
    assert main(["parity", "--onnx", str(model), "--engine", str(model), "--engine-backend", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "embedding" in out and "parity OK" in out and "1.000000" in out


def test_parity_on_images_fails_when_models_differ(model: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "other" / "tiny.onnx"
    other.parent.mkdir()
    helpers.tiny_onnx(other, input_name="crops")
    # same graph, but a different constant: rebuild with a scaled input to make outputs diverge
    import onnx

    m = onnx.load(str(other))
    for init in m.graph.initializer:
        if init.name == "one":
            init.float_data[:] = [-500.0]
    onnx.save(m, str(other))
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 255, (10, 20, 3), dtype=np.uint8))
    code = main(["parity", "--onnx", str(model), "--engine", str(other), "--engine-backend", "cpu",
                 "--data", str(images)])
    out = capsys.readouterr().out
    assert code == 1 and "on 3 inputs" in out and "FAILED" in out


def test_build_engine_without_tensorrt_is_one_clear_line(model: Path, tmp_path: Path, capsys) -> None:
    code = main(["build-engine", "--onnx", str(model), "--out", str(tmp_path / "tiny.engine"), "--batch", "1,2,4"])
    err = capsys.readouterr().err
    assert code == 2 and "TensorRT is not installed" in err and err.count("\n") == 1
    assert main(["build-engine", "--onnx", str(model), "--out", str(tmp_path / "tiny.bin")]) == 2
