"""Drive any engine (torch, ONNX Runtime, TensorRT) over a dataset and score it.

One code path for every backend (docs/CONTRACTS.md section 3): frames are read with OpenCV,
preprocessed by the runtime's one implementation, run through `engine.infer`, decoded by
`finprint.runtime.detect_post.decode`, and scored by `finprint.distill.metrics`. Torch-free, so
the export gate can measure an ONNX model on a machine without torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from tqdm import tqdm

from finprint.data.types import Crop, Frame, ReidSet
from finprint.distill.metrics import (
    PackedMasks,
    coco_metrics,
    cross_camera_applicable,
    mask_crop_quality,
    open_set_metrics,
    reid_metrics,
)
from finprint.distill.open_set import embedder_report
from finprint.errors import DataError, FinprintError
from finprint.runtime.detect_post import Detections, decode
from finprint.runtime.manifest import Preprocess
from finprint.runtime.preprocess import preprocess_image

log = logging.getLogger(__name__)

DETECTOR_INPUT = "images"  # CONTRACTS.md section 3
EMBEDDER_INPUT = "crops"
EMBEDDING_OUTPUT = "embedding"


class InferEngine(Protocol):
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def _input_name_and_batch(engine: Any, default_name: str, batch: int) -> tuple[str, int, bool]:
    """(input name, batch size, whether the engine's batch dimension is fixed).

    Runtime engines describe their inputs (`engine.inputs`); a model exported with a fixed batch
    must be fed exactly that many images, so the last chunk is padded. A torch engine takes any batch.
    """
    inputs = getattr(engine, "inputs", None)
    if not inputs:
        return default_name, batch, False
    spec = inputs[0]
    dim = spec.shape[0] if len(spec.shape) else None
    if isinstance(dim, int) and dim > 0:
        return spec.name, dim, True
    return spec.name, batch, False


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def _infer_chunk(engine: InferEngine, name: str, x: np.ndarray, size: int, fixed: bool) -> dict[str, np.ndarray]:
    count = x.shape[0]
    if fixed and count < size:  # pad a fixed-batch engine's last chunk, drop the padding's outputs
        x = np.concatenate([x, np.zeros((size - count, *x.shape[1:]), x.dtype)])
    out = engine.infer({name: np.ascontiguousarray(x, dtype=np.float32)})
    return {k: np.asarray(v)[:count] if np.ndim(v) and np.shape(v)[0] == x.shape[0] else np.asarray(v)
            for k, v in out.items()}


def read_image(path: Any) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(path, "cannot be read as an image")
    return image


def detect_frames(
    engine: InferEngine,
    pre: Preprocess,
    frames: Sequence[Frame],
    batch: int = 8,
    score_threshold: float = 0.001,
    iou_threshold: float = 0.6,
    max_det: int = 100,
    pack_masks: bool = False,
) -> list[Detections]:
    """One Detections (original pixels, masks when the model has a mask head) per frame, in order; `pack_masks`
    keeps the masks run-length encoded (`PackedMasks`), for a whole data set's detections."""
    name, size, fixed = _input_name_and_batch(engine, DETECTOR_INPUT, batch)
    results: list[Detections] = []
    progress = tqdm(total=len(frames), desc="detect", unit="img", disable=None, leave=False)
    for chunk in _chunks(len(frames), size):
        tensors, infos = [], []
        for i in chunk:
            tensor, info = preprocess_image(read_image(frames[i].image_path), pre)
            tensors.append(tensor)
            infos.append(info)
        out = _infer_chunk(engine, name, np.stack(tensors), size, fixed)
        missing = {"boxes", "scores"} - set(out)
        if missing:
            raise FinprintError(f"the model's outputs {sorted(out)} lack {sorted(missing)}: is it a detector?")
        has_masks = "mask_coefs" in out and "protos" in out
        for j, info in enumerate(infos):
            det = decode(
                out["boxes"][j],
                out["scores"][j],
                out["mask_coefs"][j] if has_masks else None,
                out["protos"][j] if has_masks else None,
                info,
                score_threshold=score_threshold,
                iou_threshold=iou_threshold,
                max_det=max_det,
            )
            if pack_masks and det.masks is not None:
                det = Detections(det.boxes_xyxy, det.scores, PackedMasks(det.masks))
            results.append(det)
        progress.update(len(chunk))
    progress.close()
    return results


def evaluate_detector(
    engine: InferEngine,
    pre: Preprocess,
    frames: Sequence[Frame],
    batch: int = 8,
    score_threshold: float = 0.001,
    iou_threshold: float = 0.6,
    max_det: int = 100,
) -> dict:
    """box_map, box_map50, mask_map, mask_map50 (None where not measurable) + counts and images/s.

    The low default score threshold is COCO practice: mAP integrates over every confidence level.
    """
    if not frames:
        raise FinprintError("no frames to evaluate")
    start = time.perf_counter()
    predictions = detect_frames(engine, pre, frames, batch, score_threshold, iou_threshold, max_det, pack_masks=True)
    seconds = time.perf_counter() - start
    result = coco_metrics(frames, predictions)
    if result["mask_map"] is not None:
        result.update(mask_crop_quality(frames, predictions))
    result["seconds"] = seconds
    result["images_per_s"] = len(frames) / seconds if seconds > 0 else None
    log.info("detector: %s", {k: v for k, v in result.items() if k.endswith(("map", "map50"))})
    return result


def embed_crops(engine: InferEngine, pre: Preprocess, crops: Sequence[Crop], batch: int = 32) -> np.ndarray:
    """(N, D) float32 embeddings of crop images (already cropped; stretched by `pre`), in order."""
    name, size, fixed = _input_name_and_batch(engine, EMBEDDER_INPUT, batch)
    chunks: list[np.ndarray] = []
    progress = tqdm(total=len(crops), desc="embed", unit="crop", disable=None, leave=False)
    for chunk in _chunks(len(crops), size):
        x = np.stack([preprocess_image(read_image(crops[i].path), pre)[0] for i in chunk])
        out = _infer_chunk(engine, name, x, size, fixed)
        if EMBEDDING_OUTPUT in out:
            emb = out[EMBEDDING_OUTPUT]
        elif len(out) == 1:
            emb = next(iter(out.values()))
        else:
            raise FinprintError(f"the model's outputs {sorted(out)} lack '{EMBEDDING_OUTPUT}': is it an embedder?")
        chunks.append(np.asarray(emb, dtype=np.float32).reshape(len(chunk), -1))
        progress.update(len(chunk))
    progress.close()
    if not chunks:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(chunks)


def _max_similarity_excluding_self(emb: np.ndarray) -> np.ndarray:
    normed = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sim = normed @ normed.T
    np.fill_diagonal(sim, -np.inf)
    return sim.max(axis=1)


def evaluate_embedder(
    engine: InferEngine, pre: Preprocess, reid_set: ReidSet, batch: int = 32, cross_camera: bool | None = None,
    open_set_split: str = "auto", matches_png: str | None = None,
) -> dict:
    """Re-ID (rank1, rank5, map) and open-set (auroc, fpr95) of an embedder on a re-ID crop set.
    `matches_png`: also draw 8 queries with their top-5 gallery crops there (right and wrong marked).

    With `gallery/` and `query/` subsets, the one rule of `open_set.embedder_report` applies: known means
    "in the gallery", and with no stranger among the queries a fixed half of the gallery's identities
    plays the strangers (`open_set_split`). Without them (one folder of crops) every crop queries all
    the others and `cross_camera` None (auto) applies Market-1501's same-camera exclusion only where
    every query keeps a match on another camera.
    """
    gallery = [c for c in reid_set.crops if c.subset == "gallery"]
    query = [c for c in reid_set.crops if c.subset == "query"]
    same_set = not gallery and not query
    if same_set:
        gallery = query = [c for c in reid_set.crops if c.subset != "train"]
    if not gallery:
        raise DataError(reid_set.root / "gallery", "the gallery is empty: nothing is enrolled to match queries against")
    if not query:
        raise DataError(reid_set.root / "query", "no query crops")
    g_ids = [c.identity for c in gallery]
    if not same_set and not set(g_ids) & {c.identity for c in query}:
        raise DataError(reid_set.root / "query", "no query identity is in the gallery: nothing to re-identify "
                        "(queries and gallery must share identities, named <identity>_<camera>_<n>.jpg)")

    start = time.perf_counter()
    gallery_emb = embed_crops(engine, pre, gallery, batch)
    query_emb = gallery_emb if same_set else embed_crops(engine, pre, query, batch)
    seconds = time.perf_counter() - start

    def cams(crops: Sequence[Crop]) -> list[str] | None:
        values = [c.camera for c in crops]
        return values if any(values) else None

    g_cams = cams(gallery)
    if matches_png:
        from finprint.data.show import _write_sheet, matches_sheet

        _write_sheet(matches_sheet(query, query_emb, gallery, gallery_emb), Path(matches_png))
    if same_set:
        # In one folder an identity seen once has no other crop to match: that is a skipped query,
        # not an unknown fish; open-set needs a gallery it was never enrolled in.
        unknown = np.array([c.unknown for c in query], dtype=bool)
        if cross_camera is None:
            cross_camera = cross_camera_applicable(g_ids, g_cams, g_ids, g_cams)
        reid = reid_metrics(gallery_emb, g_ids, g_cams, gallery_emb, g_ids, g_cams, cross_camera, same_set=True)
        scores = _max_similarity_excluding_self(gallery_emb)
        open_set = open_set_metrics(scores[~unknown], scores[unknown])
        result = {
            "rank1": reid["rank1"], "rank5": reid["rank5"], "map": reid["map"], "auroc": open_set["auroc"],
            "fpr95": open_set["fpr95"], "open_set_threshold": open_set["threshold95"], "cross_camera": bool(cross_camera),
            "queries": reid["queries"], "skipped_queries": reid["skipped"], "unknown_queries": int(unknown.sum()),
            "open_set_split": False,
        }
    else:
        report = embedder_report(
            query_emb, [c.identity for c in query], cams(query), gallery_emb, g_ids, g_cams,
            open_set_split=open_set_split, cross_camera=cross_camera,
        )
        result = {key: report.get(key) for key in ("rank1", "rank5", "map", "auroc", "fpr95", "open_set_threshold")}
        result.update(
            cross_camera=bool(report["cross_camera"]), queries=int(report["queries"]), skipped_queries=int(report["skipped_queries"]),
            unknown_queries=int(report["unknown_queries"]), open_set_split=bool(report["open_set_split"]),
        )
    result.update(
        gallery=len(gallery), embedding_dim=int(gallery_emb.shape[1]), seconds=seconds,
        crops_per_s=(len(gallery) + (0 if same_set else len(query))) / seconds if seconds > 0 else None,
    )
    log.info("embedder: rank1=%s map=%s auroc=%s", result["rank1"], result["map"], result["auroc"])
    return result
