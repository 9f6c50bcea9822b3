"""Frames in, fish out: detector -> masks -> crops -> embedder (batched) per batch of frames.

Used by the daemon's inference worker and alone by `finprint bench --pipeline` and the scorer.
Tracking and gallery matching are per camera and live in the daemon (tracker, identity); this is
the stateless, batched, engine-owning part. Per-stage latency is kept for metrics and benches.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finprint.errors import FinprintError
from finprint.runtime.crops import crop_fish, embedder_preprocess
from finprint.runtime.detect_post import Detections, decode
from finprint.runtime.engines import Engine, default_engine_path, find_manifest, open_engine
from finprint.runtime.manifest import Manifest, Preprocess
from finprint.runtime.preprocess import preprocess_batch, preprocess_image

log = logging.getLogger(__name__)

STAGES = ("preprocess", "detector", "decode", "crops", "embedder")


@dataclass
class FrameResult:
    detections: Detections  # boxes_xyxy, scores, masks in original pixels
    embeddings: np.ndarray  # (N, D) float32, one row per detection


def _batch_limit(engine: Engine, wanted: int) -> int:
    """A model exported with a fixed batch dimension takes exactly that many images."""
    spec = engine.inputs[0]
    return wanted if spec.is_dynamic(0) else int(spec.shape[0])  # type: ignore[arg-type]


class Pipeline:
    def __init__(
        self,
        detector_path: str | Path,
        embedder_path: str | Path,
        backend: str = "auto",
        max_batch: int = 4,
        score_threshold: float | None = None,
        open_set_threshold: float | None = None,
        max_det: int = 50,
        require_manifest: bool = False,
        engine_cache: str | Path | None = None,
    ) -> None:
        """`engine_cache`: the folder for TensorRT engines built from the ONNX files (default: beside them).
        Open, run and close a Pipeline on one thread: with TensorRT it owns that thread's CUDA context."""
        self.detector_path = Path(detector_path)
        self.embedder_path = Path(embedder_path)
        det_manifest = find_manifest(self.detector_path, None, require_manifest)
        emb_manifest = find_manifest(self.embedder_path, None, require_manifest)
        self.detector = open_engine(self.detector_path, backend, manifest=det_manifest,
                                    engine_path=_cached_engine(self.detector_path, engine_cache))
        try:
            self.embedder = open_engine(self.embedder_path, backend, manifest=emb_manifest,
                                        engine_path=_cached_engine(self.embedder_path, engine_cache))
        except BaseException:
            self.detector.close()
            raise
        try:
            self._setup(det_manifest, emb_manifest, max_batch, score_threshold, open_set_threshold, max_det)
        except BaseException:
            self.close()  # both engines are open: nothing may leak past a refusal
            raise

    def _setup(self, det_manifest: Manifest | None, emb_manifest: Manifest | None, max_batch: int,
               score_threshold: float | None, open_set_threshold: float | None, max_det: int) -> None:
        self.det_pre = det_manifest.preprocess if det_manifest else self._preprocess_from_input(self.detector)
        self.emb_pre = emb_manifest.preprocess if emb_manifest else embedder_preprocess()
        self.det_input = self.detector.inputs[0].name
        self.emb_input = self.embedder.inputs[0].name
        self.det_batch = _batch_limit(self.detector, max_batch)
        self.emb_batch = _batch_limit(self.embedder, max(max_batch * 8, 8))
        self.score_threshold = _first(score_threshold, det_manifest and det_manifest.score_threshold, 0.25)
        self.iou_threshold = _first(None, det_manifest and det_manifest.iou_threshold, 0.5)
        self.open_set_threshold = _first(open_set_threshold, emb_manifest and emb_manifest.open_set_threshold, 0.5)
        self.max_det = max_det
        self.has_masks = {"mask_coefs", "protos"} <= {t.name for t in self.detector.outputs}
        self.latency_ms: dict[str, list[float]] = defaultdict(list)  # last `keep` batches per stage
        self._keep = 256
        self.embedding_dim = int(self.embedder.outputs[0].shape[-1]) if not self.embedder.outputs[0].is_dynamic(-1) else None

    @staticmethod
    def _preprocess_from_input(engine: Engine) -> Preprocess:
        spec = engine.inputs[0]
        if spec.is_dynamic(2) or spec.is_dynamic(3):
            raise FinprintError(f"{engine.source}: no manifest and a dynamic input size: cannot tell the letterbox size")
        return Preprocess(width=int(spec.shape[3]), height=int(spec.shape[2]))  # type: ignore[arg-type]

    def _record(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        samples = self.latency_ms[stage]
        samples.append((now - started) * 1000.0)
        if len(samples) > self._keep:
            del samples[: len(samples) - self._keep]
        return now

    def process_video(self, video: str | Path) -> Iterator[FrameResult]:
        """The chain over every frame of a video file, one frame at a time (tuning, scoring, enrolment)."""
        import cv2

        cap = cv2.VideoCapture(str(video))
        if not cap.isOpened():
            raise FinprintError(f"{video}: cannot open video")
        try:
            while True:
                ok, image = cap.read()
                if not ok:
                    return
                yield self.process([image])[0]
        finally:
            cap.release()

    def process(self, images_bgr: list[np.ndarray]) -> list[FrameResult]:
        """A batch of BGR frames (any sizes, any number) -> one FrameResult per frame."""
        t = time.perf_counter()
        tensors, infos = preprocess_batch(images_bgr, self.det_pre)
        t = self._record("preprocess", t)
        raw: list[dict[str, np.ndarray]] = []
        for start in range(0, len(images_bgr), self.det_batch):
            chunk = tensors[start : start + self.det_batch]
            raw.append(self.detector.infer({self.det_input: chunk}))
        t = self._record("detector", t)
        detections: list[Detections] = []
        for chunk_i, out in enumerate(raw):
            for j in range(len(out["boxes"])):
                info = infos[chunk_i * self.det_batch + j]
                detections.append(
                    decode(
                        out["boxes"][j], out["scores"][j],
                        out["mask_coefs"][j] if self.has_masks else None,
                        out["protos"][j] if self.has_masks else None,
                        info, self.score_threshold, self.iou_threshold, self.max_det,
                    )
                )
        t = self._record("decode", t)
        crops = [
            preprocess_image(self._crop(img, box, None if det.masks is None else det.masks[k]), self.emb_pre)[0]
            for img, det in zip(images_bgr, detections, strict=True)
            for k, box in enumerate(det.boxes_xyxy)
        ]
        t = self._record("crops", t)
        embeddings = self._embed(crops)
        self._record("embedder", t)
        results, offset = [], 0
        for det in detections:
            n = len(det)
            results.append(FrameResult(det, embeddings[offset : offset + n]))
            offset += n
        return results

    def _crop(self, image: np.ndarray, box: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """The fish's crop as the embedder was trained on it: masked and/or turned by its instance mask."""
        return crop_fish(image, box, mask=mask if self.emb_pre.crop_mask else None, align=mask if self.emb_pre.crop_align else None)

    def _embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.embedding_dim or 0), np.float32)
        out = []
        for start in range(0, len(crops), self.emb_batch):
            batch = np.stack(crops[start : start + self.emb_batch])
            out.append(next(iter(self.embedder.infer({self.emb_input: batch}).values())))
        return np.concatenate(out).astype(np.float32)

    def embed_crops(self, crops_bgr: list[np.ndarray]) -> np.ndarray:
        """Already-cut fish crops (BGR) -> embeddings; used by `finprint enroll`."""
        return self._embed([preprocess_image(c, self.emb_pre)[0] for c in crops_bgr])

    def latency_summary(self) -> dict[str, dict[str, float]]:
        """Per stage: median and p95 over the recent batches, in ms."""
        return {
            stage: {"p50_ms": float(np.percentile(v, 50)), "p95_ms": float(np.percentile(v, 95)), "batches": len(v)}
            for stage in STAGES
            if (v := self.latency_ms.get(stage))
        }

    def close(self) -> None:
        """Close the engines in the reverse order of opening; the detector even if closing the embedder fails."""
        try:
            self.embedder.close()
        finally:
            self.detector.close()


def _cached_engine(model: Path, engine_cache: str | Path | None) -> Path | None:
    """The engine path for an ONNX model inside `engine_cache`; None (beside the ONNX) without one."""
    if engine_cache is None or model.suffix not in (".onnx",):
        return None
    return default_engine_path(model, engine_cache)


def _first(*values: float | None | Manifest) -> float:
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    raise ValueError("no value")
