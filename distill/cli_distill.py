"""`finprint distill`: distil a finished teacher run into a student (or, with --no-kd, the same run without KD)."""

from __future__ import annotations

import argparse
import logging

from finprint.distill.cli_train import add_common_arguments, config_from_args, run_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, help="a finished teacher RUN folder")
    parser.add_argument("--student", required=True, help="student registry name, e.g. fishseg-student")
    parser.add_argument("--no-kd", action="store_true", help="train the student without distillation (the baseline)")
    parser.add_argument("--kd-weight", type=float, default=1.0)
    parser.add_argument("--qat", action="store_true", help="quantisation-aware training (finprint.calib.qat)")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from finprint.distill import registry
    from finprint.distill.runs import read_config

    from finprint.errors import FinprintError

    task = registry.entry(args.student).task
    teacher_cfg = read_config(args.teacher) if not args.resume else None
    if teacher_cfg is not None and teacher_cfg.get("task") != task:
        raise FinprintError(f"{args.teacher}: the teacher is a '{teacher_cfg.get('task')}' model, the student '{args.student}' a '{task}' model")
    cfg = config_from_args(args, task, args.student, teacher=args.teacher, kd=not args.no_kd, qat=args.qat)
    cfg.kd_weight = args.kd_weight
    return run_config(cfg, args.resume)
