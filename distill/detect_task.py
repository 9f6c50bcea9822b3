"""DetectTask: the detector's plug-in for the shared training loop (distill/train.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from finprint.data.types import Frame
from finprint.distill.detect_data import (
    Augment,
    DetectionDataset,
    collate_detection,
    detector_preprocess,
    split_frames,
)
from finprint.distill.detect_loss import detection_loss
from finprint.distill.kd_detect import (
    FeatureAdapters,
    kd_loss,
    kd_ramp,
    teacher_soft_masks,
)
from finprint.distill.options import DetectOptions
from finprint.distill.tasks import TrainConfig
from finprint.distill.torch_engine import TorchEngine
from finprint.errors import DataError
from finprint.runtime.detect_post import Detections, decode
from finprint.runtime.preprocess import preprocess_batch

log = logging.getLogger(__name__)


@dataclass
class DetectValData:
    frames: list[Frame]
    imgsz: int


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def predict_frames(
    model: nn.Module, frames: list[Frame], imgsz: int, batch: int = 8, score_threshold: float = 0.05
) -> list[Detections]:
    """Torch model -> Detections per frame, through the engine contract and the runtime's decode."""
    import cv2

    engine = TorchEngine(_unwrap(model), device=next(model.parameters()).device)
    pre = detector_preprocess(imgsz)
    out: list[Detections] = []
    for start in range(0, len(frames), batch):
        chunk = frames[start : start + batch]
        images = []
        for f in chunk:
            img = cv2.imread(str(f.image_path), cv2.IMREAD_COLOR)
            if img is None:
                raise DataError(f.image_path, "cannot decode image")
            images.append(img)
        x, infos = preprocess_batch(images, pre)
        raw = engine.infer({"images": x})
        for i, info in enumerate(infos):
            out.append(
                decode(raw["boxes"][i], raw["scores"][i], raw["mask_coefs"][i], raw["protos"][i], info,
                       score_threshold=score_threshold, iou_threshold=0.6, max_det=100)
            )
    return out


def train_augment(options: DetectOptions) -> Augment:
    """The training augmentation from the run's options (zoom range, colour shifts, no_augment)."""
    if options.no_augment:
        return Augment.off()
    base = Augment()
    return Augment(scale=options.aug_scale, hsv=(options.aug_hue, *base.hsv[1:]), colour=options.aug_colour, gray=options.aug_gray)


