"""A trained colour teacher's embedding with a raw opponent-colour histogram appended (fixed, untrained), weighted:
does the histogram still add what the trained bag's projection lost? Usage: python fusion.py RUN MODEL [DATA]"""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from testsplit import TestSplit

from finprint.distill.embed_data import read_crop
from finprint.distill.embedder import ColourBag, ColourGrid
from finprint.distill.registry import build
from finprint.runtime.crops import embedder_preprocess
from finprint.runtime.preprocess import to_tensor

run, name = Path(sys.argv[1]), sys.argv[2]
data = Path(sys.argv[3] if len(sys.argv) > 3 else "../shared/data/f4k-tracklets")
torch.set_num_threads(2)
pre = embedder_preprocess()
split = TestSplit(data)
x = torch.from_numpy(np.stack([to_tensor(read_crop(c.path, pre), pre) for c in split.crops]))
model = build(name)
state = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
model.load_state_dict(state.get("model", state))
model.eval()
bag = ColourBag(ColourGrid("opponent", (4, 16, 16), 0.0005), 8)
emb, hist = [], []
with torch.no_grad():
    for i in range(0, len(x), 128):
        c = x[i:i + 128]
        emb.append(model(c)["embedding"])
        logits = bag.assign(F.avg_pool2d(c, 2)).flatten(2).transpose(1, 2)
        hist.append(F.normalize(torch.softmax(logits, -1).mean(1).sqrt(), dim=1))
emb, hist = torch.cat(emb), torch.cat(hist)
split.score(emb.numpy(), "embedding")
split.score(hist.numpy(), "opponent histogram T=0.0005")
for w in (0.5, 0.75, 1.0, 1.5):
    split.score(torch.cat([emb, w * hist], 1).numpy(), f"embedding + {w} x histogram")
