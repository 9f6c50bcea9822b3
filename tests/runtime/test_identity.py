import numpy as np
import pytest

from finprint.runtime.identity import (
    DEFAULT_OPEN_SET_MARGIN,
    SIMILARITY_BINS,
    UNKNOWN,
    WHITENING_STRENGTH,
    Gallery,
    better_half_mean,
    mask_length_px,
    within_class_whitening,
)


def IdentityResolver(gallery, px_per_cm, min_frames, margin=DEFAULT_OPEN_SET_MARGIN):  # noqa: N802
    """The resolver as the daemon makes it, from TrackingConfig (its defaults besides min_hits)."""
    from finprint.runtime.config import TrackingConfig

    return TrackingConfig(min_hits=min_frames).make_resolver(gallery, px_per_cm, margin)


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def _gallery():
    rng = np.random.default_rng(0)
    protos = {f"fish{i:03d}": _unit(rng.normal(size=16)) for i in range(3)}
    names = [n for n in protos for _ in range(2)]
    emb = np.stack([_unit(protos[n] + 0.05 * rng.normal(size=16)) for n in names])
    return Gallery(names, emb, threshold=0.7), protos, rng


def test_gallery_matches_known_and_rejects_unknown():
    gallery, protos, rng = _gallery()
    stranger = _unit(rng.normal(size=16))
    res = gallery.match(np.stack([protos["fish001"], stranger]))
    assert res[0][0] == "fish001" and res[0][1] > 0.9
    assert res[1][0] == UNKNOWN
    assert gallery.remove("fish001") == 2 and "fish001" not in gallery.individuals


def test_empty_gallery_says_unknown():
    assert Gallery(threshold=0.5).match(np.ones((2, 8), np.float32)) == [(UNKNOWN, -1.0), (UNKNOWN, -1.0)]


def test_mask_length_from_min_area_rect():
    mask = np.zeros((100, 200), bool)
    mask[40:50, 20:120] = True  # 100 px long
    assert abs(mask_length_px(mask) - 100) < 2
    assert mask_length_px(np.zeros((10, 10), bool)) is None


def test_votes_outweigh_a_bad_frame_and_track_summary_has_length_and_speed():
    gallery, protos, rng = _gallery()
    resolver = IdentityResolver(gallery, {"cam": 10.0}, min_frames=3)
    events = []
    mask = np.zeros((200, 400), bool)
    mask[90:110, 100:300] = True  # 200 px = 20 cm at 10 px/cm
    for f in range(10):
        emb = protos["fish002"] if f != 4 else protos["fish000"]  # one confused frame
        x = 100 + 10 * f  # 10 px/frame = 1 cm/frame; frames 0.1 s apart -> 10 cm/s
        events += resolver.observe("cam", f * 0.1, [7], np.array([[x, 90, x + 200, 110]], np.float32), emb[None],
                                   [mask_length_px(mask)])
    assert [e["type"] for e in events] == ["identified"]
    assert events[0]["individual_id"] == "fish002"
    end = resolver.end("cam", [7], 1.0)[0]
    assert end["type"] == "track_end" and end["individual_id"] == "fish002" and end["frames"] == 10
    assert abs(end["length_cm"] - 20) < 0.5
    assert abs(end["speed_cm_s"] - 10) < 0.5
    assert len(resolver) == 0


def test_unknown_track_is_flagged():
    gallery, _, rng = _gallery()
    resolver = IdentityResolver(gallery, {"cam": 1.0}, min_frames=2)
    stranger = _unit(rng.normal(size=16))
    for f in range(5):
        resolver.observe("cam", f, [1], np.array([[0, 0, 10, 10]], np.float32), stranger[None], [None])
    (end,) = resolver.end_all(5.0)
    assert end["unknown"] is True and end["individual_id"] is None and end["length_cm"] is None


