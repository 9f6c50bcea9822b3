"""The one training loop for every task (detect, embed), teacher or distilled student.

AMP on CUDA, DDP under torchrun (RANK/WORLD_SIZE/LOCAL_RANK; gloo on CPU, nccl on CUDA), CPU
fallback, resume from RUN/last.pt. Data order and augmentation derive from (seed, epoch), and the
RNG states travel in the checkpoint, so a resumed run ends where an uninterrupted one would.
RUN/COMPLETE is written last: a run without it is never used as a teacher.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from finprint.distill import registry, runs
from finprint.distill.tasks import Task, TrainConfig, get_task
from finprint.distill.torch_engine import resolve_device
from finprint.errors import ConfigError, FinprintError

log = logging.getLogger(__name__)

WARMUP_FRACTION = 0.05
PROGRESS_EVERY_S = 120.0


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_env() -> DistEnv:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    return DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


class EpochSampler(Sampler[int]):
    """A permutation drawn from (seed, epoch), sharded by rank and padded so every rank takes as many steps."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        per_rank = math.ceil(self.n / self.world)
        order += order[: per_rank * self.world - self.n]
        return iter(order[self.rank :: self.world])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_device(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_device(v, device) for v in obj)
    return obj


def _lr_lambda(total_steps: int):
    warmup = max(1, int(total_steps * WARMUP_FRACTION))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def write_plots(run: Path, rows: list[dict[str, Any]], main_metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = run / "plots"
    plots.mkdir(exist_ok=True)
    epochs = [r["epoch"] for r in rows]
    loss_keys = sorted({k for r in rows for k in r if k.startswith("loss")})
    val_keys = sorted({k for r in rows for k in r if k.startswith("val_")})
    for name, keys in (("loss", loss_keys), ("metrics", val_keys)):
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for k in keys:
            ax.plot(epochs, [r.get(k, float("nan")) for r in rows], label=k, linewidth=2 if k.endswith(main_metric) else 1)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        tmp = plots / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=80)
        plt.close(fig)
        tmp.replace(plots / f"{name}.png")


def check_config(cfg: TrainConfig) -> None:
    """Everything that can be refused before anything is written."""
    entry = registry.entry(cfg.model)
    if entry.task != cfg.task:
        raise ConfigError(f"model '{cfg.model}' is a '{entry.task}' model, not '{cfg.task}'")
    if not Path(cfg.data).exists():
        raise FinprintError(f"{cfg.data}: dataset path does not exist")
    for key, value in (("epochs", cfg.epochs), ("batch", cfg.batch), ("imgsz", cfg.imgsz)):
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    if cfg.task == "detect" and cfg.imgsz % 32:
        raise ConfigError(f"imgsz must be a multiple of 32 for the detector, got {cfg.imgsz}")
    # The task's options (--set) were typed and checked when the config was made (distill/options.py).
    if entry.pretrained is not None and cfg.pretrained != "none":
        # Refuse a missing package or a wrong file before anything is written (the weights load again later).
        from finprint.distill.backbones import EfficientNetLite, load_weights
        from finprint.runtime.manifest import Preprocess

        load_weights(EfficientNetLite(entry.pretrained, Preprocess(width=32, height=32)), cfg.pretrained)
    elif entry.pretrained is None and cfg.pretrained not in (None, "none"):
        raise ConfigError(f"--pretrained: model '{cfg.model}' has no pretrained trunk (models with one: `finprint models`)")
    if cfg.teacher is not None:
        tdir = Path(cfg.teacher)
        if not tdir.is_dir():
            raise FinprintError(f"{tdir}: teacher run folder does not exist")
        if not runs.is_complete(tdir):
            raise FinprintError(f"{tdir}: the teacher run is unfinished (no COMPLETE)")
        tcfg = runs.read_config(tdir)
        if tcfg.get("task") != cfg.task:
            raise FinprintError(f"{tdir}: the teacher is a '{tcfg.get('task')}' model, the student a '{cfg.task}' model")


