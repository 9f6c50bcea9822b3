"""Embedders, metric losses, relational KD, VOS and a short EmbedTask training on tiny fake crops."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from finprint.distill import registry
from finprint.distill.embed_loss import CosFaceHead, batch_hard_triplet
from finprint.distill.flops import count_params
from finprint.distill.kd_embed import relational_kd_loss
from finprint.distill.open_set import choose_open_set_threshold
from finprint.distill.tasks import TrainConfig
from finprint.distill.vos import VirtualOutlierSynthesizer

torch.set_num_threads(2)


def _fake_reid(root: Path, known: int = 6, unknown: int = 2, views: int = 6, seed: int = 0) -> Path:
    """Each identity: its own random blob pattern on a fish-shaped ellipse; views differ by shift and light."""
    rng = np.random.default_rng(seed)

    def pattern() -> np.ndarray:
        base = np.zeros((48, 96, 3), np.uint8)
        cv2.ellipse(base, (48, 24), (44, 18), 0, 0, 360, [int(v) for v in rng.integers(60, 200, 3)], -1)
        for _ in range(6):
            c = (int(rng.integers(15, 80)), int(rng.integers(10, 38)))
            cv2.circle(base, c, int(rng.integers(2, 6)), [int(v) for v in rng.integers(0, 255, 3)], -1)
        return base

    def write(folder: Path, name: str, base: np.ndarray) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        m = np.float32([[1, 0, rng.uniform(-3, 3)], [0, 1, rng.uniform(-2, 2)]])
        img = cv2.warpAffine(base, m, (96, 48), borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        img = np.clip(img * rng.uniform(0.8, 1.2) + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / name), img)

    for i in range(known):
        base = pattern()
        for v in range(views):
            write(root / "train", f"fish{i:03d}_c1_{v}.jpg", base)
        write(root / "gallery", f"fish{i:03d}_c2_0.jpg", base)
        write(root / "query", f"fish{i:03d}_c3_0.jpg", base)
    for i in range(unknown):
        write(root / "query", f"unk{i:03d}_c3_0.jpg", pattern())
    return root


@pytest.mark.parametrize("name", ["embed-teacher-s", "embed-student-s"])
def test_embedder_forward_backward_and_unit_norm(name: str) -> None:
    model = registry.build(name)
    x = torch.randn(4, 3, 64, 128)
    out = model(x)
    (out["feature"].pow(2).mean() + out["embedding"][:, 0].sum()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    emb = model(x)
    assert set(emb) == {"embedding"}
    assert emb["embedding"].shape == (4, 128)
    torch.testing.assert_close(emb["embedding"].norm(dim=1), torch.ones(4))


def test_student_has_at_most_a_tenth_of_the_teacher() -> None:
    for size in ("s", "m"):
        teacher, student = registry.build(f"embed-teacher-{size}"), registry.build(f"embed-student-{size}")
        assert count_params(student) * 10 <= count_params(teacher)


@pytest.mark.parametrize("kind", ["sim", "rkd"])
def test_relational_kd_is_zero_for_the_same_similarities_and_positive_otherwise(kind: str) -> None:
    torch.manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(12, 128), dim=1)
    rotation, _ = torch.linalg.qr(torch.randn(128, 128))
    rotated = teacher @ rotation  # another basis, same similarity structure
    assert relational_kd_loss(rotated, teacher, kind).item() == pytest.approx(0.0, abs=1e-5)
    other = torch.nn.functional.normalize(torch.randn(12, 128), dim=1).requires_grad_()
    loss = relational_kd_loss(other, teacher, kind)
    assert loss.item() > 1e-3
    loss.backward()
    assert other.grad is not None and other.grad.abs().sum() > 0


def test_cos_kd_asks_for_the_teachers_own_vectors_not_just_their_relations() -> None:
    torch.manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(12, 128), dim=1)
    rotation, _ = torch.linalg.qr(torch.randn(128, 128))
    assert relational_kd_loss(teacher.clone(), teacher, "cos").item() == pytest.approx(0.0, abs=1e-5)
    # A rotated copy keeps every relation (zero for "sim"/"rkd") but is not the teacher's space.
    assert relational_kd_loss(teacher @ rotation, teacher, "cos").item() > 1.0
    with pytest.raises(ValueError, match="equal embedding sizes"):
        relational_kd_loss(torch.randn(4, 64), teacher[:4], "cos")


def test_batch_hard_triplet_and_cosface_separate_identities() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[1.0, 0], [1.0, 0.01], [0, 1.0], [0.01, 1.0]])
    mixed = torch.tensor([[1.0, 0], [0, 1.0], [1.0, 0.01], [0.01, 1.0]])
    assert batch_hard_triplet(apart, labels).item() == 0.0
    assert batch_hard_triplet(mixed, labels).item() > 0.5
    head = CosFaceHead(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    assert head(apart, labels) < head(mixed, labels)


def test_vos_samples_lie_in_the_low_likelihood_region() -> None:
    torch.manual_seed(0)
    vos = VirtualOutlierSynthesizer(num_classes=3, dim=8, queue_size=64, candidates=500, select=4)
    centres = torch.randn(3, 8) * 5
    assert vos.sample() is None  # no full queue yet
    for c in range(3):
        vos.update(centres[c] + torch.randn(64, 8), torch.full((64,), c))
    outliers = vos.sample(torch.tensor([0, 1, 2])).view(3, 4, 8)
    for c in range(3):
        inliers = centres[c] + torch.randn(2000, 8)
        threshold = torch.quantile(vos.log_likelihood(inliers, c), 0.05)
        assert (vos.log_likelihood(outliers[c], c) < threshold).all()


def test_open_set_threshold_accepts_95_percent_of_known() -> None:
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(20, 16)).astype(np.float32)
    query = gallery + rng.normal(scale=0.3, size=gallery.shape).astype(np.float32)
    ids = [f"fish{i:03d}" for i in range(20)]
    t = choose_open_set_threshold(query, ids, gallery, ids)
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    assert np.mean((q @ g.T).max(1) >= t) >= 0.95


def _train(task, cfg: TrainConfig, steps: int, teacher=None) -> list[float]:
    dataset, _ = task.build_data(cfg)
    model = registry.build(cfg.model)
    assert task.kd_modules(model, teacher) is None  # the task fits its own training heads
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch, shuffle=True, collate_fn=task.collate)
    losses = []
    model.train()
    while len(losses) < steps:
        for batch in loader:
            target = task.teacher_targets(teacher, batch) if teacher is not None else None
            loss, parts = task.loss(model, batch, target, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(parts["cosface"] + parts["triplet"])
            if len(losses) == steps:
                break
    return losses


def test_short_embed_training_reduces_the_loss_and_validates(tmp_path: Path) -> None:
    from finprint.distill.embed_task import EmbedTask

    torch.manual_seed(0)
    data = _fake_reid(tmp_path / "reid")
    extra = {"views": 3, "repeats": 2, "vos": True, "vos_start": 3, "vos_queue": 4, "augment": False}
    cfg = TrainConfig(task="embed", model="embed-student-s", data=str(data), out=str(tmp_path / "run"),
                      batch=4, lr=1e-3, extra=extra)
    task = EmbedTask()
    losses = _train(task, cfg, steps=30)
    assert np.mean(losses[-6:]) < np.mean(losses[:6])
    assert task.vos is not None and len(task.vos.ready_classes()) >= 2  # VOS ran
    model = registry.build(cfg.model)
    _, val = task.build_data(cfg)
    metrics = task.validate(model, val, cfg)
    assert {"rank1", "map", "auroc", "fpr95", "open_set_threshold"} <= set(metrics)
    assert 0.0 <= metrics["rank1"] <= 1.0


def test_distillation_adds_the_relational_kd_term(tmp_path: Path) -> None:
    from finprint.distill.embed_task import EmbedTask

    data = _fake_reid(tmp_path / "reid", known=3, unknown=1, views=3)
    cfg = TrainConfig(task="embed", model="embed-student-s", data=str(data), out=str(tmp_path / "run"),
                      batch=3, extra={"views": 2, "augment": False})
    task = EmbedTask()
    dataset, _ = task.build_data(cfg)
    batch = task.collate([dataset[i] for i in range(3)])
    teacher, student = registry.build("embed-teacher-s"), registry.build("embed-student-s")
    target = task.teacher_targets(teacher, batch)
    assert target.shape == (6, 128) and not target.requires_grad
    loss, parts = task.loss(student, batch, target, cfg)
    assert parts["kd"] > 0
    loss.backward()
    cfg.kd = False
    assert "kd" not in task.loss(student, batch, target, cfg)[1]


def test_kd_views_run_the_teacher_once_per_crop_and_variant(tmp_path: Path) -> None:
    from finprint.distill.embed_task import EmbedTask

    data = _fake_reid(tmp_path / "reid", known=3, unknown=1, views=3)
    cfg = TrainConfig(task="embed", model="embed-student-s", data=str(data), out=str(tmp_path / "run"),
                      batch=3, extra={"views": 2, "kd_views": 2})
    task = EmbedTask()
    dataset, _ = task.build_data(cfg)
    teacher = registry.build("embed-teacher-s").eval()
    seen: list[int] = []
    teacher.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    for _ in range(6):  # far more views than the 9 crops x 2 variants: most must come from the cache
        batch = task.collate([dataset[i] for i in range(3)])
        assert set(batch[2][:, 1].tolist()) <= {0, 1}
        target = task.teacher_targets(teacher, batch)
        with torch.no_grad():
            torch.testing.assert_close(target, teacher(batch[0])["embedding"])  # the very views the student sees
        seen.pop()  # the check's own forward pass
    assert sum(seen) == len(task._teacher_cache) <= 9 * 2 < 6 * 6


def test_identity_pairs_put_each_identity_beside_one_of_its_nearest(tmp_path: Path) -> None:
    from finprint.distill.embed_task import EmbedTask

    data = _fake_reid(tmp_path / "reid", known=6, unknown=1, views=3)
    cfg = TrainConfig(task="embed", model="embed-student-s", data=str(data), out=str(tmp_path / "run"),
                      batch=3, extra={"views": 2, "augment": False, "neighbours": 1})
    task = EmbedTask()
    dataset, _ = task.build_data(cfg)
    crops, labels, _ = dataset[0]
    assert crops.shape[0] == 4 and labels[:2].tolist() == [0, 0]
    assert labels[2] == labels[3] and labels[2] != 0  # before any table: a random other identity
    # The classifier says identity 4 looks like 0 (and 1 like 2): items of 0 now always bring 4 along.
    model = registry.build(cfg.model)
    batch = task.collate([dataset[i] for i in range(6)])
    task.loss(model, batch, None, cfg)
    heads = task.heads
    assert heads is not None and bool(heads.classifier.imprinted.all())
    with torch.no_grad():
        weight = torch.nn.functional.normalize(torch.randn(6, heads.classifier.weight.shape[1]), dim=1)
        weight[4] = weight[0] + 0.01 * torch.randn_like(weight[0])
        weight[1] = weight[2] + 0.01 * torch.randn_like(weight[2])
        heads.classifier.weight.copy_(weight)
    task._refresh_partners(heads)
    assert {int(dataset[0][1][2]) for _ in range(5)} == {4}
    assert int(dataset[6 + 2][1][2]) == 1  # index 8 is identity 2 again (repeats)
    # Without the option, items hold one identity as before.
    plain = EmbedTask()
    plain_ds, _ = plain.build_data(TrainConfig(task="embed", model="embed-student-s", data=str(data),
                                               out=str(tmp_path / "run2"), extra={"views": 2, "augment": False}))
    assert plain_ds[0][1].tolist() == [0, 0]


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_a_bad_neighbours_option_is_one_line_and_exit_2(tmp_path: Path, capsys, value: str) -> None:
    from finprint.cli import main

    data = _fake_reid(tmp_path / "reid", known=3, unknown=1, views=3)
    out = tmp_path / "run"
    argv = ["train", "--task", "embed", "--model", "embed-student-s", "--data", str(data), "--out", str(out),
            "--set", f"neighbours={value}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "neighbours" in err and len(err.splitlines()) == 1 and not out.exists()


def test_augment_keeps_shape_and_dtype_and_changes_pixels() -> None:
    import random

    from finprint.distill.embed_data import Augment

    image = np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8)
    out = Augment(p_cast=1, p_blur=1, p_noise=1, p_affine=1, p_erase=1, p_flip=1)(image, random.Random(0))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image).mean() > 5
    flipped = Augment(p_cast=0, p_blur=0, p_noise=0, p_affine=0, p_erase=0, p_flip=1)(image, random.Random(0))
    np.testing.assert_array_equal(flipped, image[:, ::-1])


def test_student_exports_to_onnx_opset17_with_matching_outputs() -> None:
    import io
    import warnings

    ort = pytest.importorskip("onnxruntime")
    model = registry.build("embed-student-s").eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.randn(2, 3, 64, 128),), buf, input_names=["crops"], output_names=["embedding"],
                          opset_version=17, dynamic_axes={"crops": {0: "batch"}, "embedding": {0: "batch"}}, dynamo=False)
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(3, 3, 64, 128)).astype(np.float32)
    got = session.run(["embedding"], {"crops": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x))["embedding"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_augment_options_widen_the_geometry_and_bad_ones_are_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    from finprint.cli import main
    from finprint.distill.embed_task import EmbedTask

    data = _fake_reid(tmp_path / "reid", known=3, unknown=1, views=3)
    task = EmbedTask()
    dataset, _ = task.build_data(TrainConfig(task="embed", model="embed-student-s", data=str(data), out=str(tmp_path / "run"),
                                             extra={"aug_rotate_deg": 16, "aug_aspect": 0.4}))
    aug = dataset.augment
    assert (aug.max_rotate_deg, aug.max_aspect, aug.max_scale) == (16.0, 0.4, 0.1)  # the rest keep their defaults
    out = tmp_path / "bad"
    argv = ["train", "--task", "embed", "--model", "embed-student-s", "--data", str(data), "--out", str(out),
            "--set", "aug_rotate_deg=-3"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "aug_rotate_deg" in err and len(err.splitlines()) == 1 and not out.exists()


def test_validation_holds_out_training_identities_when_the_test_ones_are_disjoint(tmp_path):
    # Checkpoint selection must never see the test gallery/query: Market-style folders validate on
    # training identities kept out of training; a farm (shared identities) keeps its own gallery/query.
    import cv2

    from finprint.distill.embed_data import load_reid_splits

    def crop(path: Path, value: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((20, 40, 3), value, np.uint8))

    for i in range(30):
        for k in range(4):
            crop(tmp_path / "market" / "train" / f"t{i:03d}_s1_{k:05d}.jpg", i * 7)
    for i in range(30, 33):
        crop(tmp_path / "market" / "gallery" / f"t{i:03d}_s1_00000.jpg", i * 7)
        crop(tmp_path / "market" / "query" / f"t{i:03d}_s2_00001.jpg", i * 7)
    _, labels, names, val = load_reid_splits(tmp_path / "market")
    held = set(val.gallery_ids)
    assert len(held) == 3 and not held & set(names) and len(names) == 27 and labels.max() == 26
    assert set(val.query_ids) == held and len(val.gallery_ids) == len(val.query_ids) == 6  # 2 + 2 crops each
    assert not any(val.query_unknown)
    _, _, names, val = load_reid_splits(tmp_path / "market", val_identities=0)
    assert len(names) == 30 and set(val.gallery_ids) == {"t030", "t031", "t032"}


def test_colour_bag_puts_a_plain_crop_in_the_bin_of_its_colour() -> None:
    from finprint.distill.embedder import ColourBag
    from finprint.runtime.crops import embedder_preprocess
    from finprint.runtime.preprocess import to_tensor

    bag = ColourBag(4, dim=8)
    pre = embedder_preprocess()

    def histogram(bgr: tuple[int, int, int]) -> torch.Tensor:
        crop = np.full((pre.height, pre.width, 3), bgr, np.uint8)
        x = torch.from_numpy(to_tensor(crop, pre))[None]
        return bag.histogram(x)[0]

    # RGB (223, 32, 159), the centres of bins 3, 0, 2 of 4 per channel: index 3*16 + 0*4 + 2 on the R-major grid.
    h = histogram((159, 32, 223))
    assert int(h.argmax()) == 3 * 16 + 2 and float(h.max()) > 0.9
    assert int(histogram((32, 223, 32)).argmax()) == 0 * 16 + 3 * 4 + 0  # green


@pytest.mark.parametrize("space", ["rgb", "opponent"])
def test_the_colour_bag_is_a_soft_assignment_to_its_grid(space: str) -> None:
    """The per-axis softmaxes multiply out to softmax(-|z - c|^2 / T) over the whole grid, in its own colour space."""
    from finprint.distill.embedder import OPPONENT, OPPONENT_GRID, ColourBag, ColourGrid
    from finprint.runtime.crops import embedder_preprocess

    grid = OPPONENT_GRID if space == "opponent" else ColourGrid(levels=(4, 4, 4))
    pre = embedder_preprocess()
    mean, std = torch.tensor(pre.mean), torch.tensor(pre.std)
    rgb = torch.rand(16, 3, generator=torch.Generator().manual_seed(0))
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n for n in grid.levels]
    centres = torch.cartesian_prod(*axes)
    if space == "opponent":
        centres[:, 1:] = (centres[:, 1:] - 0.5) * 2 * grid.chroma_span
        z = rgb @ OPPONENT.T
    else:
        centres, z = (centres - mean) / std, (rgb - mean) / std
    expected = torch.softmax(-torch.cdist(z, centres) ** 2 / grid.temperature, dim=1)
    bag = ColourBag(grid, dim=8)
    pixels = ((rgb - mean) / std)[:, :, None, None].expand(-1, -1, 2, 2).contiguous()  # the bag halves the crop first
    got = bag.histogram(pixels)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-3)
    assert float(got.max(1).values.mean()) > 0.3  # a soft assignment, not a uniform one


def test_an_unknown_colour_space_is_refused() -> None:
    from finprint.distill.embedder import ColourBag, ColourGrid

    with pytest.raises(ValueError, match="hsv"):
        ColourBag(ColourGrid(space="hsv"), dim=8)


def test_the_colour_teacher_sees_colour_and_ignores_the_mirror() -> None:
    model = registry.build("embed-teacher-lite0-colour").eval()
    x = torch.rand(2, 3, 64, 128)
    with torch.no_grad():
        plain, mirrored = model(x)["embedding"], model(torch.flip(x, dims=[3]))["embedding"]
        tinted = model(x + torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1))["embedding"]
    torch.testing.assert_close(plain, mirrored, atol=1e-5, rtol=1e-4)
    assert float((plain - tinted).norm(dim=1).min()) > 1e-3


def test_a_colour_checkpoint_from_before_the_per_axis_bag_still_loads() -> None:
    """Older checkpoints saved the fixed whole-grid conv (`colour.assign`); it follows from the grid and is dropped."""
    model = registry.build("embed-student-m-opponent")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("colour.weight", "colour.bias"))}
    state |= {"colour.assign.weight": torch.zeros(1024, 3, 1, 1), "colour.assign.bias": torch.zeros(1024)}
    fresh = registry.build("embed-student-m-opponent")
    fresh.load_state_dict(state)  # strict: neither an unexpected nor a missing key
    torch.testing.assert_close(fresh.colour.weight1, model.colour.weight1)
