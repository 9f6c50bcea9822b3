"""Model registry: configs and CLIs pick teachers and students by name (timm-style).

Modules that define models register them with `@register(name, task, role)`; `build(name)` imports
the model modules on first use so that a name is found wherever it is defined.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from finprint.errors import FinprintError

log = logging.getLogger(__name__)

# Modules that hold registered models; imported lazily by build()/names().
MODEL_MODULES = ("finprint.distill.detector", "finprint.distill.embedder")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str  # "detect" | "embed"
    role: str  # "teacher" | "student"
    builder: Callable[[], nn.Module]
    pretrained: str | None = None  # the EfficientNet-Lite variant whose ImageNet weights its trunk starts from


_REGISTRY: dict[str, ModelEntry] = {}
_loaded = False


def register(
    name: str, task: str, role: str, pretrained: str | None = None
) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    def deco(builder: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"model name '{name}' registered twice")
        _REGISTRY[name] = ModelEntry(name, task, role, builder, pretrained)
        return builder

    return deco


def _load_model_modules() -> None:
    global _loaded
    if _loaded:
        return
    for module in MODEL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # A model family not written yet (or removed) must not hide the others.
            if exc.name != module:
                raise
            log.debug("model module %s not present", module)
    _loaded = True


def entry(name: str) -> ModelEntry:
    _load_model_modules()
    if name not in _REGISTRY:
        raise FinprintError(f"unknown model '{name}'; known models: {', '.join(names()) or '(none)'}")
    return _REGISTRY[name]


def build(name: str) -> nn.Module:
    model = entry(name).builder()
    model.registry_name = name  # type: ignore[attr-defined]  # lets runs record what to rebuild
    return model


def names(task: str | None = None, role: str | None = None) -> list[str]:
    _load_model_modules()
    return sorted(
        n for n, e in _REGISTRY.items() if (task is None or e.task == task) and (role is None or e.role == role)
    )
