"""The scorer runs the daemon's chain: a recorded video through both gives the same tracks and events."""

import json

import cv2
import numpy as np
import yaml

from finprint.runtime.config import load_config
from finprint.runtime.daemon import Daemon
from finprint.runtime.pipeline import Pipeline
from finprint.runtime.store import Store
from finprint.testing import make_toy_detector, make_toy_embedder
from finprint.tune.score import open_pipeline_and_gallery, replay, run_chain

W, H = 160, 120
ORANGE, GREEN = (30, 140, 200), (60, 200, 40)
# Timing depends on the wall clock in the daemon and on the frame index in the scorer; everything else must agree.
CLOCKED = {"ts", "first_ts", "last_ts", "speed_cm_s", "event_id", "snapshot"}


def _frame(i: int) -> np.ndarray:
    """Two fish where the toy detector reports them; dark frames 15-21 hold none (their tracks end), and after
    the gap the fish have swapped colours (the first box now shows the stranger)."""
    if 15 <= i < 22:
        return np.zeros((H, W, 3), np.uint8)
    img = np.full((H, W, 3), (40, 40, 200), np.uint8)  # reddish: the detector scores follow the red channel
    first, second = (ORANGE, GREEN) if i < 15 else (GREEN, ORANGE)
    img[40:70, 20:100] = first
    img[10:30, 110:150] = second
    cv2.putText(img, str(i), (5, 115), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return img


def test_replaying_a_video_through_the_scorer_and_the_daemon_gives_the_same_tracks_and_events(tmp_path):
    det = make_toy_detector(tmp_path / "det.onnx", fish_xyxy=[[8, 24, 40, 36], [44, 12, 60, 20]],
                            fish_scores=[0.9, 0.8], score_follows_brightness=True)
    emb = make_toy_embedder(tmp_path / "emb.onnx", open_set_threshold=0.9)
    video = tmp_path / "pen.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
    for i in range(40):
        writer.write(_frame(i))
    writer.release()
    (tmp_path / "pen.json").write_text(json.dumps({"camera": "pen1", "fps": 25.0, "px_per_cm": 4.0, "frames": []}))
    pipeline = Pipeline(det, emb, "cpu")
    store = Store(tmp_path / "gallery.db")
    store.enroll("fish007", pipeline.embed_crops([_frame(0)[40:70, 20:100]]), source="test")
    store.close()
    pipeline.close()
    tracking = {"min_hits": 2, "max_lost_frames": 3}
    config = {
        "cameras": [{"id": "pen1", "source": str(video), "px_per_cm": 4.0, "fps_limit": 1000}],
        "models": {"detector": str(det), "embedder": str(emb), "backend": "cpu", "max_batch": 1},
        "gallery": "gallery.db", "sinks": {"jsonl": "events.jsonl"}, "http": {"enabled": False},
        "tracking": tracking, "queue_size": 64,  # more than the video's frames: none is dropped
    }
    (tmp_path / "farm.yaml").write_text(yaml.safe_dump(config))

    daemon_tracks: list = []

    class Recording(Daemon):
        def _start_store(self) -> None:
            super()._start_store()
            chain = self.chains["pen1"]
            step = chain.step

            def recorded(frame, ts):
                tracks, events = step(frame, ts)
                daemon_tracks.append([(t.track_id, t.det_index) for t in tracks])
                return tracks, events

            chain.step = recorded

    daemon = Recording(load_config(tmp_path / "farm.yaml"))
    assert daemon.run_until_signalled() == 0
    assert daemon.processed["pen1"] == 40
    daemon_events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]

    from finprint.runtime.config import TrackingConfig

    pipeline, gallery, rule, resolved = open_pipeline_and_gallery(tmp_path / "gallery.db", det, emb, "cpu",
                                                                  tracking=TrackingConfig(**tracking))
    try:
        recorded = run_chain(video, tmp_path / "pen.json", pipeline)
    finally:
        pipeline.close()
    scorer_tracks, scorer_events = [], []
    for index, tracks, events in replay(recorded, gallery, resolved, rule.margin):
        if index < len(recorded.frames):
            scorer_tracks.append([(t.track_id, t.det_index) for t in tracks])
        scorer_events += events

    def untimed(events: list[dict]) -> list[dict]:
        return [{k: v for k, v in ev.items() if k not in CLOCKED} for ev in events]

    assert scorer_tracks == daemon_tracks
    assert untimed(scorer_events) == untimed(daemon_events)
    kinds = [(e["type"], e["individual_id"]) for e in daemon_events]
    # Something worth comparing: tracks that ended at the dark gap and new ones after it, a named fish and a stranger.
    assert kinds.count(("track_end", "fish007")) == 2 and ("track_end", None) in kinds
    assert len({e["track_id"] for e in daemon_events}) == 4
