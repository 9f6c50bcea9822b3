"""EmbedTask: the embedder's plugin for the shared training loop (distill/tasks.py).

Loss = CosFace identity classification + batch-hard triplet (+ VOS energy uncertainty loss)
(+ kd_weight x relational KD against the teacher's embeddings of the same augmented batch).

The CosFace classifier and VOS's energy regressor are trainable but not part of the exported
model: they come from `kd_modules()` (saved with the run, never exported). The loop must call
`kd_modules(student, teacher)` for every embed run, teacher or not (teacher may be None), and
optimise its parameters; without them the loss falls back to triplet only (logged).

Options in `cfg.extra`: views (K, default 4; cfg.batch is P identities), repeats (passes over the
identities per epoch, 4), triplet_margin (0.3), cosface_scale (16), cosface_margin (0.25),
kd_kind ("sim" | "rkd"), kd_temperature (0.1), vos (True), vos_weight (0.1), vos_start (steps, 50),
vos_queue (16), open_set_tpr (0.95).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from finprint.distill.embed_data import Augment, IdentityViews, ReidEvalData, collate_views, load_reid_splits
from finprint.distill.embed_loss import CosFaceHead, batch_hard_triplet
from finprint.distill.kd_embed import relational_kd_loss
from finprint.distill.open_set import embedder_report
from finprint.distill.tasks import TrainConfig
from finprint.distill.vos import EnergyRegressor, VirtualOutlierSynthesizer, energy, uncertainty_loss
from finprint.runtime.crops import embedder_preprocess
from torch import nn

log = logging.getLogger(__name__)


class EmbedHeads(nn.Module):
    """Training-only heads: the identity classifier and VOS's energy regressor."""

    def __init__(self, dim: int, num_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.classifier = CosFaceHead(dim, num_classes, scale, margin)
        self.energy = EnergyRegressor()


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class EmbedTask:
    name = "embed"
    main_metric = "map"

    def __init__(self) -> None:
        self.num_classes: int | None = None
        self.identity_names: list[str] = []
        self.heads: EmbedHeads | None = None
        self.vos: VirtualOutlierSynthesizer | None = None
        self.steps = 0
        self._warned_no_heads = False
        self.extra: dict = {}

    def _opt(self, key: str, default: Any) -> Any:
        return self.extra.get(key, default)

    def build_data(self, cfg: TrainConfig) -> tuple[IdentityViews, ReidEvalData]:
        self.extra = dict(cfg.extra)
        images, labels, names, eval_data = load_reid_splits(cfg.data, embedder_preprocess())
        self.num_classes, self.identity_names = len(names), names
        dataset = IdentityViews(
            images, labels, embedder_preprocess(),
            views=int(self._opt("views", 4)), repeats=int(self._opt("repeats", 4)),
            augment=Augment() if self._opt("augment", True) else None, seed=cfg.seed,
        )
        return dataset, eval_data

    def collate(self, items: list) -> tuple[torch.Tensor, torch.Tensor]:
        return collate_views(items)

    @torch.no_grad()
    def teacher_targets(self, teacher: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        # The teacher is small: run it on the same augmented views rather than caching clean-crop outputs,
        # so teacher and student relations describe identical inputs.
        was_training = teacher.training
        teacher.eval()
        out = teacher(batch[0].to(_device_of(teacher)))["embedding"]
        teacher.train(was_training)
        return out.float()

    def kd_modules(self, student: nn.Module, teacher: nn.Module | None) -> nn.Module:
        if self.num_classes is None:
            raise RuntimeError("EmbedTask.build_data must run before kd_modules (it counts the identities)")
        dim = int(getattr(student, "out_dim", 128))
        self.heads = EmbedHeads(
            dim, self.num_classes, float(self._opt("cosface_scale", 16.0)), float(self._opt("cosface_margin", 0.25))
        )
        self.vos = VirtualOutlierSynthesizer(self.num_classes, dim, queue_size=int(self._opt("vos_queue", 16)))
        self.steps = 0
        return self.heads

    def loss(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], teacher_out: Any | None, cfg: TrainConfig
    ) -> tuple[torch.Tensor, dict[str, float]]:
        device = _device_of(model)
        crops, labels = batch[0].to(device), batch[1].to(device)
        emb = model(crops)["embedding"].float()
        parts: dict[str, torch.Tensor] = {"triplet": batch_hard_triplet(emb, labels, float(self._opt("triplet_margin", 0.3)))}
        if self.heads is not None:
            self.heads.to(device)
            parts["cosface"] = self.heads.classifier(emb, labels)
            if self._opt("vos", True) and self.vos is not None:
                self.vos.update(emb, labels)
                if self.steps >= int(self._opt("vos_start", 50)):
                    outliers = self.vos.sample(labels.unique())
                    if outliers is not None:
                        outliers = outliers.to(device)
                        e_in = energy(self.heads.classifier.logits(emb))
                        e_out = energy(self.heads.classifier.logits(outliers))
                        parts["vos"] = float(self._opt("vos_weight", 0.1)) * uncertainty_loss(self.heads.energy, e_in, e_out)
        elif not self._warned_no_heads:
            log.warning("embed training heads not set up (kd_modules not called): triplet loss only, no VOS")
            self._warned_no_heads = True
        if teacher_out is not None and cfg.kd:
            kd = relational_kd_loss(
                emb, teacher_out.to(device), str(self._opt("kd_kind", "sim")), float(self._opt("kd_temperature", 0.1))
            )
            parts["kd"] = cfg.kd_weight * kd
        self.steps += 1
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    @torch.no_grad()
    def embed(self, model: nn.Module, crops: torch.Tensor, batch: int = 256) -> np.ndarray:
        was_training = model.training
        model.eval()
        device = _device_of(model)
        out = [model(crops[i : i + batch].to(device))["embedding"].float().cpu() for i in range(0, len(crops), batch)]
        model.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros((0, 128), np.float32)

    def validate(self, model: nn.Module, val_data: ReidEvalData, cfg: TrainConfig) -> dict[str, float]:
        gallery = self.embed(model, val_data.gallery)
        query = self.embed(model, val_data.query)
        return embedder_report(
            query, val_data.query_ids, val_data.query_cams, gallery, val_data.gallery_ids, val_data.gallery_cams,
            float(self._opt("open_set_tpr", 0.95)),
        )
