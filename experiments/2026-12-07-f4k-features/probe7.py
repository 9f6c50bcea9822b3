"""The opponent-colour bag (probe5's winner) made cheaper for the edge student: fewer bins in brightness or chroma,
and the crop at a quarter of its size instead of half. Usage: python probe7.py DATA probe7 > probe7.txt; python probe7.py DATA probe8 > probe8.txt"""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from testsplit import TestSplit, soft_hist

from finprint.distill.embed_data import read_crop
from finprint.runtime.crops import embedder_preprocess

data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/f4k-tracklets")
torch.set_num_threads(1)
pre = embedder_preprocess()
split = TestSplit(data)
full = torch.from_numpy(np.stack([read_crop(c.path, pre)[:, :, ::-1].astype(np.float32) / 255 for c in split.crops]))


def opponent(rgb: torch.Tensor) -> torch.Tensor:
    return torch.stack([rgb.mean(-1), rgb[..., 0] - rgb[..., 1], (rgb[..., 0] + rgb[..., 1]) / 2 - rgb[..., 2]], -1)


def grid(levels, span=0.5) -> torch.Tensor:
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n for n in levels]
    c = torch.cartesian_prod(*axes)
    c[:, 1:] = (c[:, 1:] - 0.5) * 2 * span
    return c


def pooled(k: int) -> torch.Tensor:  # the crop average-pooled by k, as the bag's AvgPool does
    return F.avg_pool2d(full.permute(0, 3, 1, 2), k).permute(0, 2, 3, 1).contiguous()


half, quarter = opponent(pooled(2)), opponent(pooled(4))
runs = {
    "probe7": [("half", half, (4, 16, 16), 0.5, 0.001), ("half", half, (2, 16, 16), 0.5, 0.002),
               ("half", half, (4, 16, 16), 0.35, 0.002), ("half", half, (4, 8, 8), 0.5, 0.002),
               ("quarter", quarter, (4, 16, 16), 0.5, 0.002), ("quarter", quarter, (4, 12, 12), 0.5, 0.002)],
    # the sharper assignment that won above, pushed further
    "probe8": [("half", half, (4, 16, 16), 0.5, 0.0005), ("half", half, (4, 16, 16), 0.7, 0.001),
               ("half", half, (8, 16, 16), 0.5, 0.001)],
}
for name, pts, levels, span, t in runs[sys.argv[2] if len(sys.argv) > 2 else "probe7"]:
    split.score(soft_hist(pts, grid(levels, span), t), f"opponent {name} {levels} +-{span} T={t}")
