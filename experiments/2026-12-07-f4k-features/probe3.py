"""Colour alone on f4k-tracklets' test split: histogram bins, colour space, spatial layout.
Usage: python probe3.py [DATA] > probe3.txt"""
import sys
from pathlib import Path

import cv2
import numpy as np
from testsplit import TestSplit

data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/f4k-tracklets")
split = TestSplit(data)
test, score = split.crops, split.score
imgs = [cv2.resize(cv2.imread(str(c.path)), (128, 64), interpolation=cv2.INTER_AREA) for c in test]




def hist(space: int | None, bins: list[int], ranges: list[int], grid: tuple[int, int] = (1, 1)) -> np.ndarray:
    out = []
    for im in imgs:
        c = cv2.cvtColor(im, space) if space is not None else im
        parts = []
        for rows in np.array_split(c, grid[0], axis=0):
            for cell in np.array_split(rows, grid[1], axis=1):
                h = cv2.calcHist([np.ascontiguousarray(cell)], [0, 1, 2], None, bins, ranges).ravel()
                parts.append(h / max(h.sum(), 1))
        out.append(np.sqrt(np.concatenate(parts)))
    return np.stack(out)


for bins in ([8, 4, 4], [16, 4, 4], [8, 8, 8], [16, 8, 8]):
    score(hist(cv2.COLOR_BGR2HSV, bins, [0, 180, 0, 256, 0, 256]), f"hsv {bins}")
score(hist(None, [8, 8, 8], [0, 256] * 3), "bgr [8,8,8]")
score(hist(cv2.COLOR_BGR2LAB, [8, 8, 8], [0, 256] * 3), "lab [8,8,8]")
for grid in ((1, 4), (2, 1), (2, 4), (3, 1)):
    score(hist(cv2.COLOR_BGR2HSV, [8, 4, 4], [0, 180, 0, 256, 0, 256], grid), f"hsv [8,4,4] grid {grid}")
small = np.stack([cv2.resize(im, (8, 4), interpolation=cv2.INTER_AREA).astype(np.float32).ravel() for im in imgs])
score(small - small.mean(1, keepdims=True), "thumbnail 4x8 BGR (centred)")
score(small, "thumbnail 4x8 BGR")
