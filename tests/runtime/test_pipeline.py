"""The pipeline's crops: an embedder whose manifest asks for masked or aligned crops gets the detector's masks applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finprint.runtime.crops import crop_fish
from finprint.runtime.pipeline import Pipeline
from finprint.testing import make_toy_detector, make_toy_embedder


def test_an_embedder_trained_on_masked_crops_is_fed_masked_crops(tmp_path: Path) -> None:
    det = make_toy_detector(tmp_path / "det.onnx", fish_xyxy=[[6, 10, 58, 40]], fish_scores=[0.9])
    frame = np.full((64, 64, 3), 30, np.uint8)
    frame[10:40, 6:58] = (200, 60, 20)  # the fish; its mask is its box
    frame[:, :3] = frame[:, 61:] = (0, 255, 0)  # another fish, inside the crop's margin but outside the mask
    results = {}
    for name, masked in (("plain", False), ("masked", True)):
        pipeline = Pipeline(det, make_toy_embedder(tmp_path / f"{name}.onnx", crop_mask=masked), "cpu")
        try:
            (res,) = pipeline.process([frame])
            box, mask = res.detections.boxes_xyxy[0], res.detections.masks[0]
            results[name] = res.embeddings[0]
            expected = pipeline.embed_crops([crop_fish(frame, box, mask=mask if masked else None)])[0]
            np.testing.assert_allclose(res.embeddings[0], expected, atol=1e-5)
        finally:
            pipeline.close()
    assert mask[10:40, 6:58].all() and not mask[:, :3].any()
    assert np.linalg.norm(results["plain"] - results["masked"]) > 1e-3


def test_an_embedder_trained_on_aligned_crops_is_fed_crops_turned_by_the_detectors_masks(tmp_path: Path, monkeypatch) -> None:
    from finprint.runtime import pipeline as pipeline_module

    det = make_toy_detector(tmp_path / "det.onnx", fish_xyxy=[[6, 10, 58, 40]], fish_scores=[0.9])
    frame = np.full((64, 64, 3), 30, np.uint8)
    frame[10:40, 6:58] = (200, 60, 20)
    seen: list[tuple[bool, bool]] = []

    def recording(image, box, margin=0.1, mask=None, align=None):
        seen.append((mask is not None, align is not None))
        return crop_fish(image, box, margin, mask=mask, align=align)

    monkeypatch.setattr(pipeline_module, "crop_fish", recording)
    for name, flags in (("plain", {}), ("aligned", {"crop_align": True}), ("both", {"crop_align": True, "crop_mask": True})):
        pipeline = Pipeline(det, make_toy_embedder(tmp_path / f"{name}.onnx", **flags), "cpu")
        try:
            (res,) = pipeline.process([frame])
            mask = res.detections.masks[0]
            expected = pipeline.embed_crops([crop_fish(frame, res.detections.boxes_xyxy[0], mask=mask if "crop_mask" in flags else None,
                                                       align=mask if flags else None)])[0]
            np.testing.assert_allclose(res.embeddings[0], expected, atol=1e-5)
        finally:
            pipeline.close()
    assert seen == [(False, False), (False, True), (True, True)]
