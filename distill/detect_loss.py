"""Detector loss: task-aligned assignment, IoU-aware BCE score loss, GIoU box loss, prototype mask loss.

Assignment (TOOD-style): an anchor can serve a fish if its centre lies inside the fish's box; each
fish takes the k anchors with the best alignment score^alpha * IoU^beta, and an anchor claimed by
several fish goes to the one it overlaps most. The score target of a positive is its normalised
alignment, so scores rank boxes by quality (what NMS and mAP reward).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TOPK = 10
ALPHA = 1.0
BETA = 6.0
W_BOX, W_CLS, W_MASK = 5.0, 1.0, 2.0
MAX_MASK_POSITIVES = 512  # caps the mask loss cost per batch on CPU


@dataclass
class Assignment:
    fg: torch.Tensor  # [B,A] bool
    gt_index: torch.Tensor  # [B,A] long: which fish a positive anchor serves
    score_target: torch.Tensor  # [B,A] float in [0,1]


def box_iou_pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [...,G,4], b [...,A,4] xyxy -> IoU [...,G,A]."""
    a = a.unsqueeze(-2)
    b = b.unsqueeze(-3)
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter + 1e-9)


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise GIoU of matched boxes [N,4]."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = area_a + area_b - inter + 1e-9
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(-1) + 1e-9
    return inter / union - (hull - union) / hull


@torch.no_grad()
def assign(
    pred_boxes: torch.Tensor, scores: torch.Tensor, points: torch.Tensor, gt_boxes: torch.Tensor, valid: torch.Tensor
) -> Assignment:
    b, a = scores.shape
    if gt_boxes.shape[1] == 0 or not valid.any():
        zeros = torch.zeros((b, a), device=scores.device)
        return Assignment(zeros.bool(), zeros.long(), zeros)
    px, py = points[:, 0].view(1, 1, -1), points[:, 1].view(1, 1, -1)
    inside = (
        (px > gt_boxes[..., 0:1]) & (px < gt_boxes[..., 2:3]) & (py > gt_boxes[..., 1:2]) & (py < gt_boxes[..., 3:4])
    ) & valid.unsqueeze(-1)  # [B,G,A]
    ious = box_iou_pairwise(gt_boxes, pred_boxes.float()) * inside
    align = scores.float().unsqueeze(1).pow(ALPHA) * ious.pow(BETA) * inside
    k = min(TOPK, a)
    top = align.topk(k, dim=-1).indices
    cand = torch.zeros_like(inside).scatter_(-1, top, True) & inside & (align > 0)
    # Small fish with no aligned anchor yet still get the anchor nearest their centre inside the box.
    no_cand = valid & ~cand.any(-1) & inside.any(-1)
    if no_cand.any():
        cx = (gt_boxes[..., 0] + gt_boxes[..., 2]) / 2
        cy = (gt_boxes[..., 1] + gt_boxes[..., 3]) / 2
        d = (px - cx.unsqueeze(-1)) ** 2 + (py - cy.unsqueeze(-1)) ** 2
        nearest = torch.where(inside, d, torch.full_like(d, float("inf"))).argmin(-1, keepdim=True)
        cand |= torch.zeros_like(cand).scatter_(-1, nearest, True) & no_cand.unsqueeze(-1)
    ious_c = torch.where(cand, ious, torch.full_like(ious, -1.0))
    best_iou, gt_index = ious_c.max(1)  # [B,A]
    fg = cand.any(1)
    # Normalised alignment target: per fish, scaled so its best anchor gets that anchor's IoU.
    align_c = align * cand
    max_align = align_c.amax(-1, keepdim=True).clamp(min=1e-9)
    max_iou = (ious * cand).amax(-1, keepdim=True)
    norm = (align_c / max_align * max_iou).amax(1)  # [B,A]
    norm = torch.where(fg, norm.clamp(min=0.05), torch.zeros_like(norm))
    return Assignment(fg, gt_index, norm)


def assemble_mask_logits(coefs: torch.Tensor, protos: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
    """coefs [P,M] of anchors in images `image_index` [P] x protos [B,M,h,w] -> mask logits [P,h,w].

    One matmul per image instead of gathering a [P,M,h,w] copy of the prototypes (hundreds of MB).
    """
    m, h, w = protos.shape[1:]
    out = coefs.new_empty((coefs.shape[0], h * w), dtype=torch.float32)
    for b in image_index.unique().tolist():
        sel = image_index == b
        out[sel] = (coefs[sel].float() @ protos[b].float().reshape(m, h * w)).float()  # autocast gives fp16
    return out.reshape(-1, h, w)


def mask_loss(
    coefs: torch.Tensor, protos: torch.Tensor, batch: dict, asg: Assignment
) -> torch.Tensor:
    """BCE between assembled masks of positive anchors and their fish's mask, inside the fish's box."""
    fg = asg.fg & batch["has_mask"].gather(1, asg.gt_index)
    if not fg.any():
        return coefs.sum() * 0.0
    bi, ai = fg.nonzero(as_tuple=True)
    if bi.numel() > MAX_MASK_POSITIVES:
        keep = torch.linspace(0, bi.numel() - 1, MAX_MASK_POSITIVES, device=bi.device).long()
        bi, ai = bi[keep], ai[keep]
    gi = asg.gt_index[bi, ai]
    h, w = protos.shape[2:]
    logits = assemble_mask_logits(coefs[bi, ai], protos, bi)
    target = batch["masks"][bi, gi].float()
    box = batch["boxes"][bi, gi] / 4.0  # mask grid is stride 4
    ys = torch.arange(h, device=coefs.device).view(1, -1, 1) + 0.5
    xs = torch.arange(w, device=coefs.device).view(1, 1, -1) + 0.5
    in_box = (
        (xs >= box[:, 0, None, None]) & (xs <= box[:, 2, None, None]) & (ys >= box[:, 1, None, None]) & (ys <= box[:, 3, None, None])
    ).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * in_box
    return (bce.sum((1, 2)) / in_box.sum((1, 2)).clamp(min=1.0)).mean()


def detection_loss(out: dict, batch: dict, mask_weight: float = W_MASK) -> tuple[torch.Tensor, dict[str, float], Assignment]:
    """out: a train-mode forward of FishDetector; batch: collate_detection's dict; mask_weight: the mask
    loss's weight against box and score (the re-ID crops of a masked embedder depend on the masks)."""
    logits = out["logits"].float()
    asg = assign(out["boxes"].detach(), logits.detach().sigmoid(), out["points"], batch["boxes"], batch["valid"])
    norm = asg.score_target.sum().clamp(min=1.0)
    cls = F.binary_cross_entropy_with_logits(logits, asg.score_target, reduction="sum") / norm
    if asg.fg.any():
        gt = batch["boxes"].gather(1, asg.gt_index.unsqueeze(-1).expand(-1, -1, 4))[asg.fg]
        weight = asg.score_target[asg.fg]
        box = ((1.0 - giou(out["boxes"][asg.fg].float(), gt)) * weight).sum() / norm
    else:
        box = out["boxes"].sum() * 0.0
    msk = mask_loss(out["mask_coefs"], out["protos"], batch, asg)
    total = W_BOX * box + W_CLS * cls + mask_weight * msk
    return total, {"box": float(box.detach()), "cls": float(cls.detach()), "mask": float(msk.detach())}, asg
