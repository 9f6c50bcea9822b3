"""Per-task training options: `finprint train|distill --set KEY=VALUE`, typed, checked once, listed in `--help`.

Each task has one dataclass of options (the loop's own ones first); `parse_options` turns the run's
`TrainConfig.extra` (KEY -> value, as `--set` and RUN/config.json hold them) into it, refusing an unknown key
with the list of known ones and a value of the wrong type or range with what was expected. Torch-free, so
`--help` and the check cost nothing.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from finprint.errors import ConfigError


def _opt(default: Any, help: str, *, kind: str = "", low: float | None = 0, choices: tuple[str, ...] = ()) -> Any:
    """A field with its help; `kind` "range" is a [LO,HI] pair with 0 < LO <= HI, `low` the least allowed number."""
    return field(default=default, metadata={"help": help, "kind": kind, "low": low, "choices": choices})


@dataclass(frozen=True)
class LoopOptions:
    """Options of the training loop itself, for every task."""

    workers: int = _opt(0, "data-loader worker processes")
    threads: int = _opt(2, "torch threads on a CPU", low=1)
    freeze_stages: int = _opt(0, "models with a pretrained trunk: its stem and first N stages stay frozen (`finprint models`)")


@dataclass(frozen=True)
class DetectOptions(LoopOptions):
    """`--task detect` (and its students)."""

    aug_variants: int = _opt(4, "augmentation variants per frame whose teacher outputs are cached (CPU distillation)", low=1)
    aug_scale: tuple[float, float] = _opt((0.7, 1.3), "zoom range of the training augmentation, [LO,HI] (1 = as filmed)",
                                          kind="range")
    aug_hue: float = _opt(0.015, "largest hue shift of the training augmentation, as a fraction of the colour wheel")
    aug_colour: float = _opt(0.0, "largest per-channel colour gain of the training augmentation (a white-balance shift)")
    aug_gray: float = _opt(0.0, "probability that a training frame is turned grey")
    no_augment: bool = _opt(False, "train on the frames as they are")
    val_max: int = _opt(200, "validation frames at most")
    train_max: int = _opt(0, "training frames at most (0 = all)")
    mask_weight: float = _opt(1.0, "the mask loss's weight")
    kd_score: float = _opt(10.0, "KD: weight of the teacher's scores")
    kd_feat: float = _opt(1.0, "KD: weight of feature imitation")
    kd_mask: float = _opt(1.0, "KD: weight of the teacher's masks")
    kd_box: float = _opt(5.0, "KD: weight of the teacher's boxes")
    kd_mask_all: bool = _opt(False, "KD: the teacher's masks on every fish, not only those without a ground-truth mask")
    kd_warmup: float = _opt(0.0, "KD: share of the epochs over which its weight ramps up")


@dataclass(frozen=True)
class EmbedOptions(LoopOptions):
    """`--task embed` (and its students). --batch is P identities; a batch holds P x views crops."""

    views: int = _opt(2, "crops of one identity per batch item (K)", low=1)
    repeats: int = _opt(16, "passes over the identities per epoch", low=1)
    augment: bool = _opt(True, "augment the crops")
    no_augment: bool = _opt(False, "train on the crops as they are (the same as augment=0)")
    aug_cast: float = _opt(0.8, "probability of a colour cast (water tint, brightness, contrast); lower it where colour "
                                "tells fish apart", low=0.0)
    aug_rotate_deg: float = _opt(8.0, "the augmentation's largest turn, degrees")
    aug_scale: float = _opt(0.1, "the augmentation's largest zoom, as a fraction")
    aug_shift: float = _opt(0.06, "the augmentation's largest shift, as a fraction")
    aug_aspect: float = _opt(0.25, "the augmentation's largest squash, as a fraction")
    triplet_margin: float = _opt(0.3, "batch-hard triplet margin")
    neighbours: int = _opt(0, "hard identity pairs: each item also holds views of one of its M nearest identities "
                              "(0 = off; a batch then holds 2P identities)")
    cosface_scale: float = _opt(16.0, "CosFace scale")
    cosface_margin: float = _opt(0.25, "CosFace margin")
    head_lr: float = _opt(1e-2, "learning rate of the training-only heads")
    kd_kind: str = _opt("cos", "KD: imitate the teacher's embedding (cos), its relations (rkd) or its similarity "
                               "distribution (sim)", choices=("cos", "rkd", "sim"))
    kd_temperature: float = _opt(0.1, "KD: temperature of kd_kind=sim")
    kd_views: int = _opt(0, "KD: each training crop comes in this many fixed augmentations, whose teacher embeddings are "
                            "computed once and cached (0 = a fresh augmentation each time, the teacher run on every batch)")
    vos: bool = _opt(False, "virtual outlier synthesis")
    vos_weight: float = _opt(0.1, "VOS: weight of its uncertainty loss")
    vos_start: int = _opt(50, "VOS: steps before it starts")
    vos_queue: int = _opt(16, "VOS: embeddings kept per identity", low=1)
    open_set_tpr: float = _opt(0.95, "the known-fish rate the manifest's open-set threshold is set at", low=None)
    val_identities: int | str = _opt("auto", "training identities held out for validation: a number, or auto (a tenth, "
                                             "at least 2, where the test identities are not the training ones)",
                                     kind="auto-int")
    precise_bn: int = _opt(192, "clean crops whose batch statistics replace BatchNorm's before each validation (0 = off)")


OPTIONS: dict[str, type[LoopOptions]] = {"detect": DetectOptions, "embed": EmbedOptions}


def parse_options(task: str, values: dict[str, Any]) -> LoopOptions:
    """A task's options from KEY -> value (numbers may come as YAML parsed them); ConfigError naming the key."""
    cls = OPTIONS.get(task)
    if cls is None:
        raise ConfigError(f"unknown task '{task}'; choose one of {', '.join(OPTIONS)}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"--set: unknown {task} option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"the known ones: {', '.join(known)}")
    return cls(**{key: _value(known[key], value) for key, value in values.items()})


