import numpy as np

from pose_core import skeleton as sk
from pose_core.result import People


def test_openpose_coco_round_trip_keeps_every_keypoint():
    coco = np.random.default_rng(0).uniform(1, 100, (3, 17, 3)).astype(np.float32)
    coco[..., 2] = 2
    assert np.array_equal(sk.openpose_to_coco(sk.coco_to_openpose(coco)), coco)


def test_neck_is_mean_of_shoulders_and_unlabelled_if_a_shoulder_is():
    coco = np.zeros((2, 17, 3), np.float32)
    coco[:, 5] = (10, 20, 2)
    coco[:, 6] = (30, 40, 1)
    coco[1, 6, 2] = 0
    op = sk.coco_to_openpose(coco)
    assert np.allclose(op[0, sk.NECK], (20, 30, 1))
    assert op[1, sk.NECK, 2] == 0


def test_flip_indices_swap_left_and_right_names():
    for i, j in enumerate(sk.COCO_FLIP_INDEX):
        a, b = sk.COCO_KEYPOINTS[i], sk.COCO_KEYPOINTS[j]
        assert a.replace("left", "right") == b or a.replace("right", "left") == b or a == b
    for i, j in enumerate(sk.OPENPOSE_FLIP_INDEX):
        a, b = sk.OPENPOSE_KEYPOINTS[i], sk.OPENPOSE_KEYPOINTS[j]
        assert a.replace("l_", "r_") == b or a.replace("r_", "l_") == b or a == b


def test_grouping_order_is_a_permutation_of_the_paf_limbs():
    assert sorted(sk.GROUPING_LIMB_INDEX) == list(range(len(sk.OPENPOSE_LIMBS)))
    assert sk.NUM_PAFS == 38


def test_people_boxes_enclose_confident_keypoints_only():
    kp = np.zeros((3, 17, 3), np.float32)
    kp[0, 0] = (10, 5, 0.9)
    kp[0, 1] = (50, 60, 0.8)
    kp[0, 2] = (500, 500, 0.05)
    kp[1, 3] = (7, 8, 0.5)                       # one keypoint: a point box
    kp[2, 4] = (300, 300, 0.1)                   # none above min_score: zeros
    people = People.from_keypoints(kp, [0.7, 0.6, 0.5], min_score=0.1)
    assert np.allclose(people.boxes, [(10, 5, 50, 60), (7, 8, 7, 8), (0, 0, 0, 0)])
    assert people.boxes.dtype == np.float32
    assert len(People.empty()) == 0
    sel = people.select(np.zeros(3, bool))
    assert len(sel) == 0 and sel.keypoints.shape == (0, 17, 3)
