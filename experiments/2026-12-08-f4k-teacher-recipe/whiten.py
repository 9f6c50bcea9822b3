"""A trained embedder's f4k test scores after within-class whitening (runtime/identity.py's
`within_class_whitening`) fitted on the *training* trajectories' embeddings (no test label used), at a few
strengths, and with the gallery's own (what the daemon does with its enrolled fish), plus open-set AUROC / FPR95 on
the repository's stranger half. Usage: python whiten.py RUN MODEL [DATA] > whiten-NAME.txt"""
import sys
from pathlib import Path

import numpy as np
import torch

from finprint.data.reid import load_reid
from finprint.distill.embed_data import read_crop
from finprint.distill.open_set import embedder_report
from finprint.distill.registry import build
from finprint.runtime.crops import embedder_preprocess
from finprint.runtime.identity import within_class_whitening
from finprint.runtime.preprocess import to_tensor

run, name = Path(sys.argv[1]), sys.argv[2]
data = Path(sys.argv[3] if len(sys.argv) > 3 else "../shared/data/f4k-tracklets")
torch.set_num_threads(2)
pre = embedder_preprocess()
reid, _ = load_reid(data)
crops = reid.crops
model = build(name)
state = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
model.load_state_dict(state.get("model", state))
model.eval()
cache = run / "whiten-embeddings.npy"
if cache.is_file():
    emb = np.load(cache)
else:
    out = []
    with torch.no_grad():
        for i in range(0, len(crops), 256):
            x = torch.from_numpy(np.stack([to_tensor(read_crop(c.path, pre), pre) for c in crops[i:i + 256]]))
            out.append(model(x)["embedding"].numpy())
    emb = np.concatenate(out)
    np.save(cache, emb)
ident = np.array([c.identity for c in crops])
cams = np.array([c.camera for c in crops])
sub = np.array([c.subset for c in crops])
tr, g, q = sub == "train", sub == "gallery", sub == "query"


def score(feat: np.ndarray, label: str) -> None:
    feat = feat / np.linalg.norm(feat, axis=1, keepdims=True)
    m = embedder_report(feat[q], ident[q].tolist(), cams[q].tolist(), feat[g], ident[g].tolist(), cams[g].tolist(),
                        open_set_split="half")
    print(f"{label:50s} rank1 {m['rank1']:.3f} rank5 {m['rank5']:.3f} mAP {m['map']:.3f} "
          f"AUROC {m['auroc']:.3f} FPR95 {m['fpr95']:.3f}", flush=True)


score(emb, "plain")
for s in (0.03, 0.1, 0.3, 1.0):
    w = within_class_whitening(emb[tr], ident[tr], s)
    score(emb @ w.T, f"whitened on training trajectories, strength {s}")
for s in (0.1, 0.3):
    w = within_class_whitening(emb[g], ident[g], s)
    score(emb @ w.T, f"whitened on the gallery itself, strength {s}")
