"""`finprint export-reviewed`: confirmed tracks' crops as a Market-1501 re-ID folder and frames for calibration."""

import json

import cv2
import numpy as np

from finprint.cli import main
from finprint.runtime import review
from finprint.runtime.review import TrackRecord
from finprint.runtime.store import Store


def _reviewed_gallery(tmp_path):
    folder = tmp_path / "review"
    folder.mkdir()
    store = Store(tmp_path / "g.db")
    store.enroll("fish-a", np.eye(8, dtype=np.float32)[:1], source="test")
    review.ensure_schema(store)
    decisions = [("pen1", "confirm", "fish-a"), ("pen2", "new", "fish_b"), ("pen1", "ignore", None), ("pen2", "confirm", "fish-a")]
    for n, (cam, action, fish) in enumerate(decisions):
        uid = f"s-{cam}-{n}"
        crops = []
        for k in range(2):
            crop = np.full((40, 90, 3), 60 * (n + 1), np.uint8)
            cv2.imwrite(str(folder / f"{uid}_{k}.jpg"), crop)
            crops.append(f"{uid}_{k}.jpg")
        cv2.imwrite(str(folder / f"{uid}_frame.jpg"), np.zeros((120, 160, 3), np.uint8))
        review.record_track(store, TrackRecord(uid, cam, n, float(n), n + 1.0, 9, None, None, None, None, None, tuple(crops),
                                               f"{uid}_frame.jpg"), np.eye(8, dtype=np.float32)[1:3])
        review.decide(store, uid, action, fish, "Ana")
    store.close()
    return tmp_path / "g.db"


def test_export_reviewed_writes_a_reid_folder_data_check_loads_and_distill_trains_on(tmp_path, capsys):
    gallery = _reviewed_gallery(tmp_path)
    before = (tmp_path / "g.db").read_bytes()
    out = tmp_path / "field"
    assert main(["export-reviewed", "--gallery", str(gallery), "--out", str(out)]) == 0
    assert "6 crops of 2 fish from 3 confirmed tracks in reid/ (2 of them queries)" in capsys.readouterr().out
    names = {sub: sorted(p.name for p in (out / "reid" / sub).iterdir()) for sub in ("train", "gallery", "query")}
    # fish-a's newest track is its queries; its older one and fish_b's only track are trained on and enrolled.
    assert names["train"] == names["gallery"] == ["0001_c1s1_000000_00.jpg", "0001_c1s1_000000_01.jpg",
                                                  "0002_c2s1_000001_00.jpg", "0002_c2s1_000001_01.jpg"]
    assert names["query"] == ["0001_c2s1_000002_00.jpg", "0001_c2s1_000002_01.jpg"]
    meta = json.loads((out / "reid.json").read_text())
    assert meta == {"identities": {"0001": "fish-a", "0002": "fish_b"}, "cameras": {"c1": "pen1", "c2": "pen2"}}
    assert len(list((out / "frames").iterdir())) == 3  # the ignored track's frame is not a fish's
    assert main(["data", "check", str(out / "reid")]) == 0
    assert (tmp_path / "g.db").read_bytes() == before  # nothing stored changed
    # The farm's next embedder learns from it: a teacher, then a distilled student (one tiny epoch each).
    tiny = ["--data", str(out / "reid"), "--epochs", "1", "--batch", "4", "--device", "cpu"]
    assert main(["train", "--task", "embed", "--model", "embed-student-s", "--out", str(tmp_path / "t"), *tiny]) == 0
    assert main(["distill", "--teacher", str(tmp_path / "t"), "--student", "embed-student-s", "--out", str(tmp_path / "s"),
                 *tiny]) == 0
    assert (tmp_path / "s" / "COMPLETE").is_file()


def test_export_reviewed_refuses_a_used_folder_and_an_unreviewed_gallery(tmp_path, capsys):
    gallery = _reviewed_gallery(tmp_path)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    assert main(["export-reviewed", "--gallery", str(gallery), "--out", str(tmp_path / "used")]) == 2
    assert "not an empty folder" in capsys.readouterr().err and (tmp_path / "used" / "keep.txt").read_text() == "mine"
    Store(tmp_path / "empty.db").close()
    assert main(["export-reviewed", "--gallery", str(tmp_path / "empty.db"), "--out", str(tmp_path / "o")]) == 2
    assert "no track was confirmed" in capsys.readouterr().err
