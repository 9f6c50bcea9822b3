"""Precise BN: recalibrated running statistics make eval mode match the batch statistics."""

from __future__ import annotations

import torch
from torch import nn

from finprint.distill.embedder import STUDENT_S, FishEmbedder, recalibrate_batchnorm

torch.set_num_threads(2)


def _crops(n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 64, 128, generator=g) * 0.5 + 1.5  # an offset the init stats (0, 1) do not know


def _train_mode_embedding(model: nn.Module, crops: torch.Tensor) -> torch.Tensor:
    probe = FishEmbedder(STUDENT_S)
    probe.load_state_dict(model.state_dict())
    probe.train()
    with torch.no_grad():
        return probe(crops)["embedding"]


def _eval_embedding(model: nn.Module, crops: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(crops)["embedding"]


def test_recalibrated_eval_embeddings_match_batch_statistics() -> None:
    torch.manual_seed(0)
    model = FishEmbedder(STUDENT_S)
    crops = _crops()
    target = _train_mode_embedding(model, crops)
    before = (_eval_embedding(model, crops) * target).sum(1).mean()
    model.train()
    recalibrate_batchnorm(model, crops, batch=64)  # one batch: running stats = that batch's stats
    assert model.training  # mode restored
    after = (_eval_embedding(model, crops) * target).sum(1).mean()
    assert before < 0.9  # initial running stats give different embeddings ...
    assert after > 0.99  # ... the recalibrated ones the batch-statistics embeddings
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(m.momentum == 0.1 for m in norms)  # momentum restored for further training


def test_recalibration_averages_over_batches_and_keeps_weights() -> None:
    torch.manual_seed(0)
    model = FishEmbedder(STUDENT_S)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    crops = _crops(96)
    recalibrate_batchnorm(model, crops, batch=32)
    for k, v in model.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k
    # The stem BN sees the raw crops (and, the embedder being mirror-summed, their mirror images)
    # through a fixed conv: its running mean is the mean over all 96 crops and their mirrors.
    stem_conv, stem_bn = model.stem[0], model.stem[1]
    with torch.no_grad():
        expected = stem_conv(torch.cat([crops, torch.flip(crops, dims=[3])])).mean(dim=(0, 2, 3))
    assert torch.allclose(stem_bn.running_mean, expected, atol=1e-4)
