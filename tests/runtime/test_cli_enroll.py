import cv2
import numpy as np

from finprint.cli import main
from finprint.runtime.cli_individuals import size_trend
from finprint.runtime.store import Store
from finprint.testing import make_toy_detector, make_toy_embedder


def test_enroll_list_forget(tmp_path, capsys):
    emb = make_toy_embedder(tmp_path / "emb.onnx")
    det = make_toy_detector(tmp_path / "det.onnx")
    crops = tmp_path / "crops"
    crops.mkdir()
    for i in range(3):
        cv2.imwrite(str(crops / f"a{i}.jpg"), np.full((30, 60, 3), 100 + i, np.uint8))
    gallery = tmp_path / "g.db"
    assert main(["enroll", "--gallery", str(gallery), "--id", "fish001", "--embedder", str(emb), "--backend", "cpu", str(crops)]) == 0

    writer = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for _ in range(6):
        writer.write(np.full((96, 128, 3), 60, np.uint8))
    writer.release()
    assert main(["enroll", "--gallery", str(gallery), "--id", "fish002", "--embedder", str(emb),
                 "--detector", str(det), "--backend", "cpu", str(tmp_path / "v.avi")]) == 0

    assert main(["enroll", "--gallery", str(gallery), "--id", "fish003", "--embedder", str(emb), "--all-tracks",
                 "--detector", str(det), "--backend", "cpu", str(tmp_path / "v.avi")]) == 0
    assert main(["enroll", "--gallery", str(gallery), "--id", "fish004", "--embedder", str(emb), "--all-tracks", "--track", "1",
                 "--detector", str(det), "--backend", "cpu", str(tmp_path / "v.avi")]) == 2
    assert "--track and --all-tracks exclude each other" in capsys.readouterr().err

    store = Store(gallery)
    assert set(store.load_gallery(0.5).individuals) == {"fish001", "fish002", "fish003"}
    store.write_events([{"type": "track_end", "ts": 2.0, "camera": "c", "track_id": 1, "individual_id": "fish001",
                         "first_ts": 1.0, "last_ts": 2.0, "frames": 5, "length_cm": 20.0},
                        {"type": "track_end", "ts": 9.0, "camera": "c", "track_id": 2, "individual_id": "fish001",
                         "first_ts": 8.0, "last_ts": 9.0, "frames": 5, "length_cm": 21.5}])
    store.close()
    capsys.readouterr()
    assert main(["individuals", "--gallery", str(gallery)]) == 0
    out = capsys.readouterr().out
    assert "fish001" in out and "fish002" in out and "20.0 -> 21.5 cm (+1.5)" in out and "3 individuals" in out

    assert main(["forget", "--gallery", str(gallery), "--id", "fish002"]) == 0
    assert main(["forget", "--gallery", str(gallery), "--id", "fish002"]) == 2
    assert "no individual 'fish002'" in capsys.readouterr().err
    assert main(["individuals", "--gallery", str(tmp_path / "missing.db")]) == 2


def test_enroll_video_keeps_boxes_down_to_the_detectors_threshold(tmp_path, capsys):
    """A half-hidden fish scores low; the gallery needs its views, so a video is enrolled down to the detector's
    own score threshold (0.25 in the toy manifest), not a fixed 0.5."""
    emb = make_toy_embedder(tmp_path / "emb.onnx")
    det = make_toy_detector(tmp_path / "det.onnx", fish_xyxy=[[8, 8, 40, 30]], fish_scores=[0.4])
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for _ in range(5):
        writer.write(np.full((96, 128, 3), 60, np.uint8))
    writer.release()
    gallery = tmp_path / "g.db"
    common = ["--gallery", str(gallery), "--embedder", str(emb), "--detector", str(det), "--backend", "cpu", str(video)]
    assert main(["enroll", "--id", "fish001", *common]) == 0
    assert "fish001: enrolled 5 embeddings" in capsys.readouterr().out
    assert main(["enroll", "--id", "fish002", "--min-score", "0.5", *common]) == 2
    assert "no fish found with a detection score of at least 0.5" in capsys.readouterr().err
    assert main(["enroll", "--id", "fish003", "--min-score", "1.5", *common]) == 2
    assert "--min-score must lie in [0, 1], got 1.5" in capsys.readouterr().err
    store = Store(gallery)
    assert store.load_gallery(0.5).individuals == ["fish001"]
    store.close()


def test_size_trend():
    assert size_trend([]) == "-" and size_trend([18.0]) == "18.0 cm"
