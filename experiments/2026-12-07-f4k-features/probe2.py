"""Frozen ImageNet Lite0 at the embedder's 64x128 input: which pooling keeps identity (global, stripes, the whole
map), which stage, and what plain colour histograms give. Usage: python probe2.py [DATA] > probe2.txt"""
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from testsplit import TestSplit

from finprint.distill.backbones import EfficientNetLite, load_weights
from finprint.distill.embed_data import read_crop
from finprint.runtime.crops import embedder_preprocess
from finprint.runtime.preprocess import to_tensor

data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/f4k-tracklets")
split = TestSplit(data)
test, score = split.crops, split.score
imgs = [cv2.imread(str(c.path)) for c in test]
pre = embedder_preprocess()
torch.set_num_threads(2)




hsv = np.stack([cv2.calcHist([cv2.cvtColor(cv2.resize(im, (64, 64)), cv2.COLOR_BGR2HSV)], [0, 1, 2], None, [8, 4, 4],
                             [0, 180, 0, 256, 0, 256]).ravel() for im in imgs])
score(np.sqrt(hsv), "hsv histogram 8x4x4 (sqrt)")
sizes = np.array([[np.log(im.shape[1]), np.log(im.shape[0])] for im in imgs])
x = torch.from_numpy(np.stack([to_tensor(read_crop(c.path, pre), pre) for c in test]))  # as training reads them
trunk = EfficientNetLite("lite0", pre, strides=(8, 16, 32))
load_weights(trunk)
trunk.eval()
with torch.no_grad():
    outs = [trunk(x[i:i + 128]) + trunk(torch.flip(x[i:i + 128], dims=[3])) for i in range(0, len(x), 128)]
for k, name in enumerate(("s8 (stage 3, 40ch)", "s16 (stage 5, 112ch)", "s32 (stage 7, 320ch)")):
    fm = torch.cat([o[k] for o in outs])
    fl = torch.flip(torch.cat([o[3 + k] for o in outs]), dims=[3])  # mirror's map turned back
    score((fm.mean((2, 3)) + fl.mean((2, 3))).numpy(), f"{name} gap+flip")
    stripes = F.adaptive_avg_pool2d(fm + fl, (1, 4)).flatten(1)
    score(stripes.numpy(), f"{name} 4 stripes+flip")
    grid = F.adaptive_avg_pool2d(fm + fl, (2, 4)).flatten(1)
    score(grid.numpy(), f"{name} 2x4 grid+flip")
    score(F.normalize((fm + fl).flatten(1), dim=1).numpy(), f"{name} whole map+flip")
    z = F.normalize(fm.mean((2, 3)) + fl.mean((2, 3)), dim=1).numpy()
    score(np.concatenate([z, 0.5 * np.sqrt(hsv) / np.linalg.norm(np.sqrt(hsv), axis=1, keepdims=True)], 1), f"{name} gap + hsv")
