"""EmbedTask: the embedder's plugin for the shared training loop (distill/tasks.py).

Backbone loss = CosFace identity classification + batch-hard triplet (+ VOS energy uncertainty, inlier
side) (+ kd_weight x relational KD against the teacher's embeddings of the same augmented batch).

The CosFace classifier and VOS's energy regressor are training-only heads (never exported). They are
updated here, by their own optimiser, in alternation with the backbone: each step first fits the
heads on the detached embeddings (and VOS's virtual outliers, which carry no gradient anyway), then
the backbone's loss uses the heads frozen. So every run (teacher, student with or without KD) trains
with the same losses whatever the loop does with `kd_modules()` (relational KD needs no adapter:
it returns None). The heads are not checkpointed: a resumed run refits them within a few steps.

Options (`--set KEY=VALUE`): `EmbedOptions` in distill/options.py, listed by `finprint train --help`. Their
defaults follow measurements on synthetic farms (experiments/2026-11-27-model-design): "cos" KD, hard identity
pairs and VOS off.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from finprint.distill.embed_data import Augment, IdentityViews, ReidEvalData, collate_views, load_reid_splits
from finprint.distill.embed_loss import CosFaceHead, batch_hard_triplet
from finprint.distill.embedder import recalibrate_batchnorm
from finprint.distill.kd_embed import relational_kd_loss
from finprint.distill.open_set import embedder_report
from finprint.distill.options import EmbedOptions
from finprint.distill.tasks import TrainConfig
from finprint.distill.vos import EnergyRegressor, VirtualOutlierSynthesizer, energy, uncertainty_loss
from finprint.runtime.crops import embedder_preprocess
from finprint.runtime.preprocess import to_tensor

log = logging.getLogger(__name__)


class EmbedHeads(nn.Module):
    """Training-only heads: the identity classifier and VOS's energy regressor."""

    def __init__(self, dim: int, num_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.classifier = CosFaceHead(dim, num_classes, scale, margin)
        self.energy = EnergyRegressor()


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def embed_augment(options: EmbedOptions) -> Augment:
    """The training augmentation with the run's aug_* options (its largest turn, zoom, shift and squash)."""
    return Augment(p_cast=options.aug_cast, max_rotate_deg=options.aug_rotate_deg, max_scale=options.aug_scale, max_shift=options.aug_shift,
                   max_aspect=options.aug_aspect)


class EmbedTask:
    name = "embed"
    main_metric = "map"

    def __init__(self) -> None:
        self.num_classes: int | None = None
        self.identity_names: list[str] = []
        self.heads: EmbedHeads | None = None
        self.head_optimizer: torch.optim.Optimizer | None = None
        self.vos: VirtualOutlierSynthesizer | None = None
        self.steps = 0
        self._warned_no_heads = False
        self.options = EmbedOptions()
        self.bn_crops: torch.Tensor | None = None
        self.dataset: IdentityViews | None = None
        self._teacher_cache: dict[tuple[int, int], torch.Tensor] = {}

    def build_data(self, cfg: TrainConfig) -> tuple[IdentityViews, ReidEvalData]:
        self.options = opts = cfg.options
        images, labels, names, eval_data = load_reid_splits(cfg.data, embedder_preprocess(), opts.val_identities)
        self.num_classes, self.identity_names = len(names), names
        n_bn = min(opts.precise_bn, len(images))
        if n_bn >= 2:
            pick = np.sort(np.random.default_rng(cfg.seed).choice(len(images), n_bn, replace=False))
            pre = embedder_preprocess()
            self.bn_crops = torch.from_numpy(np.stack([to_tensor(images[i], pre) for i in pick]))
        dataset = IdentityViews(
            images, labels, embedder_preprocess(),
            views=opts.views, repeats=opts.repeats,
            augment=embed_augment(opts) if opts.augment and not opts.no_augment else None, seed=cfg.seed,
            pairs=self._neighbours() > 0, aug_variants=opts.kd_views,
        )
        self.dataset = dataset
        return dataset, eval_data

    def _neighbours(self) -> int:
        return self.options.neighbours

    @torch.no_grad()
    def _refresh_partners(self, heads: EmbedHeads) -> None:
        """Each identity's nearest identities by the angle between their CosFace weights (the classifier's
        own picture of who looks like whom, free to read, unlike embedding every training crop)."""
        m = self._neighbours()
        if m == 0 or self.dataset is None:
            return
        weight = F.normalize(heads.classifier.weight.detach().float(), dim=1)
        cos = weight @ weight.T
        cos.fill_diagonal_(-2.0)
        # Identities not yet seen keep their random start weights: they are nobody's neighbour yet.
        cos[:, ~heads.classifier.imprinted] = -2.0
        values, partners = cos.topk(min(m, cos.shape[1] - 1), dim=1)
        partners[values <= -2.0] = -1  # no neighbour known yet: the dataset draws a random partner
        self.dataset.set_partners(partners.cpu().numpy())

    def collate(self, items: list) -> tuple[torch.Tensor, torch.Tensor]:
        return collate_views(items)

    @torch.no_grad()
    def teacher_targets(self, teacher: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The teacher's embeddings of the very views the student sees. With `kd_views` each crop has that many fixed
        augmentations and the teacher embeds each once (cached by crop and variant): on 2 CPU cores a pretrained
        teacher's forward pass on every batch made a KD student run 3x slower than one without KD."""
        crops = batch[0]
        keys = [tuple(k) for k in batch[2].tolist()] if self.options.kd_views and len(batch) > 2 else None
        missing = [j for j, k in enumerate(keys) if k not in self._teacher_cache] if keys is not None else list(range(len(crops)))
        out = torch.empty((len(crops), 0))
        if missing:
            was_training = teacher.training
            teacher.eval()
            out = teacher(crops[missing].to(_device_of(teacher)))["embedding"].float()
            teacher.train(was_training)
        if keys is None:
            return out
        for row, j in enumerate(missing):
            self._teacher_cache[keys[j]] = out[row].cpu()
        return torch.stack([self._teacher_cache[k] for k in keys]).to(crops.device)

    def kd_modules(self, student: nn.Module, teacher: nn.Module | None) -> nn.Module | None:
        return None  # relational KD compares similarity matrices: no adapter to train

    def _ensure_heads(self, dim: int, device: torch.device) -> EmbedHeads:
        if self.num_classes is None:
            raise RuntimeError("EmbedTask.build_data must run before the first loss (it counts the identities)")
        if self.heads is None:
            self.heads = EmbedHeads(
                dim, self.num_classes, self.options.cosface_scale, self.options.cosface_margin
            )
            self.head_optimizer = torch.optim.Adam(self.heads.parameters(), lr=self.options.head_lr)
            self.vos = VirtualOutlierSynthesizer(self.num_classes, dim, queue_size=self.options.vos_queue)
            self.steps = 0
        self.heads.to(device)
        return self.heads

    def _fit_heads(self, heads: EmbedHeads, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """One optimiser step of the heads on detached features; returns the virtual outliers it used."""
        outliers = None
        with torch.autocast(emb.device.type, enabled=False):
            feats = emb.detach().float()
            heads.classifier.imprint(feats, labels)
            head_loss = heads.classifier(feats, labels)
            if self.options.vos and self.vos is not None:
                self.vos.update(feats, labels)
                if self.steps >= self.options.vos_start:
                    outliers = self.vos.sample(labels.unique())
                if outliers is not None:
                    outliers = outliers.to(emb.device)
                    e_in = energy(heads.classifier.logits(feats))
                    e_out = energy(heads.classifier.logits(outliers))
                    head_loss = head_loss + self.options.vos_weight * uncertainty_loss(heads.energy, e_in, e_out)
            optimizer = self.head_optimizer
            assert optimizer is not None  # created with the heads
            optimizer.zero_grad(set_to_none=True)
            head_loss.backward()
            optimizer.step()
        return outliers

    def loss(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], teacher_out: Any | None, cfg: TrainConfig
    ) -> tuple[torch.Tensor, dict[str, float]]:
        device = _device_of(model)
        crops, labels = batch[0].to(device), batch[1].to(device)
        emb = model(crops)["embedding"].float()
        parts: dict[str, torch.Tensor] = {"triplet": batch_hard_triplet(emb, labels, self.options.triplet_margin)}
        heads = self._ensure_heads(emb.shape[1], device)
        outliers = self._fit_heads(heads, emb, labels)
        self._refresh_partners(heads)
        # The backbone sees the heads frozen (they were just fitted above).
        parts["cosface"] = heads.classifier(emb, labels, frozen=True)
        if outliers is not None:
            # Inlier side of VOS's logistic loss: the backbone lowers the energy of real crops.
            e_in = energy(heads.classifier.logits(emb, frozen=True))
            logit = heads.energy(e_in, frozen=True)
            parts["vos"] = self.options.vos_weight * 0.5 * F.binary_cross_entropy_with_logits(
                logit, torch.ones_like(logit)
            )
        if teacher_out is not None and cfg.kd:
            kd = relational_kd_loss(
                emb, teacher_out.to(device), self.options.kd_kind, self.options.kd_temperature
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
        # The loop checkpoints the model right after validation, so the recalibrated statistics are
        # what best.pt/last.pt (and the exported ONNX) carry.
        if self.bn_crops is not None and not cfg.qat:  # QAT: a train-mode pass would also move the observers
            recalibrate_batchnorm(model, self.bn_crops)
        gallery = self.embed(model, val_data.gallery)
        query = self.embed(model, val_data.query)
        return embedder_report(
            query, val_data.query_ids, val_data.query_cams, gallery, val_data.gallery_ids, val_data.gallery_cams,
            self.options.open_set_tpr,
        )
