"""f4k-tracklets' test split for the probes: its crops, and rank-1 / rank-5 / mAP of features in their order
(s2 queries vs s1 gallery, cross-camera, the repository's own `reid_metrics`)."""
from pathlib import Path

import numpy as np

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
