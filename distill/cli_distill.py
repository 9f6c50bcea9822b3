"""`finprint distill`: distil a finished teacher run into a student (or, with --no-kd, the same run without KD)."""

from __future__ import annotations

import argparse
import logging

from finprint.distill.cli_train import (
    add_common_arguments,
    config_from_args,
    require,
    resume_config,
    run_config,
)

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", help="a finished teacher RUN folder (required unless --resume)")
    parser.add_argument("--student", help="student registry name, e.g. fishseg-student (required unless --resume)")
    parser.add_argument("--no-kd", action="store_true", help="train the student without distillation (the baseline)")
    parser.add_argument("--kd-weight", type=float, default=1.0)
    parser.add_argument("--qat", action="store_true", help="quantisation-aware training (finprint.calib.qat)")
    parser.add_argument("--init", help="start from this finished RUN's best weights (e.g. QAT fine-tuning of a trained student)")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from finprint.distill import registry
    from finprint.distill.runs import read_config
    from finprint.errors import FinprintError

    if args.resume:
        return run_config(resume_config(args.out, args.device), True)
    require(args, "teacher", "student", "data")
    task = registry.entry(args.student).task
    teacher_cfg = read_config(args.teacher)
    if teacher_cfg.get("task") != task:
        raise FinprintError(f"{args.teacher}: the teacher is a '{teacher_cfg.get('task')}' model, the student '{args.student}' a '{task}' model")
    cfg = config_from_args(args, task, args.student, teacher=args.teacher, kd=not args.no_kd, qat=args.qat)
    cfg.kd_weight = args.kd_weight
    cfg.init = args.init
    return run_config(cfg, False)
