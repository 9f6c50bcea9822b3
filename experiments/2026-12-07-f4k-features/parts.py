"""Which part of a trained colour teacher re-identifies on f4k-tracklets' test split: the raw colour-bag histogram,
the colour branch's projection, the deep branch, the whole embedding. Usage: python parts.py RUN [DATA]"""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from testsplit import TestSplit

from finprint.distill.embed_data import read_crop
from finprint.distill.registry import build
from finprint.runtime.crops import embedder_preprocess
from finprint.runtime.preprocess import to_tensor

run = Path(sys.argv[1])
data = Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/data/f4k-tracklets")
torch.set_num_threads(2)
pre = embedder_preprocess()
split = TestSplit(data)
test, score = split.crops, split.score
x = torch.from_numpy(np.stack([to_tensor(read_crop(c.path, pre), pre) for c in test]))




model = build("embed-teacher-lite0-colour")
state = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
model.load_state_dict(state.get("model", state))
model.eval()
parts = {"hist": [], "colour": [], "deep": [], "all": []}
with torch.no_grad():
    for i in range(0, len(x), 128):
        c = x[i:i + 128]
        hist = torch.softmax(model.colour.assign(F.avg_pool2d(c, 2)), dim=1).mean((2, 3)).sqrt()
        both = torch.cat([c, torch.flip(c, dims=[3])])
        v = model.project(torch.flatten(model.pool(model.trunk(both)[0]), 1))
        deep = v[:len(c)] + v[len(c):]
        deep = model.deep_norm(deep) if getattr(model, "deep_norm", None) is not None else deep
        colour = model.colour.project(hist)
        parts["hist"].append(hist)
        parts["colour"].append(colour)
        parts["deep"].append(deep)
        parts["all"].append(model(c)["embedding"])
for name, chunks in parts.items():
    score(torch.cat(chunks).numpy(), name)
deep, colour = torch.cat(parts["deep"]), torch.cat(parts["colour"])
print("norms: deep", float(deep.norm(dim=1).mean()), "colour", float(colour.norm(dim=1).mean()))
hist = F.normalize(torch.cat(parts["hist"]), dim=1)
for w in (0.5, 1.0, 2.0):
    score(torch.cat([F.normalize(torch.cat(parts["all"]), dim=1), w * hist], 1).numpy(), f"embedding + {w} x raw histogram")
