import numpy as np
from finprint.runtime.identity import UNKNOWN, Gallery, IdentityResolver, mask_length_px


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
        events += resolver.observe("cam", f * 0.1, [7], np.array([[x, 90, x + 200, 110]], np.float32), emb[None], [mask])
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