class DetectTask:
    name = "detect"
    main_metric = "map"  # mean of box mAP50-95 and (where the data has masks) mask mAP50-95
    cache_mb = 1024  # teacher outputs kept in RAM for distillation (float16)

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], dict[str, Any]] = {}
        self._cache_bytes = 0
        self.adapters: FeatureAdapters | None = None
        self.strides: tuple[int, ...] = (8, 16, 32)
        self._train_data: DetectionDataset | None = None  # its epoch drives the KD warm-up (resume-safe)

    def build_data(self, cfg: TrainConfig) -> tuple[DetectionDataset, DetectValData]:
        train, val = split_frames(cfg.data, cfg.val_groups, cfg.seed)
        if not train:
            raise DataError(cfg.data, "no training frames found")
        if not val:
            log.warning("%s: no validation frames; validating on the training frames", cfg.data)
            val = train
        opts: DetectOptions = cfg.options
        val_max = opts.val_max
        if len(val) > val_max:  # spread over the set, so every group stays represented
            val = [val[i] for i in np.linspace(0, len(val) - 1, val_max).astype(int)]
        train_max = opts.train_max
        if 0 < train_max < len(train):  # a fixed, evenly spread subset: CPU budgets on large sets like DeepFish
            train = [train[i] for i in np.linspace(0, len(train) - 1, train_max).astype(int)]
        aug = train_augment(opts)
        dataset = DetectionDataset(train, cfg.imgsz, aug, seed=cfg.seed, aug_variants=opts.aug_variants)
        log.info("detect data: %d train frames, %d validation frames", len(train), len(val))
        self._train_data = dataset
        return dataset, DetectValData(val, cfg.imgsz)

    def collate(self, items: list) -> dict:
        return collate_detection(items)

    @torch.no_grad()
    def teacher_targets(self, teacher: nn.Module, batch: dict) -> dict:
        """Teacher scores, boxes, pyramid features and per-fish soft masks; on a CPU cached per (frame,
        augmentation variant). On a GPU the teacher's forward pass costs less than the cache's trips through
        host memory: cached there, the KD student trained at 115 images/s on an H200 against 270 without KD."""
        if batch["images"].device.type != "cpu":
            return self.teacher_forward(teacher, batch)
        keys = batch["keys"]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        fresh: dict[tuple[int, int], dict[str, Any]] = {}  # over the cache budget: this step only
        if missing:
            idx = torch.tensor(missing, device=batch["images"].device)
            out = self.teacher_forward(teacher, {k: batch[k][idx] for k in ("images", "boxes", "valid")})
            budget = float(self.cache_mb) * 2**20
            for j, i in enumerate(missing):
                n = int(batch["valid"][i].sum())
                item = {
                    "scores": out["scores"][j],
                    "boxes": out["boxes"][j],
                    "feats": [f[j] for f in out["feats"]],
                    "soft_masks": out["soft_masks"][j, :n],
                }
                size = sum(t.numel() * 2 for t in [item["scores"], item["boxes"], item["soft_masks"], *item["feats"]])
                if self._cache_bytes + size <= budget:
                    self._cache[keys[i]] = item
                    self._cache_bytes += size
                else:
                    fresh[keys[i]] = item
        items = [self._cache[k] if k in self._cache else fresh[k] for k in keys]
        dev = batch["images"].device
        g = batch["boxes"].shape[1]
        soft = torch.zeros((len(items), g, *items[0]["soft_masks"].shape[-2:]), dtype=torch.float16)
        for i, it in enumerate(items):
            soft[i, : it["soft_masks"].shape[0]] = it["soft_masks"]
        return {
            "scores": torch.stack([it["scores"] for it in items]).to(dev),
            "boxes": torch.stack([it["boxes"] for it in items]).to(dev),
            "feats": [torch.stack([it["feats"][lvl] for it in items]).to(dev) for lvl in range(len(items[0]["feats"]))],
            "soft_masks": soft.to(dev),
        }

    @torch.no_grad()
    def teacher_forward(self, teacher: nn.Module, batch: dict) -> dict:
        """teacher_targets without the cache, on the batch's device (the same half-precision targets)."""
        out = _unwrap(teacher).run(batch["images"], extras=True)
        return {
            "scores": out["scores"].half(),
            "boxes": out["boxes"].half(),
            "feats": [f.half() for f in out["feats"]],
            "soft_masks": teacher_soft_masks(out, batch["boxes"], batch["valid"]),
        }

    def loss(self, model: nn.Module, batch: dict, teacher_out: dict | None, cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(batch["images"])
        opts: DetectOptions = cfg.options
        total, parts, asg = detection_loss(out, batch, opts.mask_weight)
        if teacher_out is not None:
            weights = (opts.kd_score, opts.kd_feat, opts.kd_mask, opts.kd_box)
            kd, kd_parts = kd_loss(out, teacher_out, self.adapters, batch, asg, self.strides, weights,
                                   mask_all_fish=opts.kd_mask_all)
            epoch = self._train_data.epoch if self._train_data is not None else cfg.epochs
            ramp = kd_ramp(epoch, cfg.epochs, opts.kd_warmup)
            total = total + cfg.kd_weight * ramp * kd
            parts.update(kd_parts)
        return total, parts

    def kd_modules(self, student: nn.Module, teacher: nn.Module) -> nn.Module | None:
        s, t = _unwrap(student), _unwrap(teacher)
        self.strides = tuple(s.strides)
        self.adapters = FeatureAdapters([s.spec.neck] * 3, [t.spec.neck] * 3)
        return self.adapters

    def validate(self, model: nn.Module, val_data: DetectValData, cfg: TrainConfig) -> dict[str, float]:
        from finprint.distill.metrics import coco_metrics

        was_training = model.training
        model.eval()
        try:
            preds = predict_frames(model, val_data.frames, val_data.imgsz)
        finally:
            model.train(was_training)
        m = coco_metrics(val_data.frames, preds)
        result = {k: float(v) for k, v in m.items() if k in ("box_map", "box_map50", "mask_map", "mask_map50") and v is not None}
        maps = [result[k] for k in ("box_map", "mask_map") if k in result]
        result["map"] = float(np.mean(maps)) if maps else 0.0
        return result