def test_a_strangers_few_lucky_frames_do_not_make_it_known():
    gallery, protos, rng = _gallery()
    resolver = IdentityResolver(gallery, {"cam": 1.0}, min_frames=2)
    stranger = _unit(rng.normal(size=16))
    for f in range(10):
        emb = protos["fish000"] if f in (2, 6) else stranger  # 2 of 10 frames look like fish000
        resolver.observe("cam", f, [1], np.array([[0, 0, 10, 10]], np.float32), emb[None], [None])
    (end,) = resolver.end_all(10.0)
    assert end["unknown"] is True


def test_a_track_that_drifted_onto_another_fish_is_named_after_the_fish_it_showed_most():
    # At a crossing the track left fish001 (11 clear frames) for fish000 (9 clear frames). Scored over every
    # frame, fish000's better half would be 9 frames at 0.9 and one at 0.1: 0.82 against fish001's 0.9, a lead
    # of 0.08, under the 0.1 margin, so the track would be called unknown. Judged on its own 11 frames fish001
    # leads by 0.8.
    gallery = Gallery(["fish000", "fish001"], np.eye(3, dtype=np.float32)[:2], threshold=0.5)
    looks = {"fish001": _unit([0.1, 0.9, np.sqrt(1 - 0.1**2 - 0.9**2)]), "fish000": _unit([0.9, 0.1, np.sqrt(1 - 0.1**2 - 0.9**2)])}
    resolver = IdentityResolver(gallery, {"cam": 1.0}, min_frames=3, margin=0.1)
    for f in range(20):
        emb = looks["fish001"] if f < 11 else looks["fish000"]
        resolver.observe("cam", f, [1], np.array([[0, 0, 10, 10]], np.float32), emb[None], [None])
    track = resolver.track("cam", 1)
    assert track is not None and track.identity == "fish001"
    assert abs(track.similarity - 0.9) < 0.01 and abs(track.lead - 0.8) < 0.01  # 0.01-wide bins
    (end,) = resolver.end_all(20.0)
    assert end["votes"] == 11 and end["frames"] == 20


def test_a_majority_of_ambiguous_frames_is_flagged_by_the_margin():
    # fish000 and fish001 look alike in 7 frames (fish000 a hair closer); 3 frames show fish001 clearly.
    # fish000 has the votes, but it led fish001 by only 0.05 in them: below a 0.1 margin, unknown.
    gallery = Gallery(["fish000", "fish001"], np.eye(3, dtype=np.float32)[:2], threshold=0.5)
    ambiguous = _unit([0.6, 0.55, np.sqrt(1 - 0.6**2 - 0.55**2)])
    clear = _unit([0.1, 0.95, np.sqrt(1 - 0.1**2 - 0.95**2)])
    resolver = IdentityResolver(gallery, {"cam": 1.0}, min_frames=3, margin=0.1)
    for f in range(10):
        emb = ambiguous if f < 7 else clear
        resolver.observe("cam", f, [1], np.array([[0, 0, 10, 10]], np.float32), emb[None], [None])
    track = resolver.track("cam", 1)
    assert track is not None and track.closest == "fish000" and track.identity == UNKNOWN
    assert abs(track.lead - 0.05) < 0.01


def test_better_half_mean_takes_the_upper_half_of_frames():
    hist = np.zeros((2, SIMILARITY_BINS), np.int32)
    for row, sims in enumerate(([0.9, 0.8, 0.1, 0.0], [0.5, 0.5, 0.5])):
        for s in sims:
            hist[row, int((s + 1) * SIMILARITY_BINS / 2)] += 1
    np.testing.assert_allclose(better_half_mean(hist), [0.855, 0.505], atol=1e-6)  # 2 of 4 frames; 2 of 3


