"""The ground-truth reviewer: the daemon's tracks of a labelled video kept for review, the queue judged as a person would."""

import json

import pytest

from finprint.runtime.config import TrackingConfig
from finprint.runtime.pipeline import Pipeline
from finprint.runtime.review import history, queue
from finprint.runtime.store import Store
from finprint.runtime.track_samples import TrackSamples
from finprint.testing import REVIEW_FARM_BOXES, REVIEW_FARM_SIZE, make_review_farm
from finprint.tune.reviewer import WHO, judge_queue, keep_tracks
from finprint.tune.score import gallery_rule_tracking, run_chain


def _truth(path, frames: int, fish: list[tuple[str, bool]]) -> None:
    """Ground truth of the review farm's video: its two fish while the water is bright (30 frames of every 65)."""
    w, h = REVIEW_FARM_SIZE
    scale, pad = w / 64, (64 - h * 64 / w) / 2
    boxes = [[x1 * scale, (y1 - pad) * scale, x2 * scale, (y2 - pad) * scale] for x1, y1, x2, y2 in REVIEW_FARM_BOXES]
    doc = {"camera": "pen1", "fps": 25.0, "px_per_cm": 4.0, "frames": [
        {"frame": i, "instances": [{"individual_id": ident, "unknown": unknown, "box_xyxy": boxes[k]}
                                   for k, (ident, unknown) in enumerate(fish) if ident] if i % 65 < 30 else []}
        for i in range(frames)]}
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("stranger_in_truth", [True, False])
def test_the_queue_is_judged_by_the_truth(tmp_path, stranger_in_truth):
    farm = make_review_farm(tmp_path / "farm")
    truth_json = tmp_path / "pen.json"
    _truth(truth_json, 130, [("fish-a", False), ("b7" if stranger_in_truth else "", True)])
    pipeline = Pipeline(farm["detector"], farm["embedder"], "cpu")
    try:
        video = run_chain(farm["video"], truth_json, pipeline)
        gallery, rule, tracking = gallery_rule_tracking(farm["gallery"], farm["detector"], farm["embedder"], pipeline,
                                                        TrackingConfig(min_hits=2))
        store = Store(farm["gallery"])
        truth = keep_tracks(farm["video"], video, gallery, tracking, rule.margin, store,
                            TrackSamples(tmp_path / "review", "s1"))
    finally:
        pipeline.close()
    # Two passes of two fish: four tracks kept, each with the fish it lay on (none for an unlabelled stranger).
    assert sorted(v for v in truth.values() if v) == sorted([("fish-a", False)] * 2 + [("b7", True)] * 2 * stranger_in_truth)
    tally = judge_queue(store, truth)
    assert tally.kept == 4 and tally.not_shown == 2  # fish-a was named with no runner-up: never in the queue
    if stranger_in_truth:
        # The stranger's first track makes it a new fish; its second is confirmed as that fish.
        assert (tally.new, tally.confirmed, tally.ignored) == (1, 1, 0)
        assert store.query("SELECT COUNT(*) FROM individuals WHERE id = 'new-b7'")[0][0] == 1
    else:
        assert (tally.new, tally.confirmed, tally.ignored) == (0, 0, 2)
    assert not queue(store) and {d["who"] for d in history(store)} == {WHO}
    store.close()
