"""Shared fixtures and the markers that skip what this machine cannot run, with the reason shown."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DEEPFISH = REPO.parent / "shared" / "data" / "deepfish"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow (minutes each)")


def _has_cuda() -> bool:
    """A CUDA device through torch, or else through the driver itself (a torch build without CUDA must
    not skip the CUDA tests of torch-free code on a GPU machine)."""
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    return False


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


# ---- tiny contract-shaped torch models and data for the export, gate, bench and calibration tests ----


def _cbs(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class TinyDetector(nn.Module):
    """Outputs of docs/CONTRACTS.md section 3 (boxes, scores, mask_coefs, protos) at stride 8."""

    def __init__(self, masks: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(_cbs(3, 8, 2), _cbs(8, 16, 2))
        self.body = nn.Sequential(_cbs(16, 16, 2), _cbs(16, 32))
        self.head = nn.Conv2d(32, 5 + masks, 1)
        self.proto = nn.Conv2d(16, masks, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p4 = self.stem(x)
        h = self.head(self.body(p4)).flatten(2).transpose(1, 2)
        xy = h[..., :2].sigmoid() * x.shape[-1]
        wh = h[..., 2:4].sigmoid() * 16
        boxes = torch.cat([xy - wh, xy + wh], -1)
        return {"boxes": boxes, "scores": h[..., 4].sigmoid(), "mask_coefs": h[..., 5:], "protos": self.proto(p4)}


class TinyEmbedder(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(_cbs(3, 8, 2), _cbs(8, 16, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, dim)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embedding": nn.functional.normalize(self.fc(self.body(x)), dim=1)}


def _calibrate_bn(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """Give BatchNorm real running statistics, as a trained model would have."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(*shape))
    return model.eval()


@pytest.fixture
def tiny_detector() -> TinyDetector:
    torch.manual_seed(0)
    return _calibrate_bn(TinyDetector(), (4, 3, 64, 64))


@pytest.fixture
def tiny_embedder() -> TinyEmbedder:
    torch.manual_seed(0)
    return _calibrate_bn(TinyEmbedder(), (4, 3, 64, 128))


def write_reid_folder(root: Path, identities: int = 5, per_subset: int = 2, black: bool = False, seed: int = 0) -> Path:
    """Market-1501 style crops: each identity a distinct colour pattern, plus one unknown in query/.

    Patterns are bright (above the ImageNet mean), so a model calibrated on black frames clips them
    all to the same value: the broken-calibration case the gate must catch."""
    rng = np.random.default_rng(seed)
    patterns = [rng.integers(150, 255, (4, 8, 3)) for _ in range(identities + 1)]
    for subset in ("train", "gallery", "query"):
        (root / subset).mkdir(parents=True, exist_ok=True)
        for ident in range(identities + (1 if subset == "query" else 0)):
            for n in range(per_subset):
                base = cv2.resize(patterns[ident].astype(np.uint8), (128, 64), interpolation=cv2.INTER_NEAREST)
                img = np.clip(base.astype(np.int16) + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
                if black:
                    img[:] = 0
                cv2.imwrite(str(root / subset / f"{ident:04d}_c{n + 1}_{n}.jpg"), img)
    return root


def write_run(root: Path, model: nn.Module, model_name: str, task: str, data: Path, imgsz: int = 64) -> Path:
    """A run folder as finprint.distill.runs writes it (checkpoint + config + COMPLETE)."""
    from finprint.distill.runs import save_checkpoint

    root.mkdir(parents=True, exist_ok=True)
    config = {"task": task, "model": model_name, "data": str(data), "imgsz": imgsz, "teacher": None, "qat": False}
    save_checkpoint(root / "best.pt", {"model": model.state_dict(), "config": config, "epoch": 0})
    (root / "config.json").write_text(json.dumps(config))
    (root / "COMPLETE").write_text("")
    return root


@pytest.fixture
def make_reid():
    return write_reid_folder


@pytest.fixture
def make_run():
    return write_run