def _value(f: Any, value: Any) -> Any:
    meta = f.metadata
    name, kind = f.name, f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if meta["kind"] == "range":
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected two numbers like [0.7,1.3], got {value!r}") from None
        if not 0 < lo <= hi:
            raise ConfigError(f"{name}: need 0 < low <= high, got [{lo}, {hi}]")
        return lo, hi
    if meta["kind"] == "auto-int":
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name}: expected auto or a whole number >= 0 ({meta['help']}), got {value!r}")
        return value
    if kind == "bool":
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise ConfigError(f"{name}: expected true/false or 1/0, got {value!r}")
    if meta["choices"]:
        if value not in meta["choices"]:
            raise ConfigError(f"{name}: expected one of {', '.join(meta['choices'])}, got {value!r}")
        return value
    whole = kind == "int"
    if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
        raise ConfigError(f"{name}: expected {'a whole number' if whole else 'a number'} ({meta['help']}), got {value!r}")
    if meta["low"] is not None and value < meta["low"]:
        raise ConfigError(f"{name}: expected {'a whole number' if whole else 'a number'} >= {meta['low']:g} "
                          f"({meta['help']}), got {value!r}")
    return int(value) if whole else float(value)


def options_help() -> str:
    """The `--set` options of every task, one a line (KEY=DEFAULT and what it does), for `--help`."""
    shared = [f for f in fields(LoopOptions)]
    lines = []
    for title, group in [(f"{task}:", [f for f in fields(cls) if f not in shared]) for task, cls in OPTIONS.items()] + [
            ("every task:", shared)]:
        lines.append(title)
        lines += [f"  {f'{f.name}={_default(f)}':<24} {f.metadata['help']}" for f in group]
    return "\n".join(lines)


def _default(f: Any) -> str:
    value = f.default if f.default is not MISSING else None
    if isinstance(value, tuple):
        return "[" + ",".join(f"{v:g}" for v in value) + "]"
    if isinstance(value, bool):
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)
