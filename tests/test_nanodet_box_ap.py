"""tools/nanodet_box_ap.py: NanoDet's GFL outputs decoded into person boxes."""
import sys

import numpy as np

from pose_core.registry import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from tools.nanodet_box_ap import BINS, SIZE, STRIDES, decode  # noqa: E402


def empty_outputs():
    cells = [(SIZE // s) ** 2 for s in STRIDES]
    return [np.zeros((n, 80), np.float32) for n in cells], [np.zeros((n, 4 * BINS), np.float32) for n in cells]


def peaked(bins):
    """Box logits whose softmax puts (almost) all weight on the given bin of each side."""
    logits = np.full((4, BINS), -50.0, np.float32)
    logits[np.arange(4), bins] = 50.0
    return logits.reshape(-1)


def test_one_person_cell_gives_its_box_from_the_cell_centre_and_distances():
    scores, boxes = empty_outputs()
    columns = SIZE // 16
    cell = 3 * columns + 5                     # stride 16, row 3, column 5: centre (88, 56)
    scores[1][cell, 0] = 0.9
    scores[1][cell + 1, 2] = 0.95              # a car: not a person
    boxes[1][cell] = peaked([1, 2, 3, 4])      # left, top, right, bottom in strides
    got_boxes, got_scores = decode(scores, boxes)
    np.testing.assert_allclose(got_boxes, [[88 - 16, 56 - 32, 88 + 48, 56 + 64]], atol=1e-3)
    np.testing.assert_allclose(got_scores, [0.9])


def test_overlapping_boxes_of_one_person_are_suppressed_and_others_kept():
    scores, boxes = empty_outputs()
    columns = SIZE // 8
    for cell, score in ((10 * columns + 10, 0.8), (10 * columns + 11, 0.6), (40 * columns + 40, 0.7)):
        scores[0][cell, 0] = score
        boxes[0][cell] = peaked([5, 5, 5, 5])
    got_boxes, got_scores = decode(scores, boxes)
    np.testing.assert_allclose(got_scores, [0.8, 0.7])
    np.testing.assert_allclose(got_boxes[1], [324 - 40, 324 - 40, 324 + 40, 324 + 40], atol=1e-3)
