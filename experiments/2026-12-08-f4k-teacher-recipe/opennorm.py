"""Open-set scores on f4k's stranger half from a trained embedder's cached embeddings (whiten.py writes them):
the max gallery cosine (the repository's rule) against cohort-normalised scores, where the cohort is the
*training* trajectories' embeddings (no test label used). Usage: python opennorm.py RUN [DATA] > opennorm-NAME.txt"""
import sys
from pathlib import Path

import numpy as np

from finprint.data.reid import load_reid
from finprint.distill.metrics import open_set_metrics
from finprint.distill.open_set import stranger_half

run = Path(sys.argv[1])
data = Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/data/f4k-tracklets")
reid, _ = load_reid(data)
crops = reid.crops
emb = np.load(run / "whiten-embeddings.npy")
emb /= np.linalg.norm(emb, axis=1, keepdims=True)
ident = np.array([c.identity for c in crops])
sub = np.array([c.subset for c in crops])
strangers = stranger_half(sorted(set(ident[sub == "gallery"])))
g = (sub == "gallery") & ~np.isin(ident, list(strangers))
q = sub == "query"
unknown = np.isin(ident[q], list(strangers))
cohort = emb[sub == "train"]
sim = emb[q] @ emb[g].T  # [Q, G]
gid = ident[g]
ids, inv = np.unique(gid, return_inverse=True)
per_id = np.full((sim.shape[0], len(ids)), -2.0)
np.maximum.at(per_id.T, inv, sim.T)  # each query's best crop per enrolled fish
top = np.sort(per_id, axis=1)[:, ::-1]
qc = emb[q] @ cohort.T
gc = emb[g] @ cohort.T


def report(score: np.ndarray, label: str) -> None:
    o = open_set_metrics(score[~unknown], score[unknown])
    print(f"{label:52s} AUROC {o['auroc']:.3f} FPR95 {o['fpr95']:.3f}", flush=True)


report(top[:, 0], "max cosine (the repository's rule)")
report(top[:, 0] - top[:, 1], "margin: best fish minus second fish")
for k in (10, 50, 200):
    qtop = np.sort(qc, axis=1)[:, -k:]
    report(top[:, 0] - qtop.mean(1), f"max cosine - query's mean top-{k} cohort cosine")
    report((top[:, 0] - qtop.mean(1)) / qtop.std(1), f"  z-normalised by the query's top-{k} cohort")
    gtop = np.sort(gc, axis=1)[:, -k:]
    best = np.argmax(sim, axis=1)
    s = sim[np.arange(len(best)), best]
    asn = 0.5 * ((s - qtop.mean(1)) / qtop.std(1) + (s - gtop.mean(1)[best]) / gtop.std(1)[best])
    report(asn, f"  adaptive s-norm, top-{k} (query and its best gallery crop)")
    full = 0.5 * ((sim - qtop.mean(1, keepdims=True)) / qtop.std(1, keepdims=True)
                  + (sim - gtop.mean(1)[None]) / gtop.std(1)[None])
    report(full.max(1), f"  adaptive s-norm, top-{k}, max over the gallery")
