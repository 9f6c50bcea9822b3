"""Frozen ImageNet EfficientNet-Lite0/1/2 trunks at the embedder's 64x128 input, stride 16 (last stride 1, as the
embedder teacher), four stripes + mirror sum, no training: does a larger trunk know more about f4k identities?
Usage: python frozen.py [DATA] > frozen.txt"""
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "2026-12-07-f4k-features"))
from testsplit import TestSplit  # noqa: E402

from finprint.distill.backbones import EfficientNetLite, load_weights
from finprint.distill.embed_data import read_crop
from finprint.runtime.crops import embedder_preprocess
from finprint.runtime.preprocess import to_tensor

data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/f4k-tracklets")
torch.set_num_threads(2)
split = TestSplit(data)
pre = embedder_preprocess()
x = torch.from_numpy(np.stack([to_tensor(read_crop(c.path, pre), pre) for c in split.crops]))
for variant in ("lite0", "lite1", "lite2"):
    trunk = EfficientNetLite(variant, pre, strides=(16,), last_stride=1)
    load_weights(trunk)
    trunk.eval()
    t0 = time.time()
    with torch.no_grad():
        maps = [trunk(x[i:i + 128])[0] + torch.flip(trunk(torch.flip(x[i:i + 128], dims=[3]))[0], dims=[3])
                for i in range(0, len(x), 128)]
    fm = torch.cat(maps)
    ms = 1000 * (time.time() - t0) / len(x)
    score = split.score
    score(fm.mean((2, 3)).numpy(), f"{variant} ({fm.shape[1]}ch, {ms:.1f} ms/crop) gap+flip")
    score(F.adaptive_avg_pool2d(fm, (1, 4)).flatten(1).numpy(), f"{variant} 4 stripes+flip")