def test_a_fish_entering_the_frame_is_still_named_and_the_state_stays_bounded():
    gallery, protos, rng = _gallery()
    resolver = IdentityResolver(gallery, {"cam": 1.0}, min_frames=3)
    box = np.array([[0, 0, 10, 10]], np.float32)
    for f in range(400):
        # Its first frames show a sliver of the fish: they look like nobody; the rest look like fish002.
        # (A plain mean over all 400 frames, about 0.6, would fall below the 0.7 threshold.)
        emb = _unit(rng.normal(size=16)) if f < 150 else _unit(protos["fish002"] + 0.1 * rng.normal(size=16))
        resolver.observe("cam", f, [1], box, emb[None], [None])
    track = resolver.track("cam", 1)
    assert track is not None and track.identity == "fish002"
    k = len(gallery.individuals)
    assert track.similarity_hist.shape == track.lead_hist.shape == (k, SIMILARITY_BINS) and track.votes.shape == (k,)
    assert track.votes.sum() == 400


def test_gallery_similarities_take_each_fishs_closest_embedding():
    gallery = Gallery(["a", "a", "b"], np.array([[1, 0], [0.6, 0.8], [0, 1]], np.float32))
    names, sims = gallery.similarities(np.array([[0, 1], [1, 0]], np.float32))
    assert names == ["a", "b"]
    np.testing.assert_allclose(sims, [[0.8, 1.0], [1.0, 0.0]], atol=1e-6)


def test_a_stranger_between_two_known_fish_is_unknown_by_the_margin():
    # Almost equally like fish000 and fish001 (0.60 and 0.59, above the threshold): ambiguous, so unknown; with no
    # margin the closer by a hair would be named. A clear match to fish001 keeps its name.
    gallery = Gallery(["fish000", "fish001"], np.eye(3, dtype=np.float32)[:2], threshold=0.5)
    between = _unit([0.6, 0.59, np.sqrt(1 - 0.6**2 - 0.59**2)])
    clear = _unit([0.3, 0.9, np.sqrt(1 - 0.3**2 - 0.9**2)])
    box = np.array([[0, 0, 10, 10]], np.float32)
    for margin, track_id, emb, expected in ((0.03, 1, between, UNKNOWN), (0.0, 2, between, "fish000"), (0.03, 3, clear, "fish001")):
        resolver = IdentityResolver(gallery, {"cam": 1.0}, min_frames=1, margin=margin)
        for f in range(4):
            resolver.observe("cam", f, [track_id], box, emb[None], [None])
        track = resolver.track("cam", track_id)
        assert track is not None and track.identity == expected, (margin, track_id)
    (end,) = resolver.end_all(4.0)
    assert abs(end["lead"] - 0.6) < 0.01  # 0.01-wide bins


def test_one_enrolled_fish_needs_no_margin():
    gallery = Gallery(["fish000"], np.eye(3, dtype=np.float32)[:1], threshold=0.5)
    resolver = IdentityResolver(gallery, {"cam": 1.0}, min_frames=1, margin=0.5)
    resolver.observe("cam", 0.0, [1], np.array([[0, 0, 10, 10]], np.float32), _unit([0.9, 0.1, 0.1])[None], [None])
    (end,) = resolver.end_all(1.0)
    assert end["individual_id"] == "fish000" and end["lead"] is None


