"""evaluate_detector / evaluate_embedder / `finprint eval` driven by fake engines with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from finprint.cli import main
from finprint.data.types import Crop, Frame, Instance, ReidSet
from finprint.distill.evaluate import embed_crops, evaluate_detector, evaluate_embedder
from finprint.distill.report import markdown_table, metric_rows, text_table
from finprint.runtime.crops import embedder_preprocess
from finprint.runtime.engines import TensorInfo
from finprint.runtime.manifest import Manifest, Preprocess, TensorSpec, save_manifest, sha256_file

W, H, S = 160, 120, 160  # original frames 160x120, letterboxed into 160x160 (scale 1, 20 px bands)
ANCHORS = 8


class RectangleDetector:
    """Finds bright rectangles in the letterboxed input: a perfect detector for our drawn frames."""

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["images"]
        b = x.shape[0]
        boxes = np.zeros((b, ANCHORS, 4), np.float32)
        scores = np.zeros((b, ANCHORS), np.float32)
        coefs = np.zeros((b, ANCHORS, 1), np.float32)
        protos = np.zeros((b, 1, S // 4, S // 4), np.float32)
        for i in range(b):
            fish = (x[i, 0] > 0.9).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(fish)
            for k in range(1, n):
                x0, y0, w, h = stats[k, :4]
                boxes[i, k - 1] = [x0, y0, x0 + w, y0 + h]
                scores[i, k - 1] = 0.9
                coefs[i, k - 1] = 1.0
            cells = fish.reshape(S // 4, 4, S // 4, 4).mean(axis=(1, 3))
            protos[i, 0] = np.where(cells > 0.5, 10.0, -10.0)
        return {"boxes": boxes, "scores": scores, "mask_coefs": coefs, "protos": protos}


def _draw_frames(tmp_path: Path, shift: int = 0) -> list[Frame]:
    # Rectangles on 4-px boundaries so the stride-4 prototype masks can be exact.
    layouts = [[(20, 20, 80, 60)], [(8, 40, 48, 100), (100, 12, 152, 44)], [(60, 60, 140, 112)]]
    frames = []
    for n, rects in enumerate(layouts):
        image = np.zeros((H, W, 3), np.uint8)
        instances = []
        for x0, y0, x1, y1 in rects:
            cv2.rectangle(image, (x0 + shift, y0), (x1 + shift - 1, y1 - 1), (255, 255, 255), thickness=-1)
            polygon = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
            instances.append(Instance(np.array([x0, y0, x1, y1], np.float32), [polygon]))
        path = tmp_path / f"g{n}_frame.png"
        cv2.imwrite(str(path), image)
        frames.append(Frame(path, W, H, instances, group=f"g{n}"))
    return frames


def test_evaluate_detector_perfect_engine(tmp_path):
    pre = Preprocess(width=S, height=S)
    m = evaluate_detector(RectangleDetector(), pre, _draw_frames(tmp_path), batch=2)
    assert m["box_map"] == pytest.approx(1.0)
    assert m["mask_map"] == pytest.approx(1.0)
    assert (m["images"], m["instances"], m["detections"]) == (3, 4, 4)


def test_evaluate_detector_sees_a_shift(tmp_path):
    # Fish drawn 12 px right of their labels: the 60x40 box's IoU is 48/72 = 0.667 (thresholds .50-.65
    # pass) but the others' differ, so only check the ordering and mAP50 (every IoU here is > 0.5).
    frames = _draw_frames(tmp_path, shift=12)
    m = evaluate_detector(RectangleDetector(), Preprocess(width=S, height=S), frames, batch=8)
    assert 0.2 < m["box_map"] < 0.9
    assert m["box_map50"] == pytest.approx(1.0)


def test_unreadable_frame_is_a_data_error(tmp_path):
    from finprint.errors import DataError

    frames = [Frame(tmp_path / "missing.jpg", W, H, [Instance(np.array([0, 0, 10, 10], np.float32))])]
    with pytest.raises(DataError, match="missing.jpg"):
        evaluate_detector(RectangleDetector(), Preprocess(width=S, height=S), frames)


class MeanColourEmbedder:
    """Embedding = the crop's mean normalised colour: crops of one colour are one identity."""

    def __init__(self, fixed_batch: int | None = None) -> None:
        self.calls: list[int] = []
        if fixed_batch is not None:
            self.inputs = [TensorInfo("crops", (fixed_batch, 3, 64, 128), np.dtype(np.float32))]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["crops"]
        self.calls.append(x.shape[0])
        emb = x.mean(axis=(2, 3))
        return {"embedding": emb / np.linalg.norm(emb, axis=1, keepdims=True)}


COLOURS = {"fish000": (0, 0, 255), "fish001": (0, 255, 0), "fish002": (255, 0, 0), "unk000": (0, 255, 255)}


def _write_crop(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((30, 50, 3), colour, np.uint8))