def _prepare_trunk(model: nn.Module, cfg: TrainConfig, load: bool) -> None:
    """A trunk model: start from ImageNet (or `--pretrained FILE`) weights when `load` (a new run), and freeze
    its first `freeze_stages` stages (every time, resumed runs too)."""
    trunk = getattr(model, "trunk", None)
    if trunk is None:
        return
    if load and cfg.pretrained != "none":
        from finprint.distill.backbones import load_weights

        cfg.pretrained_sha256 = load_weights(trunk, cfg.pretrained)
        log.info("%s trunk: %s weights (sha256 %s)", cfg.model, cfg.pretrained or "ImageNet", cfg.pretrained_sha256[:12])
    stages = cfg.options.freeze_stages
    if stages:
        trunk.freeze(stages)


def _prepare_out(cfg: TrainConfig, resume: bool) -> Path:
    out = Path(cfg.out)
    if resume:
        if not (out / "last.pt").is_file():
            raise FinprintError(f"{out}: nothing to resume (no last.pt)")
        if runs.is_complete(out):
            raise FinprintError(f"{out}: the run is already complete")
        return out
    if out.exists() and any(out.iterdir()):
        raise FinprintError(f"{out}: exists and is not empty; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def train(cfg: TrainConfig, resume: bool = False, stop_after_epochs: int | None = None) -> dict[str, Any]:
    """Train per `cfg`; returns the final summary. `stop_after_epochs` ends early (as a crash would)."""
    env = _dist_env()
    check_config(cfg)
    out = Path(cfg.out)
    if env.main:
        _prepare_out(cfg, resume)
    device = resolve_device(cfg.device)
    if env.world > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", env.local_rank)
            torch.cuda.set_device(device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.options.threads)
    use_amp = cfg.amp and device.type == "cuda"
    seed_everything(cfg.seed + env.rank)

    task: Task = get_task(cfg.task)
    train_ds, val_data = task.build_data(cfg)
    model = registry.build(cfg.model).to(device)
    teacher = None
    kd_mod: nn.Module | None = None
    if cfg.teacher is not None and cfg.kd:
        teacher, _ = runs.load_teacher(cfg.teacher, cfg.task, device)
        kd_mod = task.kd_modules(model, teacher)
        if kd_mod is not None:
            kd_mod.to(device)
    _prepare_trunk(model, cfg, load=not resume and cfg.init is None)
    if cfg.init is not None:
        init_model, init_cfg = runs.load_model(cfg.init, "best", device)
        if init_cfg.get("model") != cfg.model:
            raise FinprintError(f"{cfg.init}: --init holds a '{init_cfg.get('model')}' model, not '{cfg.model}'")
        model.load_state_dict(init_model.state_dict())
        log.info("initialised from %s", cfg.init)
    if cfg.qat:
        from finprint.calib.qat import prepare_qat

        model = prepare_qat(model)  # before the optimiser: fake-quant observers are state, not parameters

    params = list(model.parameters()) + (list(kd_mod.parameters()) if kd_mod is not None else [])
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = EpochSampler(len(train_ds), cfg.seed, env.rank, env.world)
    loader = DataLoader(
        train_ds, batch_size=cfg.batch, sampler=sampler, collate_fn=task.collate, drop_last=len(sampler) >= 2 * cfg.batch,
        num_workers=cfg.options.workers, persistent_workers=False,
    )
    steps_per_epoch = max(1, len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.epochs * steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, best, rows = 0, -math.inf, []
    if resume:
        ckpt = runs.load_checkpoint(out / "last.pt")
        model.load_state_dict(ckpt["model"])
        if kd_mod is not None and ckpt.get("kd") is not None:
            kd_mod.load_state_dict(ckpt["kd"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"][min(env.rank, len(ckpt["rng"]) - 1)] if isinstance(ckpt["rng"], list) else ckpt["rng"])
        start_epoch = int(ckpt["epoch"]) + 1
        best = float(ckpt.get("best", -math.inf))
        metrics_path = out / "metrics.jsonl"
        if metrics_path.is_file():
            rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()][:start_epoch]
            if env.main:  # drop rows of an epoch that ended after its metrics but before its checkpoint
                metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        log.info("resuming %s at epoch %d", out, start_epoch)
    elif env.main:
        runs.write_json_atomic(out / "config.json", cfg.to_dict())
        (out / "metrics.jsonl").write_text("")

    train_model: nn.Module = model
    if env.world > 1:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    end_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, stop_after_epochs)
    for epoch in range(start_epoch, end_epoch):
        sampler.set_epoch(epoch)
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        train_model.train()
        sums: dict[str, float] = {}
        n_steps, n_images, t0 = 0, 0, time.perf_counter()
        last_note = t0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not env.main or not sys.stderr.isatty(), leave=False)
        for batch in bar:
            batch = to_device(batch, device)
            teacher_out = task.teacher_targets(teacher, batch) if teacher is not None else None
            with torch.autocast(device.type, enabled=use_amp):
                loss, parts = task.loss(train_model, batch, teacher_out, cfg)
            if not torch.isfinite(loss):
                raise FinprintError(f"training diverged at epoch {epoch + 1} (loss {float(loss)}); lower --lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if kd_mod is not None and env.world > 1:  # adapters live outside DDP: average their grads
                for p in kd_mod.parameters():
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= env.world
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, 10.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            n_steps += 1
            n_images += _batch_size(batch)
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for k, v in parts.items():
                sums[f"loss_{k}"] = sums.get(f"loss_{k}", 0.0) + v
            bar.set_postfix(loss=f"{sums['loss'] / n_steps:.3f}")
            if bar.disable and env.main and time.perf_counter() - last_note > PROGRESS_EVERY_S:
                # No progress bar in a log file: a line now and then says the run is alive and how fast it goes.
                last_note = time.perf_counter()
                log.info("epoch %d: step %d/%d, %.1f images/s, loss %.3f", epoch + 1, n_steps, steps_per_epoch,
                         n_images / (last_note - t0), sums["loss"] / n_steps)
        elapsed = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch, **{k: v / max(1, n_steps) for k, v in sums.items()}}
        row["images_per_s"] = n_images * env.world / max(elapsed, 1e-9)
        row["lr"] = optimizer.param_groups[0]["lr"]
        if env.main:
            metrics = task.validate(model, val_data, cfg)
            row.update({f"val_{k}": v for k, v in metrics.items()})
            score = metrics.get(task.main_metric, -math.inf)
            rows.append(row)
            with open(out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
            ckpt = {
                "model": _unwrap(model).state_dict(),
                "kd": kd_mod.state_dict() if kd_mod is not None else None,
                "epoch": epoch,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_state(),
                "config": cfg.to_dict(),
                "best": max(best, score),
                "metrics": {k: v for k, v in row.items() if isinstance(v, int | float)},
            }
            if score > best:
                best = score
                # best.pt is for teaching, evaluation and export; resuming reads last.pt. Without the optimizer's
                # moments a 4.45M-parameter teacher's best.pt is 17.5 MB instead of 53.7 MB.
                runs.save_checkpoint(out / "best.pt", {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "scaler", "rng")})
            runs.save_checkpoint(out / "last.pt", ckpt)
            write_plots(out, rows, task.main_metric)
            log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
        if env.world > 1:
            dist.barrier()

    summary = {"epochs": cfg.epochs, "best": best, "main_metric": task.main_metric, "last": rows[-1] if rows else {}}
    if env.main and end_epoch == cfg.epochs:
        runs.write_json_atomic(out / runs.COMPLETE, summary)
    if env.world > 1:
        dist.barrier()
    return summary


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        for key in ("images", "crops"):
            if key in batch:
                return int(batch[key].shape[0])
        return int(next(v for v in batch.values() if isinstance(v, torch.Tensor)).shape[0])
    if isinstance(batch, list | tuple):
        return int(batch[0].shape[0])
    return int(batch.shape[0])
