"""Soft colour histograms on grids the ColourBag's 1x1 conv can hold (any grid of centres in RGB): the RGB cube vs an
opponent-colour grid with more bins in chroma than in brightness (what HSV's histogram did better).
Usage: python probe5.py [DATA] > probe5.txt"""
import sys
from pathlib import Path

import numpy as np
import torch
from testsplit import TestSplit, soft_hist

from finprint.distill.embed_data import read_crop
from finprint.runtime.crops import embedder_preprocess

data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/f4k-tracklets")
torch.set_num_threads(1)
pre = embedder_preprocess()
split = TestSplit(data)
test, score = split.crops, split.score
rgb = torch.from_numpy(np.stack([read_crop(c.path, pre)[::2, ::2, ::-1].astype(np.float32) / 255 for c in test]))  # N,32,64,3


def grid(*levels: int) -> torch.Tensor:
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n for n in levels]
    return torch.cartesian_prod(*axes)


for t in (0.002, 0.005):
    score(soft_hist(rgb, grid(8, 8, 8), t), f"rgb 8x8x8 T={t}")
# opponent space: brightness (R+G+B)/3 in 0..1, chroma (R-G) and (R+G-2B)/2 in -1..1
opp = torch.stack([rgb.mean(-1), rgb[..., 0] - rgb[..., 1], (rgb[..., 0] + rgb[..., 1]) / 2 - rgb[..., 2]], -1)
for levels, span in (((4, 16, 16), 0.5), ((4, 12, 12), 0.5), ((8, 16, 16), 0.5)):
    c = grid(*levels)
    c[:, 1:] = (c[:, 1:] - 0.5) * 2 * span  # chroma grid over -span..span (water scenes are not saturated)
    for t in (0.002, 0.005):
        score(soft_hist(opp, c, t), f"opponent {levels} chroma +-{span} T={t}")