def _reid_folder(root: Path) -> Path:
    for ident in ("fish000", "fish001", "fish002"):
        _write_crop(root / "train" / f"{ident}_c1_0.png", COLOURS[ident])
        _write_crop(root / "gallery" / f"{ident}_c1_1.png", COLOURS[ident])
        _write_crop(root / "query" / f"{ident}_c2_2.png", COLOURS[ident])
    _write_crop(root / "query" / "unk000_c2_0.png", COLOURS["unk000"])
    return root


def _reid_set(root: Path) -> ReidSet:
    crops = []
    for subset in ("train", "gallery", "query"):
        for p in sorted((root / subset).glob("*.png")):
            ident, cam, _ = p.stem.split("_")
            crops.append(Crop(p, ident, cam, subset, unknown=ident.startswith("unk")))
    return ReidSet(root, crops)


def test_evaluate_embedder_known_answers(tmp_path):
    reid = _reid_set(_reid_folder(tmp_path / "reid"))
    m = evaluate_embedder(MeanColourEmbedder(), embedder_preprocess(), reid)
    # Every known query has its colour twin in the gallery (other camera): rank-1 = mAP = 1.
    assert m["rank1"] == 1.0 and m["rank5"] == 1.0 and m["map"] == pytest.approx(1.0)
    # The yellow unknown is less similar to any gallery colour than every known is to its twin.
    assert m["auroc"] == 1.0 and m["fpr95"] == 0.0
    assert m["open_set_threshold"] == pytest.approx(1.0, abs=1e-5)
    assert (m["queries"], m["unknown_queries"], m["gallery"], m["embedding_dim"]) == (3, 1, 3, 3)
    assert m["cross_camera"] is True  # every query has its identity in the gallery on another camera


def test_same_camera_farm_falls_back_to_same_camera_matches(tmp_path):
    # A farm whose gallery and queries come from one camera: Market's exclusion would skip every
    # query, so auto scores same-camera matches (and says so); forcing it on skips them all.
    root = tmp_path / "reid"
    for ident in ("fish000", "fish001"):
        _write_crop(root / "gallery" / f"{ident}_c1_0.png", COLOURS[ident])
        _write_crop(root / "query" / f"{ident}_c1_1.png", COLOURS[ident])
    reid = _reid_set(root)
    m = evaluate_embedder(MeanColourEmbedder(), embedder_preprocess(), reid)
    assert m["cross_camera"] is False and m["rank1"] == 1.0 and m["skipped_queries"] == 0
    forced = evaluate_embedder(MeanColourEmbedder(), embedder_preprocess(), reid, cross_camera=True)
    assert forced["rank1"] is None and forced["skipped_queries"] == 2


def test_fixed_batch_engine_gets_padded_batches(tmp_path):
    reid = _reid_set(_reid_folder(tmp_path / "reid"))
    engine = MeanColourEmbedder(fixed_batch=2)
    emb = embed_crops(engine, embedder_preprocess(), reid.crops[:5])
    assert emb.shape == (5, 3)
    assert engine.calls == [2, 2, 2]


def test_report_tables():
    rows = [{"model": "student", "box_map": 0.51234, "mask_map": None}, {"model": "teacher|big", "box_map": 0.7}]
    md = markdown_table(rows)
    assert md.splitlines()[0] == "| model | box_map | mask_map |"
    assert md.splitlines()[1] == "| :--- | ---: | :--- |"
    assert "| student | 0.512 | - |" in md and "teacher\\|big" in md
    text = text_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["model", "box_map", "mask_map"]
    assert lines[2].split() == ["student", "0.512", "-"]
    assert len({len(line.rstrip()) for line in lines[:2]}) <= 2
    assert metric_rows({"a": 1, "b": None}) == [{"metric": "a", "value": 1}, {"metric": "b", "value": None}]


