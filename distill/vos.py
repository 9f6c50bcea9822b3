"""Virtual outlier synthesis (VOS, Du et al., ICLR 2022) for open-set re-identification.

Each training identity is modelled as a Gaussian in embedding space: its mean comes from a queue
of its recent embeddings, the covariance is shared by all identities (estimated from the centred
queues, plus a ridge). Candidates are drawn from each identity's Gaussian and the ones with the
lowest likelihood (the outer shell, where an unseen fish would fall) become virtual outliers. An
energy-based uncertainty loss (logistic regression on the energy -logsumexp(logits) of inliers vs
virtual outliers) teaches the classifier to give high energy there, which pulls identities into
compact clusters and leaves room between them for fish never seen in training.

With a shared covariance Sigma = L L^T, a sample mu + L eps has Mahalanobis distance |eps|^2, so
"lowest likelihood" is simply "largest |eps|": no density evaluation needed.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class VirtualOutlierSynthesizer:
    """Per-identity feature queues -> class-conditional Gaussians -> low-likelihood samples."""

    def __init__(
        self,
        num_classes: int,
        dim: int,
        queue_size: int = 16,
        candidates: int = 1000,
        select: int = 2,
        ridge: float = 1e-4,
        seed: int = 0,
    ) -> None:
        if queue_size < 2:
            raise ValueError(f"queue_size must be >= 2, got {queue_size}")
        self.num_classes, self.dim = num_classes, dim
        self.queue_size, self.candidates, self.select, self.ridge = queue_size, candidates, select, ridge
        self.queue = torch.zeros(num_classes, queue_size, dim)
        self.filled = torch.zeros(num_classes, dtype=torch.long)  # how many slots hold a feature
        self.cursor = torch.zeros(num_classes, dtype=torch.long)
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        feats, labs = features.detach().float().cpu(), labels.detach().cpu()
        for feature, label in zip(feats, labs.tolist(), strict=True):
            slot = int(self.cursor[label])
            self.queue[label, slot] = feature
            self.cursor[label] = (slot + 1) % self.queue_size
            self.filled[label] = min(int(self.filled[label]) + 1, self.queue_size)

    def ready_classes(self) -> torch.Tensor:
        """Identities whose queue is full: only they give a trustworthy mean."""
        return torch.nonzero(self.filled >= self.queue_size).flatten()

    def gaussians(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(class indices, means [C, D], Cholesky factor L of the shared covariance [D, D]) or None."""
        classes = self.ready_classes()
        if len(classes) < 2:
            return None
        queues = self.queue[classes]  # [C, Q, D]
        means = queues.mean(1)
        centred = (queues - means[:, None]).reshape(-1, self.dim)
        cov = centred.t() @ centred / max(1, centred.shape[0] - 1)
        cov = cov + self.ridge * torch.eye(self.dim)
        chol = torch.linalg.cholesky(cov)
        return classes, means, chol

    @torch.no_grad()
    def sample(self, classes: torch.Tensor | None = None) -> torch.Tensor | None:
        """Virtual outliers [len(classes) * select, D] for the given (ready) identities, or None if not ready."""
        fitted = self.gaussians()
        if fitted is None:
            return None
        ready, means, chol = fitted
        if classes is not None:
            keep = torch.isin(ready, classes.cpu())
            if not bool(keep.any()):
                return None
            means = means[keep]
        eps = torch.randn(means.shape[0], self.candidates, self.dim, generator=self.generator)
        # Lowest likelihood under N(mu, L L^T) == largest |eps|.
        far = eps.norm(dim=2).topk(self.select, dim=1).indices
        chosen = torch.gather(eps, 1, far[..., None].expand(-1, -1, self.dim))
        return (means[:, None] + chosen @ chol.t()).reshape(-1, self.dim)

    def log_likelihood(self, x: torch.Tensor, class_index: int) -> torch.Tensor:
        """log N(x; mu_class, Sigma) under the current fit (for checks and analysis)."""
        fitted = self.gaussians()
        if fitted is None:
            raise ValueError("not enough full queues to fit the Gaussians yet")
        ready, means, chol = fitted
        where = torch.nonzero(ready == class_index).flatten()
        if len(where) == 0:
            raise ValueError(f"identity {class_index} has no full queue yet")
        diff = (x.float().cpu() - means[where[0]]).t()
        white = torch.linalg.solve_triangular(chol, diff, upper=False)
        log_det = 2.0 * torch.log(torch.diagonal(chol)).sum()
        return -0.5 * (white.pow(2).sum(0) + log_det + self.dim * math.log(2 * math.pi))


def energy(logits: torch.Tensor) -> torch.Tensor:
    """Free energy -logsumexp(logits): low for inputs the classifier knows, high for outliers."""
    return -torch.logsumexp(logits, dim=1)


class EnergyRegressor(nn.Module):
    """VOS's uncertainty head: logistic regression from -energy to P(inlier)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)
        nn.init.constant_(self.linear.weight, 1.0)
        nn.init.zeros_(self.linear.bias)

    def forward(self, energies: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        weight, bias = self.linear.weight, self.linear.bias
        if frozen:  # gradients reach only the energies
            weight, bias = weight.detach(), bias.detach()
        return F.linear(-energies[:, None], weight, bias).squeeze(1)


def uncertainty_loss(regressor: EnergyRegressor, inlier_energy: torch.Tensor, outlier_energy: torch.Tensor) -> torch.Tensor:
    """Binary logistic loss: inliers (label 1) vs virtual outliers (label 0), classes weighted equally."""
    inl = F.binary_cross_entropy_with_logits(regressor(inlier_energy), torch.ones_like(inlier_energy))
    out = F.binary_cross_entropy_with_logits(regressor(outlier_energy), torch.zeros_like(outlier_energy))
    return 0.5 * (inl + out)
