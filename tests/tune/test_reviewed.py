"""Tuning the open-set rule from tracks people judged on the daemon's page, with the floor of tracks."""

import json

import numpy as np

from finprint.cli import main
from finprint.runtime import review
from finprint.runtime.review import TrackRecord
from finprint.runtime.store import Store
from finprint.testing import make_toy_embedder
from finprint.tune.reviewed import reviewed_outcomes


def _farm(tmp_path, fish: int = 4, confirmed: int = 3, strangers: int = 2) -> Store:
    """Fish with two enrolment clips each, and reviewed tracks: `confirmed` per fish, `strangers` new fish."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(fish + strangers, 32))

    def look(k: int, n: int) -> np.ndarray:
        return centres[k] + 0.3 * rng.normal(size=(n, 32))

    store = Store(tmp_path / "g.db")
    for k in range(fish):
        for clip in range(2):
            store.enroll(f"fish{k}", look(k, 4), source=f"clip{clip}")
    review.ensure_schema(store)
    n = 0
    for k in range(fish):
        for _ in range(confirmed):
            n += 1
            review.record_track(store, TrackRecord(f"t{n}", "pen1", n, 0.0, 1.0, 9, None, None, None, None, None, (), None), look(k, 6))
            review.decide(store, f"t{n}", "confirm", f"fish{k}", "Ana")
    for s in range(strangers):
        n += 1
        review.record_track(store, TrackRecord(f"t{n}", "pen1", n, 0.0, 1.0, 9, None, None, None, None, None, (), None),
                            look(fish + s, 6))
        review.decide(store, f"t{n}", "new", f"new{s}", "Ana")
    n += 1
    review.record_track(store, TrackRecord(f"t{n}", "pen1", n, 0.0, 1.0, 9, None, None, None, None, None, (), None), look(0, 3))
    review.decide(store, f"t{n}", "ignore", None, "Ana")  # not a fish: left out
    return store


def test_reviewed_tracks_become_genuine_and_stranger_outcomes(tmp_path):
    store = _farm(tmp_path)
    found = reviewed_outcomes(store)
    assert (found.confirmed, found.strangers, found.enrolment_genuine, found.enrolment_strangers) == (12, 2, 8, 4)
    known = [o for o in found.outcomes if not o.truth_unknown]
    assert len(known) == 20 and all(o.closest == o.truth for o in known)  # its own enrolment is never its match
    strangers = [o for o in found.outcomes if o.truth_unknown]
    assert len(strangers) == 6 and all(o.closest != o.truth for o in strangers)
    assert min(o.similarity for o in known) > max(o.similarity for o in strangers)


def test_tune_open_set_from_reviews_says_what_it_rests_on_and_refuses_below_the_floor(tmp_path, capsys):
    store = _farm(tmp_path)
    store.close()
    emb = make_toy_embedder(tmp_path / "emb.onnx", dim=32)
    base = ["tune-open-set", "--gallery", str(tmp_path / "g.db"), "--embedder", str(emb), "--from-reviews"]
    assert main([*base, "--min-tracks", "10,8"]) == 2  # 6 stranger tracks
    err = capsys.readouterr().err
    assert "20 tracks of enrolled fish and 6 of strangers, under the floor of 10 and 8" in err and "12 reviewed tracks" in err
    assert Store(tmp_path / "g.db").open_set() is None
    assert main([*base, "--min-tracks", "10,5", "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "tuned on 20 tracks of enrolled fish and 6 of strangers: 12 reviewed tracks confirmed" in out
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["known_accuracy"] == 1.0 and report["unknown_flag_rate"] == 1.0
    stored = Store(tmp_path / "g.db").open_set()
    assert stored is not None and stored["threshold"] == report["threshold"] and stored["tuned_on"] == "14 reviewed tracks"
    assert main([*base, "--dry-run"]) == 0  # the default floor (10 and 5) is met: 20 and 6
