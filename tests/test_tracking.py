import numpy as np
import pytest

from pose_core.result import People
from pose_core.tracking import PoseTracker, box_iou, pose_similarity

# A standing person, COCO-17, in units of body height, centred on the hips.
TEMPLATE = np.array([
    [0.00, -0.45], [-0.02, -0.47], [0.02, -0.47], [-0.05, -0.46], [0.05, -0.46],
    [-0.12, -0.32], [0.12, -0.32], [-0.16, -0.15], [0.16, -0.15], [-0.18, 0.00], [0.18, 0.00],
    [-0.08, 0.00], [0.08, 0.00], [-0.09, 0.25], [0.09, 0.25], [-0.10, 0.50], [0.10, 0.50],
])


def person(cx, cy, height=200.0):
    keypoints = np.concatenate([TEMPLATE * height + (cx, cy), np.ones((17, 1))], axis=1)
    return keypoints


def frame(positions, rng, noise=1.5):
    """People at (cx, cy) positions, in a shuffled order, with pixel noise; returns (people, order)."""
    order = rng.permutation(len(positions))
    keypoints = np.array([person(*positions[i]) for i in order]).reshape(-1, 17, 3)
    keypoints[..., :2] += rng.normal(0, noise, keypoints[..., :2].shape)
    return People.from_keypoints(keypoints, np.ones(len(order))), order


def track_sequence(tracker, positions_per_frame, seed=0):
    """Run the tracker; returns per frame a dict original person index -> track id."""
    rng = np.random.default_rng(seed)
    out = []
    for t, positions in enumerate(positions_per_frame):
        people, order = frame(positions, rng)
        tracked = tracker.update(people, time_s=t / 30)
        out.append(dict(zip(order.tolist(), tracked.track_ids.tolist())))
    return out


def test_ids_stay_for_smooth_motion():
    starts = np.array([[100, 300], [400, 250], [700, 320]], dtype=float)
    velocity = np.array([[6, 1], [-4, 2], [2, -3]], dtype=float)
    frames = [starts + t * velocity for t in range(40)]
    ids = track_sequence(PoseTracker(), frames)
    assert all(f == ids[0] for f in ids)
    assert len(set(ids[0].values())) == 3


def test_crossing_people_keep_their_ids():
    # Same size, opposite directions, 4 px apart vertically; between frames 15 and 16 they pass.
    frames = [[(200 + 20 * t, 300), (810 - 20 * t, 304)] for t in range(31)]
    for seed in range(3):
        ids = track_sequence(PoseTracker(), frames, seed)
        assert ids[0][0] != ids[0][1]
        assert all(f == ids[0] for f in ids)


def test_crossing_without_motion_model_would_swap():
    # Guards the test above: at frame 16 person 0's last position is more similar to person 1's
    # detection than to their own, so only the velocity prediction keeps the ids.
    last = People.from_keypoints(np.array([person(500, 300), person(510, 304)]), [1, 1])
    now = People.from_keypoints(np.array([person(520, 300), person(490, 304)]), [1, 1])
    sim = pose_similarity(now.boxes, now.keypoints, last.boxes, last.keypoints)
    assert sim[0, 1] > sim[0, 0] and sim[1, 0] > sim[1, 1]


def test_missed_person_gets_the_same_id_back():
    frames = [[(100 + 10 * t, 300), (600, 300)] for t in range(20)]
    tracker = PoseTracker(max_missed=5)
    rng = np.random.default_rng(1)
    ids = []
    for t, positions in enumerate(frames):
        visible = positions if not 8 <= t < 12 else positions[1:]   # person 0 hidden for 4 frames
        people, order = frame(visible, rng)
        tracked = tracker.update(people, time_s=t / 30)
        offset = 0 if len(visible) == 2 else 1
        ids.append({int(i) + offset: tid for i, tid in zip(order, tracked.track_ids.tolist())})
    assert ids[7] == ids[12] == ids[19]
    assert ids[9] == {1: ids[0][1]}


def test_new_person_gets_a_new_id_and_ids_are_never_reused():
    tracker = PoseTracker(max_missed=2)
    rng = np.random.default_rng(2)
    seen = set()
    first, _ = frame([(200, 300)], rng)
    first_id = int(tracker.update(first).track_ids[0])
    seen.add(first_id)
    both, order = frame([(200, 300), (600, 300)], rng)
    ids = dict(zip(order.tolist(), tracker.update(both).track_ids.tolist()))
    assert ids[0] == first_id and ids[1] not in seen
    seen.add(ids[1])
    for _ in range(3):                                  # longer than max_missed: both tracks end
        tracker.update(People.empty())
    back, _ = frame([(200, 300)], rng)
    assert int(tracker.update(back).track_ids[0]) not in seen


def test_update_keeps_the_people_and_handles_empty_frames():
    tracker = PoseTracker()
    empty = tracker.update(People.empty())
    assert len(empty) == 0 and empty.track_ids.shape == (0,)
    people, _ = frame([(200, 300), (500, 300)], np.random.default_rng(3))
    tracked = tracker.update(people)
    np.testing.assert_array_equal(tracked.keypoints, people.keypoints)
    np.testing.assert_array_equal(tracked.boxes, people.boxes)


def test_box_iou():
    a = np.array([[0, 0, 10, 10]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], dtype=float)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 1 / 3, 0.0, 0.0]])


@pytest.mark.parametrize("n", [0, 1, 20])
def test_similarity_shape(n):
    keypoints = np.array([person(50 * i, 300) for i in range(n)]).reshape(-1, 17, 3)
    people = People.from_keypoints(keypoints, np.ones(n))
    sim = pose_similarity(people.boxes, people.keypoints, people.boxes[:3], people.keypoints[:3])
    assert sim.shape == (n, min(n, 3))
    np.testing.assert_allclose(np.diag(sim), 1.0)
