"""Skeleton overlay: limbs in a colour per limb, joints, boxes and ids in a colour per person.

Drawing is batched: one cv2.polylines call per limb type for every person at once, and one
per person for its joints (a zero-length polyline with a round cap is a disc), with
sub-pixel, anti-aliased coordinates.
"""
import cv2
import numpy as np

from .skeleton import COCO_SKELETON

_SHIFT = 4                 # fractional bits of the coordinates given to OpenCV
_SCALE = 1 << _SHIFT


def _hue_colours(hues):
    hsv = np.stack([hues, np.full_like(hues, 230), np.full_like(hues, 255)], -1).astype(np.uint8)
    return [tuple(int(c) for c in bgr) for bgr in cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0]]


LIMB_COLOURS = _hue_colours(np.arange(len(COCO_SKELETON)) * 180 // len(COCO_SKELETON))
# Golden-ratio hue steps: consecutive ids get clearly different colours.
PERSON_COLOURS = _hue_colours((np.arange(64) * 0.618034 % 1.0) * 180)


def person_colour(person_id):
    return PERSON_COLOURS[int(person_id) % len(PERSON_COLOURS)]


def line_thickness(frame):
    """Line width in pixels for this frame size: 2 px at 480p, 4 px at 1080p."""
    return max(1, int(min(frame.shape[:2]) / 240 + 0.5))


def draw_people(frame, people, min_score=0.2, keypoints=True, limbs=True, boxes=False, ids=True):
    """Draw `people` (pose_core.result.People) on the BGR `frame` in place and return it.

    Only keypoints with score > min_score are drawn, and a limb only when both its ends are.
    Persons are coloured by track id when `people.track_ids` is set, else by index; id labels
    are drawn only for tracked people (an index means nothing from one frame to the next).
    """
    if len(people) == 0:
        return frame
    thickness = line_thickness(frame)
    points = np.round(people.keypoints[..., :2] * _SCALE).astype(np.int32)
    visible = people.keypoints[..., 2] > min_score
    person_ids = people.track_ids if people.track_ids is not None else np.arange(len(people))

    if limbs:
        for (a, b), colour in zip(COCO_SKELETON, LIMB_COLOURS):
            both = visible[:, a] & visible[:, b]
            if both.any():
                segments = np.stack([points[both, a], points[both, b]], 1)
                cv2.polylines(frame, list(segments), False, colour, thickness, cv2.LINE_AA, _SHIFT)
    if keypoints:
        for person, pid in enumerate(person_ids):
            dots = points[person, visible[person]]
            if len(dots):
                cv2.polylines(frame, list(np.stack([dots, dots], 1)), False, person_colour(pid),
                              2 * thickness + 1, cv2.LINE_AA, _SHIFT)
    if boxes or (ids and people.track_ids is not None):
        for person, pid in enumerate(person_ids):
            colour = person_colour(pid)
            x1, y1, x2, y2 = (int(round(v)) for v in people.boxes[person])
            if boxes:
                cv2.rectangle(frame, (x1, y1), (x2, y2), colour, max(1, thickness // 2), cv2.LINE_AA)
            if ids and people.track_ids is not None:
                _label(frame, f"#{int(pid)}", (x1, y1), colour, thickness)
    return frame


def _label(frame, text, corner, colour, thickness):
    """`text` on a filled box just above `corner` (inside the frame)."""
    scale = 0.3 * thickness
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thickness // 2))
    x = min(max(corner[0], 0), max(frame.shape[1] - w, 0))
    y = max(corner[1], h + base)
    cv2.rectangle(frame, (x, y - h - base), (x + w, y), colour, -1)
    cv2.putText(frame, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                max(1, thickness // 2), cv2.LINE_AA)


def draw_fps(frame, text):
    """`text` (e.g. '14.2 fps') white on black in the top-left corner; in place, returns frame."""
    thickness = line_thickness(frame)
    scale = 0.5 * thickness
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = 2 * thickness
    cv2.rectangle(frame, (0, 0), (w + 2 * pad, h + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(frame, text, (pad, pad + h), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)
    return frame
