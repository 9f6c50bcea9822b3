"""f4k-tracklets' test split for the probes: its crops, and rank-1 / rank-5 / mAP of features in their order
(s2 queries vs s1 gallery, cross-camera, the repository's own `reid_metrics`); and the soft colour histogram the
colour probes share."""
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from finprint.data.reid import load_reid
from finprint.distill.metrics import reid_metrics


class TestSplit:
    def __init__(self, data: Path) -> None:
        reid, _ = load_reid(data)
        self.crops = [c for c in reid.crops if c.subset in ("gallery", "query")]
        self.gallery = [i for i, c in enumerate(self.crops) if c.subset == "gallery"]
        self.query = [i for i, c in enumerate(self.crops) if c.subset == "query"]

    def score(self, feat: np.ndarray, name: str) -> None:
        g, q, crops = self.gallery, self.query, self.crops
        m = reid_metrics(feat[q], [crops[i].identity for i in q], [crops[i].camera for i in q],
                         feat[g], [crops[i].identity for i in g], [crops[i].camera for i in g])
        print(f"{name:50s} rank1 {m['rank1']:.3f} rank5 {m['rank5']:.3f} mAP {m['map']:.3f}", flush=True)


def soft_hist(points: torch.Tensor, centres: torch.Tensor, t: float) -> np.ndarray:
    """Each point soft-assigned to `centres` (softmax of -distance^2 / t), averaged per crop, square-rooted, unit length:
    the ColourBag's histogram, computed directly. points: [N, ..., channels]."""
    out = []
    for i in range(0, len(points), 64):
        p = points[i:i + 64].reshape(-1, points.shape[-1])
        d2 = torch.cdist(p, centres) ** 2
        out.append(torch.softmax(-d2 / t, dim=1).view(len(points[i:i + 64]), -1, len(centres)).mean(1).sqrt())
    return F.normalize(torch.cat(out), dim=1).numpy()
