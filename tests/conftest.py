"""Shared fixtures and the markers that skip what this machine cannot run, with the reason shown."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEEPFISH = REPO.parent / "shared" / "data" / "deepfish"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow (minutes each)")


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder")  # tensorrt-stubs alone imports as an empty package


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skips = {
        "slow": None if config.getoption("--run-slow") else "long run: pass --run-slow to include it",
        "gpu": None if _has_cuda() else "needs a CUDA GPU (none on this machine); scripts/gpu-check runs it on one",
        "tensorrt": None if _has_tensorrt() else "needs TensorRT (not installable here: PyPI's tensorrt is a stub)",
        "mqtt": None if shutil.which("mosquitto") else "needs mosquitto on PATH (.ci/run installs it)",
    }
    for item in items:
        for marker, reason in skips.items():
            if reason and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True, scope="session")
def _small_thread_pools() -> None:
    # Two cores: keep BLAS/torch from oversubscribing when tests run beside each other.
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def deepfish() -> Path:
    if not (DEEPFISH / "labels").is_dir():
        pytest.skip(f"DeepFish not found at {DEEPFISH}")
    return DEEPFISH
