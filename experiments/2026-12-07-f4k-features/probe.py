"""Frozen ImageNet Lite0 features on f4k-tracklets' test split (s2 queries vs s1 gallery), no training:
which input size, aspect and pooling carry identity. Usage: python probe.py [DATA] > probe.txt"""
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from testsplit import TestSplit

from finprint.distill.backbones import EfficientNetLite, load_weights
from finprint.runtime.crops import embedder_preprocess

data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/f4k-tracklets")
split = TestSplit(data)
test, score = split.crops, split.score
imgs = [cv2.cvtColor(cv2.imread(str(c.path)), cv2.COLOR_BGR2RGB) for c in test]
pre = embedder_preprocess()
mean, std = np.array(pre.mean, np.float32), np.array(pre.std, np.float32)
torch.set_num_threads(2)


def tensor(h: int, w: int, mode: str) -> torch.Tensor:
    out = []
    for im in imgs:
        if mode == "letterbox":
            s = min(h / im.shape[0], w / im.shape[1])
            r = cv2.resize(im, (max(1, round(im.shape[1] * s)), max(1, round(im.shape[0] * s))), interpolation=cv2.INTER_AREA)
            canvas = np.full((h, w, 3), 114, np.uint8)
            y, x = (h - r.shape[0]) // 2, (w - r.shape[1]) // 2
            canvas[y:y + r.shape[0], x:x + r.shape[1]] = r
            r = canvas
        else:
            r = cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)
        out.append(((r.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))




for strides, last in (((16,), 1), ((8, 16, 32), 2)):
    trunk = EfficientNetLite("lite0", pre, strides=strides, last_stride=last)
    load_weights(trunk)
    trunk.eval()
    for h, w, mode in ((64, 128, "stretch"), (128, 256, "stretch"), (128, 128, "stretch"), (160, 160, "stretch"), (128, 256, "letterbox")):
        x = tensor(h, w, mode)
        t0 = time.time()
        with torch.no_grad():
            outs = [trunk(x[i:i + 64]) + trunk(torch.flip(x[i:i + 64], dims=[3])) for i in range(0, len(x), 64)]
        n = len(strides)
        secs = time.time() - t0
        for k in range(n):
            fm = torch.cat([o[k] for o in outs])
            fl = torch.cat([o[n + k] for o in outs])
            tag = f"s{strides[k]}{'L1' if last == 1 else ''} {h}x{w} {mode}"
            gap = (fm.mean((2, 3)) + fl.mean((2, 3))).numpy()
            score(gap, f"{tag} gap+flip ({secs:.0f}s)")
            gem = (fm.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3) + fl.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3)).numpy()
            score(gem, f"{tag} gem3+flip")
        if n == 3:
            cat = np.concatenate([F.normalize(torch.cat([o[k] for o in outs]).mean((2, 3)) + torch.cat([o[n + k] for o in outs]).mean((2, 3)), dim=1).numpy() for k in range(n)], 1)
            score(cat, f"s8+s16+s32 {h}x{w} {mode} gap concat")
