"""The one result type every pipeline returns."""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .skeleton import NUM_KEYPOINTS

# People below this person score are left out of what users see and export (evaluation keeps
# everyone): bottom-up grouping leaves limb fragments of 3-4 keypoints scored 0.02-0.1, while
# the people every model finds on the bundled clip score 0.1 and more. A pipeline whose
# scores run on another scale says so with a `min_person_score` attribute.
MIN_PERSON_SCORE = 0.1


def min_person_score_of(pipeline):
    """The person-score threshold meant for `pipeline`'s scores (its `min_person_score`, else
    MIN_PERSON_SCORE)."""
    return getattr(pipeline, "min_person_score", MIN_PERSON_SCORE)


@dataclass
class People:
    """People found in one frame, in original image pixels.

    keypoints: (N, 17, 3) float32, COCO-17 order, (x, y, score) per keypoint.
    scores:    (N,) float32 person scores.
    boxes:     (N, 4) float32 (x1, y1, x2, y2).
    track_ids: (N,) int64, or None when nothing tracks the people.
    """
    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    track_ids: Optional[np.ndarray] = None
    timings: dict = field(default_factory=dict, compare=False)  # stage name -> seconds

    def __post_init__(self):
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32).reshape(-1, NUM_KEYPOINTS, 3)
        n = len(self.keypoints)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(n, 4)
        if self.track_ids is not None:
            self.track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(n)

    @classmethod
    def empty(cls):
        return cls(np.zeros((0, NUM_KEYPOINTS, 3)), np.zeros(0), np.zeros((0, 4)))

    @classmethod
    def from_keypoints(cls, keypoints, scores, min_score=0.0, track_ids=None):
        """Build people whose boxes enclose their keypoints with score > min_score."""
        keypoints = np.asarray(keypoints, dtype=np.float32).reshape(-1, NUM_KEYPOINTS, 3)
        return cls(keypoints, scores, boxes_from_keypoints(keypoints, min_score), track_ids)

    def __len__(self):
        return len(self.keypoints)

    def confident(self, min_score=MIN_PERSON_SCORE):
        """The people whose person score is at least `min_score`."""
        return self.select(self.scores >= min_score)

    def select(self, index):
        """The people at `index` (a boolean mask or integer indices)."""
        return People(self.keypoints[index], self.scores[index], self.boxes[index],
                      None if self.track_ids is None else self.track_ids[index], dict(self.timings))


def boxes_from_keypoints(keypoints, min_score=0.0):
    """(N, 17, 3) -> (N, 4) tight x1y1x2y2 boxes over keypoints with score > min_score
    (zeros for a person with none)."""
    keypoints = np.asarray(keypoints, dtype=np.float32).reshape(-1, NUM_KEYPOINTS, 3)
    present = keypoints[..., 2:] > min_score
    corners = np.concatenate([np.where(present, keypoints[..., :2], np.inf).min(1),
                              np.where(present, keypoints[..., :2], -np.inf).max(1)], axis=1)
    return np.where(present.any(1), corners, 0).astype(np.float32)
