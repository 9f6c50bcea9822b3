import json

import cv2
import numpy as np
from finprint.runtime.open_set import TrackOutcome
from finprint.runtime.pipeline import Pipeline
from finprint.runtime.score import main, score_outcomes
from finprint.runtime.store import Store
from finprint.runtime.toy_models import make_toy_detector, make_toy_embedder


def test_score_outcomes_counts_known_unknown_and_unmatched():
    outcomes = [
        TrackOutcome("fish000", False, "fish000", 0.9, 0.3, 9),  # named right
        TrackOutcome("fish000", False, "fish001", 0.9, 0.3, 6),  # named wrong
        TrackOutcome("unk000", True, "fish000", 0.5, 0.3, 4),  # below the threshold: flagged
        TrackOutcome("unk001", True, "fish000", 0.9, 0.3, 3),  # a confident stranger: missed
    ]
    r = score_outcomes(outcomes, threshold=0.7, margin=0.0, unmatched=1)
    assert (r.known_tracks, r.known_correct, r.unknown_tracks, r.unknown_flagged, r.unmatched_tracks) == (2, 1, 2, 1, 1)
    assert r.known_accuracy == 0.5 and "50.0% (1/2)" in r.report()
    assert score_outcomes(outcomes, threshold=0.7, margin=0.5).unknown_flagged == 2  # no lead big enough: all unknown


def test_score_a_video_end_to_end(tmp_path, capsys):
    det = make_toy_detector(tmp_path / "det.onnx", fish_xyxy=[[8, 8, 40, 20], [8, 40, 40, 52]], fish_scores=[0.9, 0.9])
    emb = make_toy_embedder(tmp_path / "emb.onnx", open_set_threshold=0.95)
    frames = []
    writer = cv2.VideoWriter(str(tmp_path / "cam0.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for i in range(12):
        img = np.full((64, 64, 3), 30, np.uint8)
        img[8:20, 8:40] = (200, 60, 20)  # known fish
        img[40:52, 8:40] = (20, 200, 60)  # a stranger
        writer.write(img)
        frames.append({"frame": i, "instances": [
            {"individual_id": "fish000", "unknown": False, "box_xyxy": [8, 8, 40, 20], "polygon": [], "length_cm": 3.2},
            {"individual_id": "unk000", "unknown": True, "box_xyxy": [8, 40, 40, 52], "polygon": [], "length_cm": 3.2},
        ]})
    writer.release()
    (tmp_path / "cam0.json").write_text(json.dumps({"fps": 10, "width": 64, "height": 64, "camera": "0",
                                                    "px_per_cm": 10, "frames": frames}))
    pipeline = Pipeline(det, emb, "cpu")
    img = cv2.VideoCapture(str(tmp_path / "cam0.avi")).read()[1]
    store = Store(tmp_path / "g.db")
    store.enroll("fish000", pipeline.embed_crops([img[8:20, 8:40]]))
    store.close()
    code = main(["--video", str(tmp_path / "cam0.avi"), "--gallery", str(tmp_path / "g.db"),
                 "--detector", str(det), "--embedder", str(emb), "--backend", "cpu"])
    out = capsys.readouterr().out
    assert "100.0% (1/1)" in out and "unknown: 100.0% (1/1)" in out
    assert code == 0
