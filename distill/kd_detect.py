"""Detector distillation: score KD, fish-weighted feature imitation through adapters, mask KD.

- Score KD: BCE of the student's fish logits against the teacher's probabilities at every anchor
  (teacher and student share strides and input size, hence anchors).
- Feature imitation: 1x1 adapter convs map each student pyramid level to the teacher's channels;
  MSE against the teacher's (per-channel standardised) features, weighted to fish regions
  (inside ground-truth boxes weight 1, background BG_WEIGHT) so the sea does not dominate.
- Mask KD: for every ground-truth fish the teacher's soft mask (its best anchor's assembled
  prototype mask) is a target for the student's positive anchors serving that fish.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from finprint.distill.detect_loss import Assignment, assemble_mask_logits
from torch import nn

BG_WEIGHT = 0.1
W_SCORE, W_FEAT, W_MASK = 1.0, 1.0, 1.0


class FeatureAdapters(nn.Module):
    def __init__(self, student_channels: list[int], teacher_channels: list[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(s, t, 1) for s, t in zip(student_channels, teacher_channels, strict=True))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(f) for conv, f in zip(self.convs, feats, strict=True)]


def _standardise(f: torch.Tensor) -> torch.Tensor:
    mean = f.mean((2, 3), keepdim=True)
    std = f.std((2, 3), keepdim=True).clamp(min=1e-3)
    return (f - mean) / std


@torch.no_grad()
def teacher_soft_masks(out: dict, gt_boxes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per fish [B,G,h,w] (float16): the assembled mask of the teacher anchor inside the box that scores best."""
    pts = out["points"]
    px, py = pts[:, 0].view(1, 1, -1), pts[:, 1].view(1, 1, -1)
    inside = (px > gt_boxes[..., 0:1]) & (px < gt_boxes[..., 2:3]) & (py > gt_boxes[..., 1:2]) & (py < gt_boxes[..., 3:4])
    score = torch.where(inside, out["scores"].unsqueeze(1), torch.full_like(inside, -1.0, dtype=out["scores"].dtype))
    best = score.argmax(-1)  # [B,G]
    coefs = out["mask_coefs"].gather(1, best.unsqueeze(-1).expand(-1, -1, out["mask_coefs"].shape[-1]))
    masks = torch.einsum("bgm,bmhw->bghw", coefs.float(), out["protos"].float()).sigmoid()
    return (masks * valid[..., None, None]).half()


def fish_weight(gt_boxes: torch.Tensor, valid: torch.Tensor, h: int, w: int, stride: float) -> torch.Tensor:
    """[B,1,h,w]: 1 on cells whose centre is inside any fish box, BG_WEIGHT elsewhere."""
    ys = (torch.arange(h, device=gt_boxes.device) + 0.5) * stride
    xs = (torch.arange(w, device=gt_boxes.device) + 0.5) * stride
    b = gt_boxes[..., None, None, :]  # [B,G,1,1,4]
    inside = (
        (xs.view(1, 1, 1, -1) > b[..., 0]) & (xs.view(1, 1, 1, -1) < b[..., 2])
        & (ys.view(1, 1, -1, 1) > b[..., 1]) & (ys.view(1, 1, -1, 1) < b[..., 3])
    ) & valid[..., None, None]
    return torch.where(inside.any(1, keepdim=True), 1.0, BG_WEIGHT)


def kd_loss(
    student_out: dict,
    teacher: dict,
    adapters: FeatureAdapters | None,
    batch: dict,
    asg: Assignment,
    strides: tuple[int, ...],
    weights: tuple[float, float, float] = (W_SCORE, W_FEAT, W_MASK),
) -> tuple[torch.Tensor, dict[str, float]]:
    """teacher: {"scores" [B,A], "feats" [levels of B,C,h,w], "soft_masks" [B,G,h,w]} (cached or fresh)."""
    t_scores = teacher["scores"].float()
    score = F.binary_cross_entropy_with_logits(student_out["logits"].float(), t_scores, reduction="none")
    # Weight anchors where either model sees a fish; plain BCE over ~1e3 empty anchors drowns them.
    s_prob = student_out["logits"].detach().float().sigmoid()
    weight = (t_scores - s_prob).abs().pow(2.0) + 1e-3  # quality-focal style
    score = (score * weight).sum() / weight.sum().clamp(min=1.0) * 10.0
    feat = student_out["logits"].sum() * 0.0
    if adapters is not None:
        for s_f, t_f, stride in zip(adapters(student_out["feats"]), teacher["feats"], strides, strict=True):
            wmap = fish_weight(batch["boxes"], batch["valid"], t_f.shape[2], t_f.shape[3], stride)
            err = (_standardise(s_f.float()) - _standardise(t_f.float())).pow(2).mean(1, keepdim=True)
            feat = feat + (err * wmap).sum() / wmap.sum()
    mask = student_out["logits"].sum() * 0.0
    soft = teacher.get("soft_masks")
    if soft is not None and asg.fg.any():
        bi, ai = asg.fg.nonzero(as_tuple=True)
        gi = asg.gt_index[bi, ai]
        logits = assemble_mask_logits(student_out["mask_coefs"][bi, ai], student_out["protos"], bi)
        box = batch["boxes"][bi, gi] / 4.0
        h, w = logits.shape[1:]
        ys = torch.arange(h, device=logits.device).view(1, -1, 1) + 0.5
        xs = torch.arange(w, device=logits.device).view(1, 1, -1) + 0.5
        in_box = ((xs >= box[:, 0, None, None]) & (xs <= box[:, 2, None, None]) & (ys >= box[:, 1, None, None]) & (ys <= box[:, 3, None, None])).float()
        bce = F.binary_cross_entropy_with_logits(logits, soft[bi, gi].float(), reduction="none") * in_box
        mask = (bce.sum((1, 2)) / in_box.sum((1, 2)).clamp(min=1.0)).mean()
    total = weights[0] * score + weights[1] * feat + weights[2] * mask
    return total, {"kd_score": float(score.detach()), "kd_feat": float(feat.detach()), "kd_mask": float(mask.detach())}