def _mean_colour_onnx(path: Path) -> Path:
    """A real ONNX embedder (mean colour, L2-normalised) plus its manifest, as export would write them."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["crops"], ["mean"], axes=[2, 3], keepdims=0),
            helper.make_node("LpNormalization", ["mean"], ["embedding"], axis=1, p=2),
        ],
        "mean_colour",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", 3, 64, 128])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    manifest = Manifest(
        kind="embedder", model_name="mean-colour", finprint_version="test", precision="fp32",
        onnx_file=path.name, onnx_sha256=sha256_file(path), opset=17,
        inputs=[TensorSpec(name="crops", shape=["batch", 3, 64, 128])],
        outputs=[TensorSpec(name="embedding", shape=["batch", 3])],
        preprocess=embedder_preprocess(), embedding_dim=3,
    )
    save_manifest(manifest, path.with_name("mean_colour.manifest.json"))
    return path


def test_cli_eval_onnx_embedder(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    reid = _reid_folder(tmp_path / "reid")
    model = _mean_colour_onnx(tmp_path / "mean_colour.onnx")
    out = tmp_path / "res" / "eval.json"
    assert main(["eval", "--model", str(model), "--data", str(reid), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rank1" in printed and "auroc" in printed
    record = json.loads(out.read_text())
    assert record["task"] == "embed"
    assert record["metrics"]["rank1"] == 1.0 and record["metrics"]["auroc"] == 1.0


def test_cli_eval_reports_a_missing_model(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "nope.onnx"), "--data", str(tmp_path)]) == 2
    assert "no such run folder or model file" in capsys.readouterr().err


def test_evaluation_modules_do_not_import_torch():
    # The export gate measures ONNX models on torch-free installs through these modules.
    import subprocess
    import sys

    code = (
        "import sys, finprint.distill.evaluate, finprint.distill.metrics, finprint.distill.report, "
        "finprint.distill.cli_eval; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_cli_eval_run_folder_embedder(tmp_path, capsys):
    # A run folder as `finprint train` leaves it (config.json + best.pt), with untrained weights:
    # checks the torch path (registry rebuild, TorchEngine, embedder preprocessing), not accuracy.
    torch = pytest.importorskip("torch")
    from finprint.distill import registry, runs
    from finprint.distill.tasks import TrainConfig

    reid = _reid_folder(tmp_path / "reid")
    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(task="embed", model="embed-student-s", data=str(reid), out=str(run), epochs=0)
    runs.write_json_atomic(run / "config.json", cfg.to_dict())
    torch.manual_seed(0)
    model = registry.build(cfg.model)
    runs.save_checkpoint(run / "best.pt", {"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 0})
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(run), "--data", str(reid), "--device", "cpu", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["task"] == "embed" and record["engine"] == "torch cpu"
    metrics = record["metrics"]
    assert metrics["queries"] == 3 and metrics["unknown_queries"] == 1 and metrics["embedding_dim"] == 128
    assert 0.0 <= metrics["rank1"] <= 1.0 and 0.0 <= metrics["auroc"] <= 1.0
    assert "embed-student-s" in capsys.readouterr().out


MARKET_COLOURS = {"0002": (0, 0, 255), "0007": (0, 255, 0), "0010": (255, 0, 0), "0011": (255, 0, 255), "0013": (255, 255, 0)}


def _market_folder(root: Path) -> Path:
    """Market-1501's own layout and names: test identities disjoint from the training ones."""
    for n, ident in enumerate(("0100", "0101")):
        _write_crop(root / "bounding_box_train" / f"{ident}_c1s1_00{n}151_01.jpg", (40 * n, 90, 200))
    for n, (ident, colour) in enumerate(MARKET_COLOURS.items()):
        _write_crop(root / "bounding_box_test" / f"{ident}_c1s1_000{n}51_01.jpg", colour)
        _write_crop(root / "query" / f"{ident}_c2s1_000{n}76_00.jpg", colour)
    _write_crop(root / "bounding_box_test" / "-1_c3s1_000101_01.jpg", (9, 9, 9))  # Market's distractor: skipped
    return root


def test_cli_eval_market_layout_with_disjoint_identities(tmp_path, capsys):
    # Known means "in the gallery", not "seen in training": every query here is re-identifiable.
    pytest.importorskip("onnxruntime")
    model = _mean_colour_onnx(tmp_path / "mean_colour.onnx")
    out = tmp_path / "eval.json"
    sheet = tmp_path / "matches.png"
    assert main(["eval", "--model", str(model), "--data", str(_market_folder(tmp_path / "market")), "--json", str(out),
                 "--matches", str(sheet)]) == 0
    assert cv2.imread(str(sheet)).shape[0] > 5 * 96  # five queries, a row each
    metrics = json.loads(out.read_text())["metrics"]
    assert (metrics["rank1"], metrics["map"], metrics["queries"]) == (1.0, pytest.approx(1.0), 5)
    # No stranger among the queries: a fixed half of the gallery's fish play the strangers.
    assert metrics["open_set_split"] is True and metrics["auroc"] == 1.0 and metrics["unknown_queries"] == 2


def test_open_set_split_is_a_fixed_half():
    from finprint.distill.open_set import stranger_half

    names = [f"t{i}" for i in range(40)]
    half = stranger_half(names)
    assert len(half) == 20 and half == stranger_half(list(reversed(names)) + names[:3])
    assert half != set(names[1::2])  # not a function of the listing order


@pytest.mark.parametrize("case, message", [
    ("badname", "Market-1501 convention"),
    ("empty_gallery", "empty gallery folder"),
    ("no_shared_identity", "no query identity is in the gallery"),
])
def test_cli_eval_refuses_bad_reid_folders(tmp_path, capsys, case, message):
    pytest.importorskip("onnxruntime")
    model = _mean_colour_onnx(tmp_path / "mean_colour.onnx")
    root = _market_folder(tmp_path / "market")
    if case == "badname":
        _write_crop(root / "query" / "fish.jpg", (1, 2, 3))
    elif case == "empty_gallery":
        for p in (root / "bounding_box_test").iterdir():
            p.unlink()
    else:
        for p in (root / "query").iterdir():
            p.rename(p.with_name("9" + p.name[1:]))
    assert main(["eval", "--model", str(model), "--data", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
