"""Relational distillation for the embedder: the student learns the teacher's similarity structure.

Both embedders emit unit vectors, so what matters for re-ID is which crops are near which, not the
coordinates. Matching relations instead of features leaves the student free to choose its own
basis (an orthogonal rotation of the teacher's space costs nothing) and needs no adapter.

- `similarity_kd`: the row-wise distribution over the batch softmax(cos / T) of the student follows
  the teacher's (KL), plus MSE between the two cosine matrices (off-diagonal).
- `rkd_distance` / `rkd_angle`: RKD (Park et al., CVPR 2019) on pairwise distances (normalised by
  their mean) and on the angles of triplets.
- `cos` (the default): the student's embedding imitates the teacher's own, crop by crop. It gives up
  the free basis but hands the student the teacher's whole identity geometry at once, which with 32
  crops per batch RKD only sees in fragments; measured ahead of RKD and of no KD (embed_task.py).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def _off_diagonal(n: int, device: torch.device) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


def similarity_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """KL(teacher || student) over each row's softmax of cosine/T (self excluded) + MSE of cosines."""
    zs, zt = F.normalize(student, dim=1), F.normalize(teacher.detach(), dim=1)
    n = zs.shape[0]
    if n < 2:
        return student.sum() * 0.0
    mask = _off_diagonal(n, zs.device)
    sim_s = (zs @ zs.t())[mask].view(n, n - 1)
    sim_t = (zt @ zt.t())[mask].view(n, n - 1)
    log_p_s = F.log_softmax(sim_s / temperature, dim=1)
    log_p_t = F.log_softmax(sim_t / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()
    return kl + F.mse_loss(sim_s, sim_t)


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Huber loss between pairwise distance matrices, each divided by its mean off-diagonal distance."""
    n = student.shape[0]
    if n < 2:
        return student.sum() * 0.0
    mask = _off_diagonal(n, student.device)

    def normalised(z: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(z, z)[mask]
        return d / d.mean().clamp_min(1e-8)

    return F.smooth_l1_loss(normalised(student), normalised(teacher.detach()))


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Huber loss between the cosines of the angles e_ij . e_kj over all triplets (n^3 memory: small batches)."""
    if student.shape[0] < 3:
        return student.sum() * 0.0

    def angles(z: torch.Tensor) -> torch.Tensor:
        diff = F.normalize(z.unsqueeze(0) - z.unsqueeze(1), p=2, dim=2)
        return torch.bmm(diff, diff.transpose(1, 2)).view(-1)

    return F.smooth_l1_loss(angles(student), angles(teacher.detach()))


KD_KINDS = ("sim", "rkd", "cos")
# "cos": the student's embedding imitates the teacher's own (both are unit vectors of the same size),
# weighted to sit beside a CosFace + triplet loss of ~6 at the start.
COS_WEIGHT = 10.0

# RKD's term weights. Park et al. used 25 (distance) and 50 (angle) next to a cross-entropy; at 1 and 2
# the term was ~0.08 beside a CosFace + triplet loss of ~6 and the demo farm's students with and
# without KD ended level (mAP .535/.538, .522/.528 on seeds 0/1); 10 and 20 made KD win on both seeds.
RKD_DISTANCE_WEIGHT = 10.0
RKD_ANGLE_WEIGHT = 20.0


def relational_kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, kind: str = "sim", temperature: float = 0.1
) -> torch.Tensor:
    """The embedder's KD loss: `sim` (similarity distributions + cosines), `rkd` (10 x distance + 20 x angle)
    or `cos` (10 x (1 - cosine) between each crop's student and teacher embeddings)."""
    if kind == "cos":
        if student.shape[1] != teacher.shape[1]:
            raise ValueError(f"cos KD needs equal embedding sizes, got student {student.shape[1]} and teacher {teacher.shape[1]}")
        return COS_WEIGHT * (1.0 - F.cosine_similarity(student, teacher.detach(), dim=1)).mean()
    if kind == "sim":
        return similarity_kd(student, teacher, temperature)
    if kind == "rkd":
        zs, zt = F.normalize(student, dim=1), F.normalize(teacher, dim=1)
        return RKD_DISTANCE_WEIGHT * rkd_distance(zs, zt) + RKD_ANGLE_WEIGHT * rkd_angle(zs, zt)
    raise ValueError(f"unknown relational KD kind '{kind}'; known: {', '.join(KD_KINDS)}")
