"""The `finprint` command. Thin: it parses, then imports only the layer the chosen command needs.

Each command lives in a module that provides `add_arguments(parser)` and `run(args) -> int`;
`finprint --help` lists them without importing any (so it never pays for torch).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from finprint import __version__
from finprint.errors import FinprintError

log = logging.getLogger("finprint")

# name -> (one-line help, module). Order is the order of the data path.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("run the whole pipeline on a synthetic farm (the README's main job)", "finprint.demo"),
    "data": ("synthesise, check and look at datasets", "finprint.data.cli"),
    "models": ("list the model registry: name, task, role, parameters, pretrained trunk", "finprint.distill.cli_models"),
    "train": ("train a model (a teacher, or a student without distillation)", "finprint.distill.cli_train"),
    "distill": ("distil a trained teacher into a student", "finprint.distill.cli_distill"),
    "eval": ("evaluate a run: COCO mAP, re-ID rank-1/mAP, open-set AUROC", "finprint.distill.cli_eval"),
    "calib": ("build calibration sets for INT8 quantisation", "finprint.calib.cli"),
    "export": ("export a run to ONNX fp32/fp16/int8 with a manifest and an accuracy gate", "finprint.export.cli_export"),
    "bench": ("measure latency, throughput and size of exported models", "finprint.export.bench"),
    "build-engine": ("build a TensorRT engine from an ONNX file (on the target)", "finprint.export.cli_build_engine"),
    "parity": ("compare ONNX Runtime and TensorRT outputs on the same inputs", "finprint.export.cli_parity"),
    "serve": ("run the on-device daemon: cameras in, individual fish out", "finprint.runtime.cli_serve"),
    "enroll": ("add an individual to a gallery from crops or a video track", "finprint.runtime.cli_enroll"),
    "individuals": ("list the individuals in a gallery", "finprint.runtime.cli_individuals"),
    "forget": ("remove an individual from a gallery", "finprint.runtime.cli_forget"),
    "tune-open-set": ("tune a gallery's open-set threshold and margin on labelled farm videos or reviewed tracks",
                      "finprint.tune.cli_tune"),
    "export-reviewed": ("write the tracks confirmed on the daemon's page as re-ID crops and calibration frames",
                        "finprint.runtime.cli_export_reviewed"),
}


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        if missing.startswith("finprint"):
            raise
        extra = "runtime" if missing in {"onnxruntime", "prometheus_client", "paho"} else "train"
        raise FinprintError(
            f"this command needs the Python package '{missing}', which is not installed; "
            f"install it with: pip install 'finprint[{extra}]'"
        ) from exc


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finprint",
        description="Recognise individual fish on edge hardware: distil, quantise, export, serve.",
    )
    parser.add_argument("--version", action="version", version=f"finprint {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (help_text, module_name) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module_name)
        if name == chosen:
            module = _load(module_name)
            module.add_arguments(cmd)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        _setup_logging(args.verbose)
        module = _load(args._module)
        return int(module.run(args) or 0)
    except FinprintError as exc:
        print(f"finprint: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("finprint: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
