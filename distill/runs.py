"""Run folders on disk: atomic checkpoints with checksums, loading models back, teacher checks.

Checkpoints hold only state dicts, tensors and primitives, so they load with
`torch.load(weights_only=True)`. Every checkpoint's sha256 is recorded in RUN/checksums.json when
it is written, so a truncated or edited file is refused with its name instead of loading garbage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from finprint.errors import FinprintError

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
CHECKSUMS = "checksums.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _checksums(run: Path) -> dict[str, str]:
    path = run / CHECKSUMS
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FinprintError(f"{path}: unreadable ({exc}); the run folder is damaged") from exc


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary file, rename into place, then record its sha256."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    digest = _sha256(tmp)
    tmp.replace(path)
    sums = _checksums(path.parent)
    sums[path.name] = digest
    write_json_atomic(path.parent / CHECKSUMS, sums)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FinprintError(f"{path}: checkpoint not found")
    expected = _checksums(path.parent).get(path.name)
    if expected is not None and _sha256(path) != expected:
        raise FinprintError(f"{path}: checksum mismatch: the checkpoint is truncated or was modified")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError... for a bad file
        raise FinprintError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise FinprintError(f"{path}: not a finprint checkpoint (no model/config)")
    return ckpt


def is_complete(run: str | Path) -> bool:
    return (Path(run) / COMPLETE).is_file()


def read_config(run: str | Path) -> dict[str, Any]:
    path = Path(run) / "config.json"
    if not path.is_file():
        raise FinprintError(f"{run}: not a run folder (no config.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FinprintError(f"{path}: unreadable ({exc})") from exc


def load_model(run: str | Path, which: str = "best", device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the run's model from its registry name and load `which` (best|last) weights, eval mode."""
    from finprint.distill import registry

    run = Path(run)
    if which not in ("best", "last"):
        raise FinprintError(f"which must be 'best' or 'last', not {which!r}")
    path = run / f"{which}.pt"
    if which == "best" and not path.is_file() and (run / "last.pt").is_file():
        path = run / "last.pt"
    ckpt = load_checkpoint(path)
    config = dict(ckpt["config"])
    model = registry.build(config["model"])
    try:
        if config.get("qat") or any(".weight_fq." in k for k in ckpt["model"]):
            from finprint.calib.qat import load_qat_state  # fake-quant buffers: prepare the model first

            load_qat_state(model, ckpt["model"])
        else:
            model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise FinprintError(f"{path}: weights do not fit model '{config['model']}' ({str(exc).splitlines()[0]})") from exc
    return model.to(device).eval(), config


def load_teacher(run: str | Path, task: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A finished run of the right task, frozen in eval mode."""
    run = Path(run)
    if not run.is_dir():
        raise FinprintError(f"{run}: teacher run folder does not exist")
    if not is_complete(run):
        raise FinprintError(f"{run}: the teacher run is unfinished (no {COMPLETE}); finish it with `finprint train --resume`")
    config = read_config(run)
    if config.get("task") != task:
        raise FinprintError(f"{run}: the teacher is a '{config.get('task')}' model, the student a '{task}' model")
    model, config = load_model(run, "best", device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, config
