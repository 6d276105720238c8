"""Keypoint layouts shared by every pipeline.

COCO-17 is the public order everywhere outside a network's internals
(spec ARCHITECTURES.md section 0.1). The bottom-up network predicts the
OpenPose-18 order (COCO without neck reordering, plus a neck) and its limbs
(spec section 1.6 and 1.7); the maps between the two live here so no other
module re-derives them.
"""
import numpy as np

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = len(COCO_KEYPOINTS)

COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

# Index permutation that maps keypoints of a mirrored image back to their names.
COCO_FLIP_INDEX = np.arange(NUM_KEYPOINTS)
for _a, _b in COCO_FLIP_PAIRS:
    COCO_FLIP_INDEX[_a], COCO_FLIP_INDEX[_b] = _b, _a

# 19 links, mmpose order.
COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

OKS_SIGMAS = np.array(
    [.026, .025, .025, .035, .035, .079, .079, .072, .072,
     .062, .062, .107, .107, .087, .087, .089, .089], dtype=np.float32)

# ---------------------------------------------------------------- OpenPose-18
OPENPOSE_KEYPOINTS = (
    "nose", "neck", "r_sho", "r_elb", "r_wri", "l_sho", "l_elb", "l_wri",
    "r_hip", "r_knee", "r_ank", "l_hip", "l_knee", "l_ank", "r_eye", "l_eye", "r_ear", "l_ear",
)
NUM_OPENPOSE_KEYPOINTS = 18   # heatmap channel 18 is the background
NUM_HEATMAPS = 19
NECK = 1

# OPENPOSE_FROM_COCO[i] = COCO index of OpenPose keypoint i (-1 for the neck).
OPENPOSE_FROM_COCO = np.array([0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3])
# COCO_FROM_OPENPOSE[j] = OpenPose index of COCO keypoint j.
COCO_FROM_OPENPOSE = np.array([int(np.where(OPENPOSE_FROM_COCO == j)[0][0]) for j in range(NUM_KEYPOINTS)])

OPENPOSE_FLIP_INDEX = np.arange(NUM_OPENPOSE_KEYPOINTS)
for _r, _l in zip((2, 3, 4, 8, 9, 10, 14, 16), (5, 6, 7, 11, 12, 13, 15, 17)):
    OPENPOSE_FLIP_INDEX[_r], OPENPOSE_FLIP_INDEX[_l] = _l, _r

# Limbs in PAF channel order: limb k owns PAF channels 2k (x) and 2k+1 (y).
OPENPOSE_LIMBS = (
    (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13), (1, 2), (2, 3), (3, 4), (2, 16),
    (1, 5), (5, 6), (6, 7), (5, 17), (1, 0), (0, 14), (0, 15), (14, 16), (15, 17),
)
NUM_PAFS = 2 * len(OPENPOSE_LIMBS)

# Order in which grouping visits the limbs (Lightweight OpenPose keypoints.py):
# the torso first so that people are seeded from the neck; the last two
# (ear-shoulder) only fill missing slots.
OPENPOSE_GROUPING_ORDER = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)
# PAF limb index (into OPENPOSE_LIMBS) of each grouping-order limb.
GROUPING_LIMB_INDEX = tuple(OPENPOSE_LIMBS.index(limb) for limb in OPENPOSE_GROUPING_ORDER)


def coco_to_openpose(keypoints_coco):
    """(..., 17, 3) COCO keypoints (x, y, v) -> (..., 18, 3) OpenPose order with a neck.

    v follows COCO (0 unlabelled, 1 occluded, 2 visible). The neck is the mean of
    the shoulders when both are labelled, with the lower of their visibilities.
    """
    kp = np.asarray(keypoints_coco, dtype=np.float32)
    out = np.zeros(kp.shape[:-2] + (NUM_OPENPOSE_KEYPOINTS, 3), dtype=np.float32)
    idx = OPENPOSE_FROM_COCO.copy()
    idx[NECK] = 0
    out[...] = kp[..., idx, :]
    lsho, rsho = kp[..., 5, :], kp[..., 6, :]
    both = (lsho[..., 2] > 0) & (rsho[..., 2] > 0)
    out[..., NECK, :2] = (lsho[..., :2] + rsho[..., :2]) / 2
    out[..., NECK, 2] = np.where(both, np.minimum(lsho[..., 2], rsho[..., 2]), 0)
    return out


def openpose_to_coco(keypoints_openpose):
    """(..., 18, C) OpenPose order -> (..., 17, C) COCO order (the neck is dropped)."""
    return np.asarray(keypoints_openpose)[..., COCO_FROM_OPENPOSE, :]
