"""Metric-learning losses for the embedder and the P identities x K views batch sampler.

- CosFace (Wang et al., CVPR 2018): a cosine classifier over training identities with an additive
  margin, so identities separate by angle, which is what the gallery's cosine threshold measures.
- Batch-hard triplet (Hermans et al., 2017): for each anchor the farthest positive and the
  nearest negative in the batch; needs K >= 2 views per identity, which the crop dataset gives
  by yielding P identities x K views (distill/embed_data.py).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class CosFaceHead(nn.Module):
    """Cosine classifier with additive margin; `cosine()` (no margin) also feeds the open-set energy."""

    def __init__(self, dim: int, num_classes: int, scale: float = 16.0, margin: float = 0.25) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a margin classifier needs at least 2 identities, got {num_classes}")
        self.weight = nn.Parameter(F.normalize(torch.randn(num_classes, dim), dim=1))
        self.register_buffer("imprinted", torch.zeros(num_classes, dtype=torch.bool))
        self.scale = scale
        self.margin = margin

    @torch.no_grad()
    def imprint(self, embedding: torch.Tensor, labels: torch.Tensor) -> None:
        """Weight imprinting (Qi et al., CVPR 2018): an identity's weight starts at the mean of its first
        embeddings, so the margin loss is meaningful from the first step instead of chasing random weights."""
        z = F.normalize(embedding.detach().float(), dim=1)
        for label in labels.unique().tolist():
            if not bool(self.imprinted[label]):
                self.weight[label] = F.normalize(z[labels == label].mean(0), dim=0)
                self.imprinted[label] = True

    def cosine(self, embedding: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """Cosine to each identity's weight; `frozen` lets gradients reach only the embedding."""
        weight = self.weight.detach() if frozen else self.weight
        return F.linear(F.normalize(embedding, dim=1), F.normalize(weight, dim=1))

    def logits(self, embedding: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """Scaled cosine logits without margin (what the energy score uses)."""
        return self.scale * self.cosine(embedding, frozen)

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        cos = self.cosine(embedding, frozen)
        onehot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return F.cross_entropy(self.scale * (cos - self.margin * onehot), labels)


def batch_hard_triplet(embedding: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Mean over anchors of max(0, d(a, hardest p) - d(a, hardest n) + margin); cosine distance on unit vectors."""
    z = F.normalize(embedding, dim=1)
    dist = 1.0 - z @ z.t()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not bool(valid.any()):
        return embedding.sum() * 0.0  # no anchor has both a positive and a negative in this batch
    hardest_pos = dist.masked_fill(~pos_mask, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(~neg_mask, float("inf")).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()
