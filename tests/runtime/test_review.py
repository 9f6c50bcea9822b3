"""The review list's decisions: stored with who and when, undoable, and refused (changing nothing) when stale."""

import numpy as np
import pytest

from finprint.runtime import review
from finprint.runtime.review import ReviewRefused, TrackRecord
from finprint.runtime.store import Store


def _track(uid: str, individual: str | None = None, lead: float | None = None) -> TrackRecord:
    return TrackRecord(uid, "pen1", 1, 10.0, 12.0, 20, individual, "fish-a", 0.5, lead, "emb-sha", ("c.jpg",), "f.jpg")


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "g.db")
    s.enroll("fish-a", np.eye(4, dtype=np.float32)[:1], source="test")
    review.ensure_schema(s)
    rng = np.random.default_rng(0)
    review.record_track(s, _track("t-unknown"), rng.normal(size=(3, 4)))
    review.record_track(s, _track("t-thin", "fish-a", 0.02), rng.normal(size=(2, 4)))
    review.record_track(s, _track("t-clear", "fish-a", 0.5), rng.normal(size=(2, 4)))
    yield s
    s.close()


def _snapshot(store):
    return {t: store.query(f"SELECT * FROM {t} ORDER BY 1") for t in ("individuals", "embeddings", "reviews")}


def test_the_queue_holds_unknown_and_thin_lead_tracks(store):
    assert {t.uid for t in review.queue(store, review_lead=0.1)} == {"t-unknown", "t-thin"}


def test_a_new_fish_enrols_the_tracks_embeddings_and_undo_takes_exactly_them_back(store):
    before = _snapshot(store)
    rid = review.decide(store, "t-unknown", "new", "fish-b", "  Ana  ")
    assert store.count("embeddings") == 4 and {f["id"] for f in store.individuals()} == {"fish-a", "fish-b"}
    assert {t.uid for t in review.queue(store)} == {"t-thin"}
    [h] = review.history(store)
    assert (h["who"], h["action"], h["individual_id"], h["undone_ts"]) == ("Ana", "new", "fish-b", None) and h["ts"] > 0
    review.undo(store, rid, "Bo")
    after = _snapshot(store)
    assert after["individuals"] == before["individuals"] and after["embeddings"] == before["embeddings"]
    assert review.history(store)[0]["undone_by"] == "Bo"
    assert {t.uid for t in review.queue(store)} == {"t-unknown", "t-thin"}  # back in the queue
    with pytest.raises(ReviewRefused, match="already undone"):
        review.undo(store, rid, "Bo")


def test_confirm_adds_to_a_fish_and_ignore_only_records(store):
    review.decide(store, "t-thin", "confirm", "fish-a", "x")
    review.decide(store, "t-unknown", "ignore", None, "x")
    assert store.count("embeddings") == 3 and review.queue(store) == []
    assert [(t.uid, a, f) for t, a, f in review.reviewed_tracks(store)] == [("t-thin", "confirm", "fish-a"),
                                                                            ("t-unknown", "ignore", None)]


@pytest.mark.parametrize("uid, action, fish, message", [
    ("t-gone", "ignore", None, "not in the review list"),
    ("t-unknown", "confirm", "fish-zz", "not in the gallery"),
    ("t-unknown", "new", "fish-a", "already in the gallery"),
    ("t-unknown", "new", "unknown", "label the matcher gives strangers"),
    ("t-unknown", "new", "", "name the fish"),
    ("t-unknown", "delete", None, "unknown action"),
])
def test_refused_decisions_change_nothing(store, uid, action, fish, message):
    before = _snapshot(store)
    with pytest.raises(Exception, match=message):
        review.decide(store, uid, action, fish, "x")
    assert _snapshot(store) == before


def test_a_forgotten_fish_and_a_judged_track_are_refused(store):
    review.decide(store, "t-thin", "confirm", "fish-a", "x")
    with pytest.raises(ReviewRefused, match="already judged"):
        review.decide(store, "t-thin", "ignore", None, "y")
    store.forget("fish-a")
    before = _snapshot(store)
    with pytest.raises(ReviewRefused, match="forgotten"):
        review.decide(store, "t-unknown", "confirm", "fish-a", "x")
    assert _snapshot(store) == before


def test_a_track_of_another_embedder_is_not_enrolled(store):
    with pytest.raises(ReviewRefused, match="another embedder"):
        review.decide(store, "t-unknown", "new", "fish-b", "x", embedder=("emb.onnx", "other-sha"))
