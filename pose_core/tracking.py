"""Stable person ids across frames.

Each track remembers its person's last box and keypoints and a box-centre velocity.
A new frame's people are matched to the tracks' constant-velocity predictions by a
similarity that mixes OKS (keypoints) and box IoU, with an optimal assignment; tracks
survive a few missed frames so a briefly hidden person gets their id back.
"""
import numpy as np
from scipy.optimize import linear_sum_assignment

from .result import People
from .skeleton import NUM_KEYPOINTS, OKS_SIGMAS


class PoseTracker:
    """Give each person a track id that stays with them from frame to frame.

    max_missed:         frames a track survives without a match before it is dropped.
    min_similarity:     a match needs at least this similarity (0..1).
    oks_weight:         share of OKS in the similarity; the rest is box IoU.
    keypoint_threshold: keypoints with a lower score are left out of OKS.
    velocity_smoothing: weight of the newest velocity measurement (1 = no smoothing).

    Time is `time_s` when given, else the frame count: pass it on every call or on none.
    Ids start at 1 and are never reused.
    """

    def __init__(self, max_missed=10, min_similarity=0.3, oks_weight=0.5, keypoint_threshold=0.2,
                 velocity_smoothing=0.5):
        self.max_missed = max_missed
        self.min_similarity = min_similarity
        self.oks_weight = oks_weight
        self.keypoint_threshold = keypoint_threshold
        self.velocity_smoothing = velocity_smoothing
        self._next_id = 1
        self.reset()

    def reset(self):
        """Forget every track (ids still continue upwards)."""
        self._frame = 0
        self._ids = np.zeros(0, dtype=np.int64)
        self._boxes = np.zeros((0, 4), dtype=np.float64)
        self._keypoints = np.zeros((0, NUM_KEYPOINTS, 3), dtype=np.float64)
        self._velocity = np.zeros((0, 2), dtype=np.float64)     # box centre, pixels per time unit
        self._has_velocity = np.zeros(0, dtype=bool)             # seen at least twice
        self._last_time = np.zeros(0, dtype=np.float64)
        self._missed = np.zeros(0, dtype=np.int64)

    def update(self, people: People, time_s=None) -> People:
        """The same people, with `track_ids` set."""
        now = float(self._frame if time_s is None else time_s)
        self._frame += 1
        pred_boxes, pred_keypoints = self._predict(now)
        similarity = pose_similarity(people.boxes, people.keypoints, pred_boxes, pred_keypoints,
                                     self.keypoint_threshold, self.oks_weight)
        det, trk = linear_sum_assignment(similarity, maximize=True)
        good = similarity[det, trk] >= self.min_similarity
        det, trk = det[good], trk[good]

        ids = np.empty(len(people), dtype=np.int64)
        ids[det] = self._ids[trk]
        self._update_matched(trk, people.boxes[det], people.keypoints[det], now)
        missed = np.ones(len(self._ids), dtype=bool)
        missed[trk] = False
        self._missed[missed] += 1

        new = np.setdiff1d(np.arange(len(people)), det)
        ids[new] = np.arange(self._next_id, self._next_id + len(new))
        self._next_id += len(new)
        self._add_tracks(ids[new], people.boxes[new], people.keypoints[new], now)
        self._drop(self._missed > self.max_missed)
        return People(people.keypoints, people.scores, people.boxes, ids, people.timings)

    def _predict(self, now):
        """Boxes and keypoints moved by each track's velocity since it was last seen."""
        shift = self._velocity * (now - self._last_time)[:, None]
        boxes = self._boxes + np.tile(shift, 2)
        keypoints = self._keypoints.copy()
        keypoints[..., :2] += shift[:, None, :]
        return boxes, keypoints

    def _update_matched(self, trk, boxes, keypoints, now):
        dt = now - self._last_time[trk]
        moved = box_centres(boxes) - box_centres(self._boxes[trk])
        measured = moved / np.maximum(dt, 1e-9)[:, None]
        a = np.where(self._has_velocity[trk], self.velocity_smoothing, 1.0)[:, None]
        self._velocity[trk] = np.where(dt[:, None] > 0, a * measured + (1 - a) * self._velocity[trk],
                                       self._velocity[trk])
        self._has_velocity[trk] |= dt > 0
        self._boxes[trk] = boxes
        self._keypoints[trk] = keypoints
        self._last_time[trk] = now
        self._missed[trk] = 0

    def _add_tracks(self, ids, boxes, keypoints, now):
        n = len(ids)
        self._ids = np.concatenate([self._ids, ids])
        self._boxes = np.concatenate([self._boxes, boxes])
        self._keypoints = np.concatenate([self._keypoints, keypoints])
        self._velocity = np.concatenate([self._velocity, np.zeros((n, 2))])
        self._has_velocity = np.concatenate([self._has_velocity, np.zeros(n, dtype=bool)])
        self._last_time = np.concatenate([self._last_time, np.full(n, now)])
        self._missed = np.concatenate([self._missed, np.zeros(n, dtype=np.int64)])

    def _drop(self, gone):
        keep = ~gone
        for name in ("_ids", "_boxes", "_keypoints", "_velocity", "_has_velocity", "_last_time", "_missed"):
            setattr(self, name, getattr(self, name)[keep])


def box_centres(boxes):
    """(N, 4) x1y1x2y2 -> (N, 2) centres."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def box_areas(boxes):
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_iou(a, b):
    """(N, 4) x (M, 4) x1y1x2y2 boxes -> (N, M) intersection over union."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    union = box_areas(a)[:, None] + box_areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def keypoint_oks(a, b, areas, keypoint_threshold):
    """(N, 17, 3) x (M, 17, 3) keypoints -> (N, M) OKS over keypoints confident in both.

    areas: (N, M) object scale (pixels^2); pairs with no keypoint confident in both get 0.
    """
    d2 = np.sum((a[:, None, :, :2] - b[None, :, :, :2]) ** 2, axis=3)
    variances = (2 * OKS_SIGMAS.astype(np.float64)) ** 2
    e = d2 / (2 * variances * np.maximum(areas, 1.0)[..., None])
    both = (a[:, None, :, 2] > keypoint_threshold) & (b[None, :, :, 2] > keypoint_threshold)
    count = both.sum(axis=2)
    return np.where(count > 0, np.sum(np.exp(-e) * both, axis=2) / np.maximum(count, 1), 0.0)


def pose_similarity(boxes_a, keypoints_a, boxes_b, keypoints_b, keypoint_threshold=0.2, oks_weight=0.5):
    """(N, M) mix of OKS and box IoU; the OKS scale is the mean of the two box areas."""
    boxes_a, boxes_b = np.asarray(boxes_a, np.float64), np.asarray(boxes_b, np.float64)
    areas = (box_areas(boxes_a)[:, None] + box_areas(boxes_b)[None, :]) / 2
    oks = keypoint_oks(np.asarray(keypoints_a, np.float64), np.asarray(keypoints_b, np.float64),
                       areas, keypoint_threshold)
    return oks_weight * oks + (1 - oks_weight) * box_iou(boxes_a, boxes_b)
