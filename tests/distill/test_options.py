"""`--set KEY=VALUE`: typed per-task options, unknown keys refused with the known ones, listed in --help."""

import pytest

from finprint.cli import main
from finprint.distill.options import DetectOptions, EmbedOptions, parse_options
from finprint.errors import ConfigError


def test_an_unknown_option_exits_2_naming_the_known_ones(tmp_path, capsys):
    argv = ["train", "--task", "detect", "--model", "fishseg-student", "--data", str(tmp_path), "--out",
            str(tmp_path / "run"), "--set", "no_such_option=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no_such_option" in err and "aug_variants" in err and "mask_weight" in err and "workers" in err
    assert not (tmp_path / "run").exists()
    # An option of the other task is unknown here too.
    assert main([*argv[:-1], "neighbours=2"]) == 2


def test_options_are_typed_and_checked():
    opts = parse_options("detect", {"aug_scale": [0.6, 1.8], "no_augment": 1, "workers": 2, "mask_weight": 3})
    assert opts == DetectOptions(aug_scale=(0.6, 1.8), no_augment=True, workers=2, mask_weight=3.0)
    assert parse_options("embed", {"aug_scale": 0.2, "kd_kind": "rkd"}).aug_scale == 0.2  # the embedder's: a number
    for task, values, says in (("detect", {"aug_scale": 1.2}, "two numbers"), ("detect", {"aug_scale": [1.5, 1.0]}, "low <= high"),
                               ("detect", {"mask_weight": -1}, ">= 0"), ("embed", {"neighbours": 1.5}, "whole number"),
                               ("embed", {"neighbours": True}, "whole number"), ("embed", {"kd_kind": "l2"}, "cos, rkd, sim"),
                               ("embed", {"aug_rotate_deg": -3}, ">= 0"), ("embed", {"vos": 2}, "true/false")):
        with pytest.raises(ConfigError, match=says):
            parse_options(task, values)


def test_the_defaults_are_the_ones_the_tasks_used():
    from finprint.distill import detect_data, embed_data, kd_detect

    d = DetectOptions()
    assert (d.kd_score, d.kd_feat, d.kd_mask, d.kd_box, d.kd_warmup) == (
        kd_detect.W_SCORE, kd_detect.W_FEAT, kd_detect.W_MASK, kd_detect.W_BOX, kd_detect.WARMUP_FRACTION)
    assert d.mask_weight == kd_detect.W_MASK and d.aug_scale == detect_data.Augment.scale
    e, aug = EmbedOptions(), embed_data.Augment()
    assert (e.aug_cast, e.aug_rotate_deg, e.aug_scale, e.aug_shift, e.aug_aspect) == (
        aug.p_cast, aug.max_rotate_deg, aug.max_scale, aug.max_shift, aug.max_aspect)


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for name in ("aug_variants", "kd_mask_all", "neighbours", "kd_kind", "precise_bn", "workers", "threads"):
        assert name in out, name


def test_every_preset_sets_only_options_its_task_knows():
    """The demo's, the results' and the real-data runs' `--set` options parse (an unknown one would now stop them)."""
    import yaml

    from finprint.demo import PRESETS
    from finprint.real_data import REAL_PRESETS
    from finprint.results import DEEPFISH_PRESETS

    def parse(task, pairs):
        return parse_options(task, {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)})

    for preset in (*PRESETS.values(), *DEEPFISH_PRESETS.values()):
        parse("detect", (*preset.train_extra, *preset.det_extra))
        if preset.emb_teacher_epochs:
            parse("embed", (*preset.train_extra, *preset.emb_extra))
    for real in REAL_PRESETS.values():
        parse("detect", (*real.det_teacher_sets, *real.det_student_sets))
        parse("embed", (*real.emb_teacher_sets, *real.emb_student_sets))
