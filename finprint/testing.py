"""Tiny ONNX models with the contract's inputs and outputs, for tests, soak runs and smoke checks.

They need no training: the detector reports fixed fish (boxes, scores, masks that fill the box)
whatever the image, and the embedder maps a crop's mean colour through a fixed projection, so
fish of different colours get different, stable identities. Both come with a manifest, so they
go through exactly the engine and manifest checks a real export does. Needs the `onnx` package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finprint import __version__
from finprint.runtime.crops import EMBED_HEIGHT, EMBED_WIDTH, embedder_preprocess
from finprint.runtime.manifest import Manifest, Preprocess, TensorSpec, save_manifest, sha256_file

OPSET = 17


def _save(model, path: Path, manifest_kwargs: dict) -> Path:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    manifest = Manifest(
        finprint_version=__version__,
        precision="fp32",
        onnx_file=path.name,
        onnx_sha256=sha256_file(path),
        opset=OPSET,
        **manifest_kwargs,
    )
    from finprint.runtime.manifest import manifest_path_for

    save_manifest(manifest, manifest_path_for(path))
    return path


def make_toy_detector(path: str | Path, size: int = 64, fish_xyxy: list[list[float]] | None = None,
                      fish_scores: list[float] | None = None, num_protos: int = 2,
                      score_follows_brightness: bool = False) -> Path:
    """A detector that always finds `fish_xyxy` (input pixels) with `fish_scores`; masks fill each box.

    With `score_follows_brightness` the scores are multiplied by min(1, 2 * mean red of the input),
    so dark frames hold no fish: tracks then end and new ones begin (soak runs, track turnover).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = Path(path)
    fish_xyxy = fish_xyxy or [[8.0, 24.0, 40.0, 36.0]]
    fish_scores = fish_scores or [0.9] * len(fish_xyxy)
    anchors = sum((size // s) ** 2 for s in (8, 16, 32))
    boxes = np.tile(np.array([[0, 0, 2, 2]], np.float32), (anchors, 1))
    scores = np.full(anchors, 0.01, np.float32)
    boxes[: len(fish_xyxy)] = np.asarray(fish_xyxy, np.float32)
    scores[: len(fish_scores)] = np.asarray(fish_scores, np.float32)
    coefs = np.zeros((anchors, num_protos), np.float32)
    coefs[:, 0] = 10.0  # sigmoid(10 * 1) ~ 1: the mask is the whole box after cropping
    protos = np.zeros((num_protos, size // 4, size // 4), np.float32)
    protos[0] = 1.0

    consts = {"c_boxes": boxes[None], "c_scores": scores[None], "c_coefs": coefs[None], "c_protos": protos[None]}
    nodes = [
        helper.make_node("Shape", ["images"], ["in_shape"]),
        helper.make_node("Slice", ["in_shape", "zero", "one"], ["batch"]),
    ]
    outputs = []
    for out, const in (("boxes", "c_boxes"), ("scores", "c_scores"), ("mask_coefs", "c_coefs"), ("protos", "c_protos")):
        rest = np.asarray(consts[const].shape[1:], np.int64)
        nodes.append(helper.make_node("Concat", ["batch", f"{out}_rest"], [f"{out}_shape"], axis=0))
        if not (score_follows_brightness and out == "scores"):
            nodes.append(helper.make_node("Expand", [const, f"{out}_shape"], [out]))
        consts[f"{out}_rest"] = rest
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", *consts[const].shape[1:]]))
    if score_follows_brightness:
        nodes += [
            helper.make_node("GlobalAveragePool", ["images"], ["gap"]),
            helper.make_node("Flatten", ["gap"], ["gap_flat"], axis=1),
            helper.make_node("Slice", ["gap_flat", "zero", "one", "one"], ["red"]),
            helper.make_node("Mul", ["red", "two"], ["red2"]),
            helper.make_node("Min", ["red2", "onef"], ["gain"]),
            helper.make_node("Expand", ["c_scores", "scores_shape"], ["scores_raw"]),
            helper.make_node("Mul", ["scores_raw", "gain"], ["scores"]),
        ]
        consts["two"] = np.array(2.0, np.float32)
        consts["onef"] = np.array(1.0, np.float32)
    consts["zero"] = np.array([0], np.int64)
    consts["one"] = np.array([1], np.int64)
    graph = helper.make_graph(
        nodes, "toy_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        outputs,
        initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return _save(model, path, {
        "kind": "detector",
        "model_name": "toy-detector",
        "inputs": [TensorSpec(name="images", shape=["batch", 3, size, size])],
        "outputs": [
            TensorSpec(name="boxes", shape=["batch", anchors, 4]),
            TensorSpec(name="scores", shape=["batch", anchors]),
            TensorSpec(name="mask_coefs", shape=["batch", anchors, num_protos]),
            TensorSpec(name="protos", shape=["batch", num_protos, size // 4, size // 4]),
        ],
        "preprocess": Preprocess(width=size, height=size),
        "score_threshold": 0.25,
        "iou_threshold": 0.5,
        "mask_stride": 4,
    })


def make_toy_embedder(path: str | Path, dim: int = 128, seed: int = 0, open_set_threshold: float = 0.9,
                      crop_mask: bool = False, crop_align: bool = False) -> Path:
    """embedding = L2-normalise(mean colour of the crop @ a fixed random 3 x dim projection + bias);
    `crop_mask` / `crop_align`: its manifest asks for crops masked / turned by the detector's instance masks."""
    from onnx import TensorProto, helper, numpy_helper

    path = Path(path)
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(3, dim)).astype(np.float32)
    bias = rng.normal(size=(dim,)).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("GlobalAveragePool", ["crops"], ["pooled4d"]),
        helper.make_node("Flatten", ["pooled4d"], ["pooled"], axis=1),
        helper.make_node("MatMul", ["pooled", "weight"], ["proj"]),
        helper.make_node("Add", ["proj", "bias"], ["raw"]),
        helper.make_node("LpNormalization", ["raw"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes, "toy_embedder",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", 3, EMBED_HEIGHT, EMBED_WIDTH])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        initializer=[
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = min(model.ir_version, 9)
    return _save(model, path, {
        "kind": "embedder",
        "model_name": "toy-embedder",
        "inputs": [TensorSpec(name="crops", shape=["batch", 3, EMBED_HEIGHT, EMBED_WIDTH])],
        "outputs": [TensorSpec(name="embedding", shape=["batch", dim])],
        "preprocess": embedder_preprocess().model_copy(update={"crop_mask": crop_mask, "crop_align": crop_align}),
        "embedding_dim": dim,
        "open_set_threshold": open_set_threshold,
    })


# The review farm (`make_review_farm`): two fish at the toy detector's two boxes, in frames of this size.
REVIEW_FARM_SIZE = (320, 240)
REVIEW_FARM_BOXES = [[8.0, 22.0, 40.0, 34.0], [26.0, 38.0, 58.0, 50.0]]  # detector input pixels (64 x 64, letterboxed)
REVIEW_FARM_COLOURS = ((40, 170, 230), (200, 90, 40))  # BGR: the enrolled fish, the stranger


def review_farm_frame(i: int, bright: int = 30, dark: int = 35) -> np.ndarray:
    """Frame `i` of the review farm's video: `bright` frames with both fish, then `dark` black frames in which the
    detector finds nothing (every track ends), again and again. The water is reddish: the detector's score
    follows the red channel."""
    import cv2

    w, h = REVIEW_FARM_SIZE
    if i % (bright + dark) >= bright:
        return np.zeros((h, w, 3), np.uint8)
    img = np.full((h, w, 3), (60, 70, 190), np.uint8)
    scale, pad = w / 64, (64 - h * 64 / w) / 2
    for (x1, y1, x2, y2), colour in zip(REVIEW_FARM_BOXES, REVIEW_FARM_COLOURS, strict=True):
        box = [x1 * scale, (y1 - pad) * scale, x2 * scale, (y2 - pad) * scale]
        centre = (int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2))
        axes = (int((box[2] - box[0]) / 2), int((box[3] - box[1]) / 2))
        cv2.ellipse(img, centre, axes, 0, 0, 360, colour, -1)
        cv2.circle(img, (int(box[2] - axes[0] / 2), centre[1] - 4), 3, (20, 20, 20), -1)  # an eye
    cv2.putText(img, str(i), (w - 40, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return img


def make_review_farm(root: str | Path, cycles: int = 2, enrol: bool = True) -> dict[str, Path]:
    """A tiny farm for the web page's tests and screenshots: toy models, a video of two fish that come and go, and a
    gallery holding the first fish ("fish-a") only, so the second one ends as an unknown track to review.
    Returns {"detector", "embedder", "video", "gallery"}."""
    import cv2

    from finprint.runtime.pipeline import Pipeline
    from finprint.runtime.store import Store

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    det = make_toy_detector(root / "det.onnx", fish_xyxy=REVIEW_FARM_BOXES, fish_scores=[0.9, 0.9],
                            score_follows_brightness=True)
    emb = make_toy_embedder(root / "emb.onnx", open_set_threshold=0.9)
    w, h = REVIEW_FARM_SIZE
    writer = cv2.VideoWriter(str(root / "pen.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    for i in range(65 * cycles):
        writer.write(review_farm_frame(i))
    writer.release()
    gallery = root / "gallery.db"
    if enrol:
        pipeline = Pipeline(det, emb, "cpu")
        try:
            res = pipeline.process([review_farm_frame(0)])[0]
            first = int(np.argmin(res.detections.boxes_xyxy[:, 1]))  # fish-a is the upper one
            store = Store(gallery)
            store.enroll("fish-a", res.embeddings[first:first + 1], source="test")
            store.close()
        finally:
            pipeline.close()
    return {"detector": det, "embedder": emb, "video": root / "pen.avi", "gallery": gallery}
