"""`finprint data`: sub-command wiring, and that `synth` hands every word to finprint.data.cli_synth."""

from __future__ import annotations

import sys
import types

import pytest

from finprint.cli import main


@pytest.fixture
def fake_synth(monkeypatch):
    """A stand-in cli_synth that records what it was asked to do (the real one is tested on its own)."""
    calls = []
    module = types.ModuleType("finprint.data.cli_synth")

    def add_arguments(parser):
        parser.add_argument("--out", required=True)
        parser.add_argument("--images", type=int, default=200)

    def run(args):
        calls.append(args)
        return 0

    module.add_arguments, module.run = add_arguments, run
    monkeypatch.setitem(sys.modules, "finprint.data.cli_synth", module)
    # Once the real module was imported by an earlier test, the package holds it as an attribute too.
    import finprint.data

    monkeypatch.setattr(finprint.data, "cli_synth", module, raising=False)
    return calls


def test_synth_options_reach_cli_synth(fake_synth, tmp_path):
    out = str(tmp_path / "farm")
    assert main(["data", "synth", "--out", out, "--images", "12"]) == 0
    assert fake_synth[0].out == out and fake_synth[0].images == 12


def test_synth_help_is_cli_synths_own(fake_synth, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "synth", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "finprint data synth" in out and "--images" in out


def test_data_without_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data"])
    assert exc.value.code == 2
    assert "check" in capsys.readouterr().err
