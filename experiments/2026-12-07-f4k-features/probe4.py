"""Learnable-in-principle colour features: soft assignment of each pixel to K colour centres (k-means on training
pixels, in the embedder's normalised RGB), averaged over the crop ("bag of colours"), alone and beside frozen
ImageNet Lite0 features. Usage: python probe4.py [DATA] > probe4.txt"""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from testsplit import TestSplit

from finprint.data.reid import load_reid
from finprint.distill.backbones import EfficientNetLite, load_weights
from finprint.distill.embed_data import read_crop
from finprint.runtime.crops import embedder_preprocess
from finprint.runtime.preprocess import to_tensor

data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/f4k-tracklets")
torch.manual_seed(0)
torch.set_num_threads(2)
pre = embedder_preprocess()
split = TestSplit(data)
test, score = split.crops, split.score
train = [c for c in load_reid(data)[0].crops if c.subset == "train"][::10]
x = torch.from_numpy(np.stack([to_tensor(read_crop(c.path, pre), pre) for c in test]))
xt = torch.from_numpy(np.stack([to_tensor(read_crop(c.path, pre), pre) for c in train]))




def kmeans(pixels: torch.Tensor, k: int, iters: int = 25) -> torch.Tensor:
    c = pixels[torch.randperm(len(pixels))[:k]].clone()
    for _ in range(iters):
        a = torch.cdist(pixels, c).argmin(1)
        for j in range(k):
            sel = pixels[a == j]
            if len(sel):
                c[j] = sel.mean(0)
    return c


pixels = xt[:, :, ::4, ::4].permute(0, 2, 3, 1).reshape(-1, 3)
pixels = pixels[torch.randperm(len(pixels))[:60000]]
bags = {}
for k in (64, 256):
    centres = kmeans(pixels, k)
    for t in (0.02, 0.1):
        bag = torch.cat([torch.softmax(-torch.cdist(x[i:i + 64].permute(0, 2, 3, 1).reshape(-1, 3), centres) ** 2 / t, dim=-1)
                         .view(len(x[i:i + 64]), -1, k).mean(1) for i in range(0, len(x), 64)]).sqrt()
        bags[(k, t)] = F.normalize(bag, dim=1).numpy()
        score(bags[(k, t)], f"bag of {k} colours, T={t}")
trunk = EfficientNetLite("lite0", pre, strides=(16,))
load_weights(trunk)
trunk.eval()
with torch.no_grad():
    deep = torch.cat([trunk(x[i:i + 128])[0].mean((2, 3)) + trunk(torch.flip(x[i:i + 128], dims=[3]))[0].mean((2, 3))
                      for i in range(0, len(x), 128)])
deep = F.normalize(deep, dim=1).numpy()
for kt, bag in bags.items():
    for w in (1.0, 2.0):
        score(np.concatenate([deep, w * bag], 1), f"lite0 s16 gap + {w} x bag{kt}")