def _two_fish_seen_in_different_poses() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Fish a and b differ a little along axis 1; pose moves both a lot along axis 2, and the gallery saw a
    only on one side of it and b only on the other. A query of a on b's side lies nearest b's enrolled
    views. (Plain cosine names b and whitening names a for each of 20 noise seeds; seed 0 here.)"""
    rng = np.random.default_rng(0)
    axis = np.eye(8)
    pose = np.linspace(0.0, 0.8, 9)[:, None]
    a = axis[0] + 0.2 * axis[1] - pose * axis[2]
    b = axis[0] - 0.2 * axis[1] + pose * axis[2]
    emb = np.concatenate([a, b]) + rng.normal(0, 0.03, (18, 8))
    query = axis[0] + 0.2 * axis[1] + 0.8 * axis[2]
    return ["a"] * 9 + ["b"] * 9, emb.astype(np.float32), query[None].astype(np.float32)


def test_whitening_listens_to_what_tells_the_enrolled_fish_apart():
    names, emb, query = _two_fish_seen_in_different_poses()
    plain = Gallery(names, emb, threshold=0.0)
    assert plain.match(query)[0][0] == "b"
    whitened = plain.with_whitening(WHITENING_STRENGTH)
    assert whitened.whitening == WHITENING_STRENGTH and len(whitened) == len(plain)
    assert whitened.match(query)[0][0] == "a"
    who, sims = whitened.similarities(query)
    assert who == ["a", "b"] and sims[0, 0] > sims[0, 1]
    assert plain.with_whitening(None).match(query)[0][0] == "b"  # and back


def test_whitening_is_refitted_when_fish_come_and_go():
    names, emb, query = _two_fish_seen_in_different_poses()
    gallery = Gallery(names[:9], emb[:9], threshold=0.0, whitening=WHITENING_STRENGTH)
    gallery.add("b", emb[9:])
    assert gallery.match(query)[0][0] == "a"
    assert gallery.remove("b") == 9 and gallery.match(query)[0][0] == "a"
    single = Gallery(["a"], emb[:1], whitening=WHITENING_STRENGTH)  # one view: nothing to fit, plain cosine
    assert within_class_whitening(emb[:1], np.zeros(1, np.int64), WHITENING_STRENGTH) is None
    assert single.match(emb[:1])[0] == ("a", pytest.approx(1.0))


def _chain(gallery, **tracking):
    """The camera chain with a boxes-only tracker (it follows the box whoever is in it), each frame confirmed."""
    from finprint.runtime.chain import CameraChain
    from finprint.runtime.config import TrackingConfig

    return CameraChain("cam", TrackingConfig(min_hits=1, low_score=0.1, appearance_gate=None, **tracking), gallery, margin=0.03)


def test_a_split_track_ends_with_its_own_fish_and_goes_on_under_a_new_id():
    from finprint.runtime.chain import ChainFrame

    gallery, protos, _ = _gallery()
    chain = _chain(gallery, split_window=6)
    events = []
    for f in range(30):
        box = np.array([[100 + 2 * f, 50, 160 + 2 * f, 70]], np.float32)
        emb = (protos["fish000"] if f < 15 else protos["fish001"])[None]
        events += chain.step(ChainFrame(box, np.ones(1, np.float32), emb), f * 0.1)[1]
    events += chain.close(3.0)
    ends = [e for e in events if e["type"] == "track_end"]
    assert [(e["individual_id"], e["continues"]) for e in ends] == [("fish000", None), ("fish001", ends[0]["track_id"])]
    assert ends[1]["track_id"] != ends[0]["track_id"] and ends[0]["frames"] + ends[1]["frames"] == 30
    assert [e["individual_id"] for e in events if e["type"] == "identified"] == ["fish000", "fish001"]
    assert all(len(r.recent) <= 6 for r in chain.resolver._tracks.values())


def test_without_splitting_the_track_keeps_one_id():
    from finprint.runtime.chain import ChainFrame

    gallery, protos, _ = _gallery()
    chain = _chain(gallery)
    for f in range(30):
        box = np.array([[100 + 2 * f, 50, 160 + 2 * f, 70]], np.float32)
        emb = (protos["fish000"] if f < 15 else protos["fish001"])[None]
        _, events = chain.step(ChainFrame(box, np.ones(1, np.float32), emb), f * 0.1)
        assert not [e for e in events if e["type"] == "track_end"]
    (end,) = chain.close(3.0)
    assert end["frames"] == 30 and end["continues"] is None


def test_with_splitting_each_frame_is_matched_against_the_gallery_once(monkeypatch):
    from finprint.runtime.chain import ChainFrame

    gallery, protos, _ = _gallery()
    calls = []
    real = gallery.similarities
    monkeypatch.setattr(gallery, "similarities", lambda emb: calls.append(len(emb)) or real(emb))
    chain = _chain(gallery, split_window=6)
    for f in range(20):
        box = np.array([[100 + 2 * f, 50, 160 + 2 * f, 70]], np.float32)
        chain.step(ChainFrame(box, np.ones(1, np.float32), protos["fish000"][None]), f * 0.1)
    assert calls == [1] * 20
