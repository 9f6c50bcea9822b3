"""What a live track leaves for the review queue: bounded however long it lasts, written when it ends."""

import numpy as np

from finprint.runtime import review
from finprint.runtime.store import Store
from finprint.runtime.track_samples import TrackSamples


def test_a_long_track_keeps_a_bounded_sample_and_ends_as_a_review_record(tmp_path):
    store = Store(tmp_path / "g.db")
    review.ensure_schema(store)
    samples = TrackSamples(tmp_path, "s1", max_embeddings=8, max_crops=3, embedder="sha")
    image = np.full((60, 80, 3), 120, np.uint8)
    for i in range(1000):
        samples.observe("pen1", 7, np.full(4, i, np.float32), image, np.array([10, 10, 50, 40], np.float32))
    samples.observe("pen1", 8, np.ones(4, np.float32), image, np.array([10, 10, 50, 40], np.float32))
    end = {"camera": "pen1", "track_id": 7, "first_ts": 1.0, "last_ts": 41.0, "frames": 1000, "individual_id": None,
           "closest_id": "fish-a", "similarity": 0.4, "lead": None}
    record = samples.finish(store, end)
    assert record is not None and record.uid == "s1-pen1-7" and len(record.crops) == 3 and record.frame == "s1-pen1-7_frame.jpg"
    assert all((tmp_path / name).is_file() for name in (*record.crops, record.frame))
    kept = review.track_embeddings(store, "s1-pen1-7")
    assert 4 <= len(kept) <= 8 and kept[0, 0] == 0 and kept[-1, 0] > 500  # spread over the whole track
    assert review.queue(store)[0].uid == "s1-pen1-7"
    samples.drop("pen1", 8)  # ended unreported
    assert len(samples) == 0 and samples.finish(store, {**end, "track_id": 9}) is None
    store.close()
