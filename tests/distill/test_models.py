"""Every registered model: forward on a tiny input (contract outputs, no NaN) and backward; size budgets."""

from __future__ import annotations

import pytest
import torch

from finprint.distill import registry
from finprint.distill.flops import count_flops, count_params
from finprint.errors import FinprintError

DETECT_KEYS = {"boxes", "scores", "mask_coefs", "protos"}


def _example(task: str) -> torch.Tensor:
    return torch.rand(2, 3, 64, 64) if task == "detect" else torch.rand(2, 3, 64, 128)


@pytest.mark.parametrize("name", registry.names())
def test_forward_backward(name: str):
    torch.manual_seed(0)
    entry = registry.entry(name)
    model = registry.build(name)
    x = _example(entry.task)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, dict)
    for v in out.values():
        if isinstance(v, torch.Tensor):
            assert torch.isfinite(v).all(), name
    if entry.task == "detect":
        assert set(out) == DETECT_KEYS
        a = (64 // 8) ** 2 + (64 // 16) ** 2 + (64 // 32) ** 2
        assert out["boxes"].shape == (2, a, 4)
        assert out["scores"].shape == (2, a) and ((out["scores"] >= 0) & (out["scores"] <= 1)).all()
        m = out["mask_coefs"].shape[-1]
        assert out["mask_coefs"].shape == (2, a, m) and out["protos"].shape == (2, m, 16, 16)
        assert (out["boxes"][..., 2:] >= out["boxes"][..., :2]).all()
    else:
        emb = out["embedding"]
        assert emb.shape[0] == 2
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(2), atol=1e-4, rtol=0)
    model.train()
    out = model(x)
    tensors = [v for v in out.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    tensors += [t for v in out.values() if isinstance(v, list) for t in v if isinstance(t, torch.Tensor)]
    loss = sum(t.float().mean() for t in tensors)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), name
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


@pytest.mark.parametrize("teacher_name, student_name", [
    ("fishseg-teacher", "fishseg-student"), ("fishseg-teacher", "fishseg-student-lean"),
    ("fishseg-teacher-fine", "fishseg-student-lean-fine"), ("fishseg-teacher-s", "fishseg-student-s"),
])
def test_detector_student_is_at_most_a_tenth_of_its_teacher(teacher_name, student_name):
    teacher = registry.build(teacher_name)
    student = registry.build(student_name)
    assert count_params(student) * 10 <= count_params(teacher)
    x = torch.rand(1, 3, 128, 128)
    assert count_flops(student, x) * 5 <= count_flops(teacher, x)
    assert registry.entry(teacher_name).role == "teacher" and registry.entry(student_name).role == "student"


def test_flops_counter_matches_hand_count():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, torch.rand(2, 3, 10, 10)) == 2 * (8 * 10 * 10) * (3 * 9)
    lin = torch.nn.Linear(5, 4)
    assert count_flops(lin, torch.rand(3, 5)) == 2 * 4 * 5


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(FinprintError, match="fishseg-student"):
        registry.build("no-such-model")


def test_lean_student_options_keep_the_contract_and_the_budget():
    """Patch stem, shared head, stride-8 prototypes: same outputs and shapes, <= 1/10 of the teacher."""
    teacher, lean = registry.build("fishseg-teacher"), registry.build("fishseg-student-lean")
    assert count_params(lean) * 10 <= count_params(teacher)
    assert lean.stem[0].stride == (4, 4) and lean.spec.proto_stride == 8
    with torch.no_grad():
        out = lean.eval()(torch.rand(1, 3, 96, 96))
    assert out["protos"].shape[-2:] == (24, 24)  # still stride 4 (docs/CONTRACTS.md)
    assert out["boxes"].shape[1] == out["mask_coefs"].shape[1] == (12 * 12 + 6 * 6 + 3 * 3)


@pytest.mark.parametrize("name, sees_stride4", [("fishseg-student-lean", False), ("fishseg-student-lean-fine", True),
                                                ("fishseg-teacher", False), ("fishseg-teacher-fine", True)])
def test_fine_prototypes_see_the_stride4_map_the_pyramid_does_not_carry(name: str, sees_stride4: bool):
    """proto_skip: the backbone's stride-4 map reaches the prototypes directly, not only through P3."""
    model = registry.build(name).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)["protos"]
        clean: dict[str, torch.Tensor] = {}
        # Perturb what s4 hands on, but give s8 (hence the whole pyramid) the clean map.
        h1 = model.s4.register_forward_hook(lambda _m, _i, out: clean.setdefault("c4", out) + torch.randn_like(out))
        h2 = model.s8.register_forward_pre_hook(lambda _m, _i: (clean["c4"],))
        perturbed = model(x)
        h1.remove()
        h2.remove()
    assert perturbed["protos"].shape == plain.shape == (1, 16, 16, 16)
    assert torch.equal(perturbed["boxes"], model(x)["boxes"])  # the pyramid saw the clean map
    assert (not torch.allclose(perturbed["protos"], plain)) == sees_stride4
