import numpy as np

from finprint.runtime.config import TrackingConfig
from finprint.runtime.tracker import iou_matrix


def ByteTracker(**settings):  # noqa: N802 - the tracker these tests were written for: boxes only, low score 0.1
    return TrackingConfig(**{"low_score": 0.1, "appearance_gate": None, **settings}).make_tracker()


def _box(cx, cy, w=40, h=20):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_iou_matrix_basic():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b)[0], [1.0, 1 / 3, 0.0], atol=1e-6)


def test_two_fish_crossing_keep_their_ids():
    tracker = ByteTracker(min_hits=1)
    ids_a, ids_b = set(), set()
    for f in range(40):
        a = _box(20 + 5 * f, 50)
        b = _box(220 - 5 * f, 120)
        tracks = tracker.update(np.array([a, b]), np.array([0.9, 0.8]))
        for t in tracks:
            (ids_a if t.det_index == 0 else ids_b).add(t.track_id)
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b


def test_low_score_detection_keeps_track_alive():
    tracker = ByteTracker(min_hits=1)
    first = tracker.update(np.array([_box(50, 50)]), np.array([0.9]))[0].track_id
    tracks = tracker.update(np.array([_box(52, 50)]), np.array([0.2]))  # occluded: low score
    assert [t.track_id for t in tracks] == [first]
    # a low-score detection alone never starts a track
    assert tracker.update(np.array([_box(400, 400)]), np.array([0.2])) == []


def test_lost_tracks_are_forgotten_and_state_stays_bounded():
    tracker = ByteTracker(max_lost_frames=5, min_hits=1)
    for f in range(2000):  # a new fish every frame, each seen once
        tracker.update(np.array([_box(10 + (f % 50) * 30, 10 + (f // 50) % 40 * 30)]), np.array([0.9]))
    assert len(tracker.live_tracks) <= 7
    assert not hasattr(tracker, "removed")


def test_confirmation_needs_min_hits_and_ended_reports_gone_tracks():
    tracker = ByteTracker(min_hits=3, max_lost_frames=2)
    for f in range(3):
        tracks = tracker.update(np.array([_box(50 + f, 50)]), np.array([0.9]))
        assert tracks[0].confirmed == (f == 2)
    ended = []
    for _ in range(4):
        tracker.update(np.zeros((0, 4)), np.zeros(0))
        ended += tracker.ended
    assert len(ended) == 1 and ended[0].hits == 3
    assert tracker.live_tracks == []


def _looks(i: int) -> np.ndarray:
    return np.eye(8, dtype=np.float32)[i]


def test_appearance_gate_keeps_a_different_fish_from_continuing_a_track():
    # Fish A swims off at frame 4; fish B turns up where A's track expects it. Boxes alone hand A's track
    # to B; with embeddings B starts its own track.
    for gate, same_track in ((None, True), (0.3, False)):
        tracker = ByteTracker(min_hits=1, appearance_gate=gate)
        first = None
        for f in range(4):
            (t,) = tracker.update(np.array([_box(50 + 5 * f, 50)]), np.array([0.9]), _looks(0)[None])
            first = first or t.track_id
        tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 8)))
        (t,) = tracker.update(np.array([_box(75, 50)]), np.array([0.9]), _looks(1)[None])
        assert (t.track_id == first) is same_track, gate


def test_appearance_decides_between_two_overlapping_candidates():
    tracker = ByteTracker(min_hits=1, appearance_gate=0.3)
    (a,) = tracker.update(np.array([_box(50, 50)]), np.array([0.9]), _looks(0)[None])
    # Next frame: a stranger overlaps the track's box a little more than the fish itself does.
    boxes = np.array([_box(52, 50), _box(56, 50)])
    tracks = tracker.update(boxes, np.array([0.9, 0.9]), np.stack([_looks(1), _looks(0)]))
    by_det = {t.det_index: t.track_id for t in tracks}
    assert by_det[1] == a.track_id and by_det[0] != a.track_id


def test_relabel_gives_a_live_track_a_new_id_that_is_never_reused():
    tracker = ByteTracker(min_hits=1)
    (track,) = tracker.update(np.array([_box(50, 50)]), np.array([0.9]))
    first = track.track_id
    assert tracker.relabel(track) != first
    (same,) = tracker.update(np.array([_box(52, 50)]), np.array([0.9]))
    assert same is track and same.track_id == first + 1  # the box goes on under the new id
    (_, other) = tracker.update(np.array([_box(54, 50), _box(300, 200)]), np.array([0.9, 0.9]))
    assert other.track_id not in (first, first + 1)
