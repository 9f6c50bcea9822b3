"""EmbedTask: the embedder's plugin for the shared training loop (distill/tasks.py).

Backbone loss = CosFace identity classification + batch-hard triplet (+ VOS energy uncertainty, inlier
side) (+ kd_weight x relational KD against the teacher's embeddings of the same augmented batch).

The CosFace classifier and VOS's energy regressor are training-only heads (never exported). They are
updated here, by their own optimiser, in alternation with the backbone: each step first fits the
heads on the detached embeddings (and VOS's virtual outliers, which carry no gradient anyway), then
the backbone's loss uses the heads frozen. So every run (teacher, student with or without KD) trains
with the same losses whatever the loop does with `kd_modules()` (relational KD needs no adapter:
it returns None). The heads are not checkpointed: a resumed run refits them within a few steps.

Options in `cfg.extra`: views (K, default 2; cfg.batch is P identities, so a batch holds P x K crops),
repeats (passes over the identities per epoch, 16), augment (True; no_augment=1 also turns it off),
aug_rotate_deg / aug_scale / aug_shift / aug_aspect (the augmentation's largest turn, zoom, shift and squash:
8, 0.1, 0.06, 0.25), triplet_margin (0.3), neighbours (M: hard identity pairs, each item also holds K views of one of its
identity's M nearest identities by the CosFace weights, refreshed every step; 0 = off, the default; a batch
of P items then holds 2P identities, so halve --batch or repeats to keep the step's cost),
cosface_scale (16), cosface_margin (0.25), head_lr (1e-2), kd_kind ("cos" | "rkd" | "sim"),
kd_temperature (0.1, for "sim"), vos (False), vos_weight (0.1), vos_start (steps, 50), vos_queue (16),
open_set_tpr (0.95), precise_bn (clean training crops whose batch statistics replace the BatchNorm
running statistics before each validation, 192; 0 turns it off).

Defaults follow measurements on synthetic farms. 24 known + 6 unknown fish (10 epochs, seed 0, one
H200): RKD beat the no-KD student on rank-1 and mAP, the similarity-distribution KD ("sim") only on
open-set AUROC/FPR95; VOS changed no metric by more than 0.01 while costing about 3x in crops/s, so
it is opt-in (vos=1). The demo farm (10 known + 3 unknown, 8 epochs, 2 CPU cores): with views=4,
repeats=4 an epoch was 2 steps and 8 epochs left the teacher at its initial mAP (.40 -> .43); K=2 and
16 passes give 10 steps of 32 crops per epoch, where the teacher (at --lr 1e-3; 2e-3 made it diverge
early) reaches mAP .57 and the students learn (.53-.57).
With the stripe-pooled, mirror-summed embedders (30 epochs, group-disjoint gallery/query, seed 0) RKD
fell behind the student without KD (mAP .858 vs .883) while imitating the teacher's embedding
directly ("cos") came out ahead (.897, AUROC .976 vs .948): "cos" is the default.
Hard identity pairs (neighbours=5) on the masked chain (scripts/masked-crops-check's KD student fine-tuned
16 epochs on 2 CPU cores with `finprint distill --init ... --no-kd --lr 0.001`, then the results preset's
daemon step with the fine detector): --batch 8, repeats=2, neighbours=5 against the same crops per step
without pairs (--batch 16, repeats=4). Box by box on the tuning videos 89.3 % (partly hidden 80.3 %) vs
88.5 % (78.3 %), AUROC .920 vs .921; the KD student before fine-tuning 86.1 % (75.1 %). On the scored
videos' tracks no gain: 87.1 % known / 74.1 % strangers at the tracker tuning chose for it, vs 89.0 % / 70.2 %;
at the same tracker (0.5, gate 0; replays, hindsight over every threshold and margin) the best balanced pair
is 88.5 / 84.1 vs 87.8 / 85.1 plain and 90.2 / 86.4 vs 92.1 / 87.2 with gallery whitening. So it stays off.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from finprint.distill.embed_data import Augment, IdentityViews, ReidEvalData, collate_views, load_reid_splits
from finprint.distill.embed_loss import CosFaceHead, batch_hard_triplet
from finprint.distill.embedder import recalibrate_batchnorm
from finprint.distill.kd_embed import relational_kd_loss
from finprint.distill.open_set import embedder_report
from finprint.distill.tasks import TrainConfig
from finprint.distill.vos import EnergyRegressor, VirtualOutlierSynthesizer, energy, uncertainty_loss
from finprint.runtime.crops import embedder_preprocess
from finprint.runtime.preprocess import to_tensor
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


# `--set` options that widen the geometric augmentation (Augment's max_* fields), e.g. for aligned crops,
# which the daemon turns by the detector's coarse masks: `python -m finprint.runtime.score --mask-check N`
# reports how far their axis and width are off (docs/ARCHITECTURE.md, "aligned crops").
AUGMENT_OPTIONS = {"aug_rotate_deg": "max_rotate_deg", "aug_scale": "max_scale", "aug_shift": "max_shift", "aug_aspect": "max_aspect"}


def embed_augment(extra: dict[str, Any]) -> Augment:
    """The training augmentation with the run's aug_* options; a bad value is a ConfigError naming it."""
    from finprint.errors import ConfigError

    fields = {}
    for key, field_name in AUGMENT_OPTIONS.items():
        if key in extra:
            value = extra[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{key}: expected a number >= 0 (the augmentation's largest {field_name[4:].replace('_', ' ')}), got {value!r}")
            fields[field_name] = float(value)
    return Augment(**fields)


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
        self.extra: dict = {}
        self.bn_crops: torch.Tensor | None = None
        self.dataset: IdentityViews | None = None

    def _opt(self, key: str, default: Any) -> Any:
        return self.extra.get(key, default)

    def build_data(self, cfg: TrainConfig) -> tuple[IdentityViews, ReidEvalData]:
        self.extra = dict(cfg.extra)
        images, labels, names, eval_data = load_reid_splits(cfg.data, embedder_preprocess(), self._opt("val_identities", "auto"))
        self.num_classes, self.identity_names = len(names), names
        n_bn = min(int(self._opt("precise_bn", 192)), len(images))
        if n_bn >= 2:
            pick = np.sort(np.random.default_rng(cfg.seed).choice(len(images), n_bn, replace=False))
            pre = embedder_preprocess()
            self.bn_crops = torch.from_numpy(np.stack([to_tensor(images[i], pre) for i in pick]))
        dataset = IdentityViews(
            images, labels, embedder_preprocess(),
            views=int(self._opt("views", 2)), repeats=int(self._opt("repeats", 16)),
            augment=embed_augment(self.extra) if self._opt("augment", True) and not self._opt("no_augment", False) else None, seed=cfg.seed,
            pairs=self._neighbours() > 0,
        )
        self.dataset = dataset
        return dataset, eval_data

    def _neighbours(self) -> int:
        return int(self._opt("neighbours", 0))  # validated by train.check_config

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
    def teacher_targets(self, teacher: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        # The teacher is small: run it on the same augmented views rather than caching clean-crop outputs,
        # so teacher and student relations describe identical inputs.
        was_training = teacher.training
        teacher.eval()
        out = teacher(batch[0].to(_device_of(teacher)))["embedding"]
        teacher.train(was_training)
        return out.float()

    def kd_modules(self, student: nn.Module, teacher: nn.Module | None) -> nn.Module | None:
        return None  # relational KD compares similarity matrices: no adapter to train

    def _ensure_heads(self, dim: int, device: torch.device) -> EmbedHeads:
        if self.num_classes is None:
            raise RuntimeError("EmbedTask.build_data must run before the first loss (it counts the identities)")
        if self.heads is None:
            self.heads = EmbedHeads(
                dim, self.num_classes, float(self._opt("cosface_scale", 16.0)), float(self._opt("cosface_margin", 0.25))
            )
            self.head_optimizer = torch.optim.Adam(self.heads.parameters(), lr=float(self._opt("head_lr", 1e-2)))
            self.vos = VirtualOutlierSynthesizer(self.num_classes, dim, queue_size=int(self._opt("vos_queue", 16)))
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
            if self._opt("vos", False) and self.vos is not None:
                self.vos.update(feats, labels)
                if self.steps >= int(self._opt("vos_start", 50)):
                    outliers = self.vos.sample(labels.unique())
                if outliers is not None:
                    outliers = outliers.to(emb.device)
                    e_in = energy(heads.classifier.logits(feats))
                    e_out = energy(heads.classifier.logits(outliers))
                    head_loss = head_loss + float(self._opt("vos_weight", 0.1)) * uncertainty_loss(heads.energy, e_in, e_out)
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
        parts: dict[str, torch.Tensor] = {"triplet": batch_hard_triplet(emb, labels, float(self._opt("triplet_margin", 0.3)))}
        heads = self._ensure_heads(emb.shape[1], device)
        outliers = self._fit_heads(heads, emb, labels)
        self._refresh_partners(heads)
        # The backbone sees the heads frozen (they were just fitted above).
        parts["cosface"] = heads.classifier(emb, labels, frozen=True)
        if outliers is not None:
            # Inlier side of VOS's logistic loss: the backbone lowers the energy of real crops.
            e_in = energy(heads.classifier.logits(emb, frozen=True))
            logit = heads.energy(e_in, frozen=True)
            parts["vos"] = float(self._opt("vos_weight", 0.1)) * 0.5 * F.binary_cross_entropy_with_logits(
                logit, torch.ones_like(logit)
            )
        if teacher_out is not None and cfg.kd:
            kd = relational_kd_loss(
                emb, teacher_out.to(device), str(self._opt("kd_kind", "cos")), float(self._opt("kd_temperature", 0.1))
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
            float(self._opt("open_set_tpr", 0.95)),
        )
