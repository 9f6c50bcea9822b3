"""Soft colour histograms in brightness-normalised colour spaces (what HSV's histogram has and the RGB cube lacks):
rg chromaticity + brightness, and opponent chroma divided by brightness; each point soft-assigned to a grid of
centres, as the ColourBag does. Reference: OpenCV HSV 16x8x8 hard histogram (probe3: 0.747).
Usage: python probe6.py [DATA] > probe6.txt"""
import sys
from pathlib import Path

import cv2
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
bgr = [read_crop(c.path, pre) for c in test]
rgb = torch.from_numpy(np.stack([b[::2, ::2, ::-1].astype(np.float32) / 255 for b in bgr]))  # N,32,64,3


def hsv_hist(levels) -> np.ndarray:
    out = []
    for b in bgr:
        h = cv2.calcHist([cv2.cvtColor(b, cv2.COLOR_BGR2HSV)], [0, 1, 2], None, list(levels), [0, 180, 0, 256, 0, 256])
        out.append(np.sqrt(h.ravel() / h.sum()))
    return np.stack(out)


def grid(*levels: int) -> torch.Tensor:
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n for n in levels]
    return torch.cartesian_prod(*axes)


score(hsv_hist((16, 8, 8)), "hsv 16x8x8 hard (half-size crop: no)")
total = rgb.sum(-1, keepdim=True) + 1e-3
chroma = torch.cat([rgb.mean(-1, keepdim=True), rgb[..., :2] / total], -1)  # brightness, r, g
for levels in ((4, 12, 12), (8, 12, 12), (4, 16, 16)):
    c = grid(*levels)
    for t in (0.002, 0.005):
        score(soft_hist(chroma, c, t), f"rg-chromaticity {levels} T={t}")
