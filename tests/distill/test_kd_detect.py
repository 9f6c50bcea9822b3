"""Detector KD terms: each is zero when the student already matches the teacher, and points the right way."""

from __future__ import annotations

import torch

from finprint.distill.detect_loss import Assignment
from finprint.distill.kd_detect import (
    FeatureAdapters,
    box_kd,
    feature_kd,
    kd_ramp,
    mask_kd,
    score_kd,
    teacher_soft_masks,
)


def test_score_kd_is_zero_at_agreement_and_pulls_towards_the_teacher():
    torch.manual_seed(0)
    teacher = torch.rand(2, 50) * 0.98 + 0.01
    same = torch.logit(teacher)
    assert float(score_kd(same, teacher)) < 1e-6
    student = torch.full((2, 50), -4.0, requires_grad=True)
    loss = score_kd(student, teacher)
    assert float(loss.detach()) > 0
    loss.backward()
    # Gradient descent raises logits where the teacher is more confident than the student.
    assert bool((student.grad[teacher > 0.1] < 0).all())


def test_feature_kd_is_zero_for_identical_features_through_identity_adapters():
    torch.manual_seed(0)
    feats = [torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4)]
    adapters = FeatureAdapters([4, 4], [4, 4])
    for conv in adapters.convs:
        torch.nn.init.eye_(conv.weight.view(4, 4))
        torch.nn.init.zeros_(conv.bias)
    boxes = torch.tensor([[[0.0, 0.0, 16.0, 16.0]], [[8.0, 8.0, 30.0, 30.0]]])
    valid = torch.ones(2, 1, dtype=torch.bool)
    assert float(feature_kd(feats, feats, adapters, boxes, valid, (4, 8))) < 1e-6
    other = [f.flip(-1) for f in feats]
    assert float(feature_kd(feats, other, adapters, boxes, valid, (4, 8))) > 0.1


def _mask_setup(has_mask: bool):
    torch.manual_seed(0)
    protos = torch.randn(1, 3, 8, 8)
    coefs = torch.randn(1, 5, 3)
    soft = torch.einsum("m,mhw->hw", coefs[0, 2], protos[0]).sigmoid().view(1, 1, 8, 8)
    fg = torch.zeros(1, 5, dtype=torch.bool)
    fg[0, 2] = True
    asg = Assignment(fg=fg, gt_index=torch.zeros(1, 5, dtype=torch.long), score_target=fg.float())
    batch = {"boxes": torch.tensor([[[0.0, 0.0, 32.0, 32.0]]]), "has_mask": torch.tensor([[has_mask]])}
    return {"mask_coefs": coefs, "protos": protos}, soft, batch, asg


def test_mask_kd_is_zero_at_agreement_and_skips_fish_with_ground_truth_masks():
    out, soft, batch, asg = _mask_setup(has_mask=False)
    assert abs(float(mask_kd(out, soft, batch, asg, all_fish=False))) < 1e-4
    assert float(mask_kd(out, 1.0 - soft, batch, asg, all_fish=False)) > 0.1
    out, soft, batch, asg = _mask_setup(has_mask=True)
    assert float(mask_kd(out, 1.0 - soft, batch, asg, all_fish=False)) == 0.0  # the ground truth is better
    assert float(mask_kd(out, 1.0 - soft, batch, asg, all_fish=True)) > 0.1


def test_teacher_soft_mask_comes_from_the_prediction_of_that_fish_not_a_louder_neighbour():
    # Two anchors inside fish 0's box: anchor 0 predicts fish 0 (score 0.5), anchor 1 a neighbour (score 0.9).
    out = {
        "points": torch.tensor([[10.0, 10.0], [18.0, 10.0]]),
        "boxes": torch.tensor([[[0.0, 0.0, 20.0, 20.0], [15.0, 0.0, 40.0, 20.0]]]),
        "scores": torch.tensor([[0.5, 0.9]]),
        "mask_coefs": torch.tensor([[[5.0], [-5.0]]]),
        "protos": torch.ones(1, 1, 4, 4),
    }
    soft = teacher_soft_masks(out, torch.tensor([[[0.0, 0.0, 20.0, 20.0]]]), torch.ones(1, 1, dtype=torch.bool))
    assert float(soft.float().mean()) > 0.99


def test_kd_ramp():
    assert kd_ramp(0, 12, 0.0) == 1.0
    assert kd_ramp(0, 12, 0.25) == 1 / 3
    assert kd_ramp(2, 12, 0.25) == 1.0
    assert kd_ramp(11, 12, 0.25) == 1.0


def test_box_kd_is_zero_at_agreement_and_ignores_anchors_the_teacher_calls_empty():
    teacher_boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0]]])
    assert float(box_kd(teacher_boxes, teacher_boxes, torch.tensor([[0.9, 0.8]]))) < 1e-6
    moved = teacher_boxes + torch.tensor([[[0.0, 0.0, 0.0, 0.0], [8.0, 8.0, 8.0, 8.0]]])
    assert float(box_kd(moved, teacher_boxes, torch.tensor([[0.9, 0.0]]))) < 1e-6
    assert float(box_kd(moved, teacher_boxes, torch.tensor([[0.9, 0.8]]))) > 0.1
