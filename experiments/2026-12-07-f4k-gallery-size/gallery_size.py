"""How f4k-tracklets' test rank-1 depends on how many trajectories are enrolled, and whether the teacher's misses
are fish of the query's own species. Usage: python gallery_size.py RUN [DATA] (RUN: a trained embedder run)."""
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "2026-12-07-f4k-features"))
from testsplit import TestSplit  # noqa: E402

from finprint.distill.embed_data import read_crop  # noqa: E402
from finprint.distill.metrics import reid_metrics  # noqa: E402
from finprint.distill.registry import build  # noqa: E402
from finprint.runtime.crops import embedder_preprocess  # noqa: E402
from finprint.runtime.preprocess import to_tensor  # noqa: E402

run = Path(sys.argv[1])
data = Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/data/f4k-tracklets")
torch.set_num_threads(2)
pre = embedder_preprocess()
split = TestSplit(data)
crops = split.crops
x = torch.from_numpy(np.stack([to_tensor(read_crop(c.path, pre), pre) for c in crops]))
model = build(json.loads((run / "config.json").read_text())["model"])
state = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
model.load_state_dict(state.get("model", state))
model.eval()
with torch.no_grad():
    feat = torch.cat([model(x[i:i + 128])["embedding"] for i in range(0, len(x), 128)]).numpy()
feat /= np.linalg.norm(feat, axis=1, keepdims=True)
ids = np.array([c.identity for c in crops])
cams = [c.camera for c in crops]
g_all, q_all = np.array(split.gallery), np.array(split.query)
names = sorted(set(ids[g_all]))
print(f"{run}: {len(names)} test trajectories, {len(g_all)} gallery / {len(q_all)} query crops")


def score(keep: set[str]) -> dict:
    g = [i for i in g_all if ids[i] in keep]
    q = [i for i in q_all if ids[i] in keep]
    return reid_metrics(feat[q], list(ids[q]), [cams[i] for i in q], feat[g], list(ids[g]), [cams[i] for i in g])


rng = np.random.default_rng(0)
for n in (50, 140, 300, len(names)):
    draws = [score(set(rng.choice(names, n, replace=False))) for _ in range(1 if n == len(names) else 20)]
    print(f"{n:4d} trajectories enrolled: rank1 {np.mean([d['rank1'] for d in draws]):.3f} "
          f"mAP {np.mean([d['map'] for d in draws]):.3f} ({len(draws)} draws)")

species = {row["trajectory"]: row["species"] for row in csv.DictReader(open(data / "crops.csv"))}
sim = feat[q_all] @ feat[g_all].T
top = g_all[sim.argmax(1)]
wrong = ids[top] != ids[q_all]
same = np.array([species[a] == species[b] for a, b in zip(ids[top], ids[q_all], strict=True)])
print(f"rank-1 misses: {wrong.sum()} of {len(q_all)} queries; the wrong match is of the query's species in "
      f"{(wrong & same).sum()} ({100 * (wrong & same).sum() / max(1, wrong.sum()):.0f} %)")
