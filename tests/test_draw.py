import numpy as np

from pose_core.draw import LIMB_COLOURS, draw_people, person_colour
from pose_core.result import People
from pose_core.skeleton import COCO_SKELETON

LEFT_SHOULDER, LEFT_ELBOW = 5, 7
UPPER_ARM = COCO_SKELETON.index((LEFT_SHOULDER, LEFT_ELBOW))


def arm(elbow_score=0.9, track_id=None):
    """One person with only a left upper arm, from (100, 240) to (380, 240)."""
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, LEFT_SHOULDER] = (100, 240, 0.9)
    kp[0, LEFT_ELBOW] = (380, 240, elbow_score)
    return People.from_keypoints(kp, [1.0], track_ids=None if track_id is None else [track_id])


def black(h=480, w=480):  # 2 px lines
    return np.zeros((h, w, 3), np.uint8)


def test_a_limb_is_drawn_in_its_colour_along_its_length_only():
    frame = black()
    out = draw_people(frame, arm())
    assert out is frame
    for x in (150, 240, 330):
        assert tuple(frame[240, x]) == LIMB_COLOURS[UPPER_ARM]
    assert not frame[:230].any() and not frame[250:].any()
    assert not frame[:, :90].any() and not frame[:, 390:].any()


def test_keypoints_at_or_below_the_threshold_and_their_limbs_are_not_drawn():
    frame = draw_people(black(), arm(elbow_score=0.1), min_score=0.2)
    assert not frame[:, 110:].any()                   # no limb, no elbow
    assert tuple(frame[240, 100]) == person_colour(0)  # the shoulder is drawn
    assert not draw_people(black(), arm(elbow_score=0.2), min_score=0.2)[:, 110:].any()


def test_people_are_coloured_by_track_id_when_tracked_else_by_index():
    tracked = draw_people(black(), arm(track_id=7))
    assert tuple(tracked[240, 380]) == person_colour(7)
    untracked = draw_people(black(), arm())
    assert tuple(untracked[240, 380]) == person_colour(0)
    assert person_colour(7) != person_colour(0)


def test_boxes_and_id_labels_are_optional():
    plain = draw_people(black(), arm(track_id=3), limbs=False, keypoints=False, ids=False)
    assert not plain.any()
    boxed = draw_people(black(), arm(track_id=3), limbs=False, keypoints=False, boxes=True, ids=False)
    assert boxed[240, 100].any() and boxed[240, 380].any()   # the (flat) box spans the arm
    assert not boxed[:230].any()
    labelled = draw_people(black(), arm(track_id=3), limbs=False, keypoints=False, ids=True)
    assert labelled[200:240, 100:140].any()                  # the label sits above the box


def test_many_people_odd_frame_sizes_and_no_people():
    rng = np.random.default_rng(0)
    kp = rng.uniform(-50, 150, (20, 17, 3)).astype(np.float32)
    kp[..., 2] = rng.uniform(0, 1, (20, 17))
    people = People.from_keypoints(kp, np.ones(20), track_ids=np.arange(20))
    for h, w in ((17, 33), (3000, 4000)):
        assert draw_people(black(h, w), people, boxes=True).any()
    assert not draw_people(black(), People.empty()).any()
