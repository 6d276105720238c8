"""Top-down pipeline: person boxes -> crops -> heatmaps -> keypoints (spec ARCHITECTURES.md 0.2, 0.6).

A detector is any callable `detector(frame_bgr) -> (boxes (N, 4) x1y1x2y2, scores (N,))`.
Per frame: every box becomes a centre and a size (aspect W:H of the network input, 1.25
padding), an affine crop; all crops and their mirror images run as one batch; the mirrored
heatmaps are flipped back, shifted one pixel and averaged in; the argmax with a quarter-pixel
offset goes back to image pixels through the inverse affine; people are rescored and
OKS-NMS removes duplicates. Sizes here are in pixels: mmpose's `scale * 200`.
"""
from time import perf_counter

import cv2
import numpy as np

from .errors import WeightsError
from .frames import as_bgr
from .result import People
from .skeleton import COCO_FLIP_INDEX, NUM_KEYPOINTS
from .tracking import keypoint_oks

BOX_PADDING = 1.25
VIS_THRESHOLD = 0.2      # keypoints above it count in the rescoring
OKS_THRESHOLD = 0.9
DETECTOR_BOX_MARGIN = 0.1


def box_to_center_size(boxes, aspect_ratio, padding=BOX_PADDING):
    """(N, 4) x1y1x2y2 -> (centres (N, 2), sizes (N, 2) as width, height), float64.

    The shorter side of each box grows until width / height = aspect_ratio, then both grow
    by `padding`; at least one pixel so that a degenerate box still has a crop.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
    sizes = np.stack([np.maximum(w, h * aspect_ratio), np.maximum(h, w / aspect_ratio)], axis=1)
    return centers, sizes * padding


def crop_affine(center, width, output_size, rotation=0.0):
    """2x3 affine from image pixels to an output of `output_size` (W, H) pixels.

    `center` goes to the output centre and a source width `width` to W; the source is
    rotated by `rotation` degrees, counter-clockwise on screen (mmpose get_affine_transform,
    in closed form: a rotation and a uniform scale).
    """
    out_w, out_h = output_size
    scale = out_w / width
    cos, sin = scale * np.cos(np.deg2rad(rotation)), scale * np.sin(np.deg2rad(rotation))
    linear = np.array([[cos, sin], [-sin, cos]])
    shift = np.array([out_w / 2, out_h / 2]) - linear @ np.asarray(center, np.float64)
    return np.hstack([linear, shift[:, None]])


def apply_affine(points, affine):
    """(..., 2) points through a 2x3 affine."""
    points = np.asarray(points, np.float64)
    return points @ affine[:, :2].T + affine[:, 2]


def flip_back(heatmaps, shift=True):
    """Heatmaps of mirrored crops (N, 17, H, W) -> heatmaps in the original crops' frame:
    mirror along W and swap left/right channels; `shift` moves them one pixel right
    (mmpose shift_heatmap: the mirrored features are one pixel off)."""
    flipped = heatmaps[:, COCO_FLIP_INDEX, :, ::-1]
    if shift:
        flipped = np.concatenate([flipped[..., :1], flipped[..., :-1]], axis=-1)
    return np.ascontiguousarray(flipped)


def decode_heatmaps(heatmaps):
    """(N, K, H, W) -> (N, K, 3) float32 (x, y, score) in heatmap pixels.

    The argmax, moved a quarter pixel towards the higher neighbour on each axis when it is
    not on the two outer rows or columns; the score is the maximum value.
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    index = flat.argmax(axis=2)
    maxval = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    px, py = index % w, index // w
    ni, ki = np.indices((n, k))
    right, left = np.minimum(px + 1, w - 1), np.maximum(px - 1, 0)
    down, up = np.minimum(py + 1, h - 1), np.maximum(py - 1, 0)
    step = np.stack([heatmaps[ni, ki, py, right] - heatmaps[ni, ki, py, left],
                     heatmaps[ni, ki, down, px] - heatmaps[ni, ki, up, px]], axis=-1)
    inner = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    coords = np.stack([px, py], axis=-1) + 0.25 * np.sign(step) * inner[..., None]
    return np.concatenate([coords, maxval[..., None]], axis=-1).astype(np.float32)


def rescore(box_scores, keypoint_scores, vis_threshold=VIS_THRESHOLD):
    """Box score x the mean of the keypoint scores above `vis_threshold` (0 when none is)."""
    visible = keypoint_scores > vis_threshold
    count = visible.sum(axis=1)
    mean = np.where(count > 0, (keypoint_scores * visible).sum(axis=1) / np.maximum(count, 1), 0.0)
    return (np.asarray(box_scores, np.float32) * mean).astype(np.float32)


def oks_nms(keypoints, scores, areas, threshold=OKS_THRESHOLD):
    """Greedy NMS: indices of the kept people, best first. A person is dropped when its OKS
    with a better kept one exceeds `threshold`; OKS over all 17 keypoints, with the mean
    of the two `areas` (padded box areas, pixels^2) as the object scale."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    areas = np.asarray(areas, np.float64)
    oks = keypoint_oks(np.asarray(keypoints, np.float64), np.asarray(keypoints, np.float64),
                       (areas[:, None] + areas[None, :]) / 2, keypoint_threshold=-np.inf)
    keep = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(best)
        order = order[oks[best, order] <= threshold]
    return np.array(keep, dtype=np.int64)


class TopDownPipeline:
    """frame BGR -> People: `detector` boxes, then `runner` on every crop.

    runner(batch (B, 3, H, W) float32 RGB 0..255) returns (heatmaps (B, 17, h, w),);
    input_size is the crop (H, W).
    """

    kind = "top-down"

    def __init__(self, detector, runner, input_size=(256, 192), flip_test=True, box_padding=BOX_PADDING,
                 vis_threshold=VIS_THRESHOLD, oks_threshold=OKS_THRESHOLD):
        self.detector = detector
        self.runner = runner
        self.input_size = tuple(input_size)
        self.flip_test = flip_test
        self.box_padding = box_padding
        self.vis_threshold = vis_threshold
        self.oks_threshold = oks_threshold
        self.backend = getattr(runner, "name", type(runner).__name__)

    def __call__(self, frame):
        start = perf_counter()
        frame = as_bgr(frame)
        boxes, box_scores = self.detector(frame)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        box_scores = np.asarray(box_scores, np.float32).reshape(len(boxes))
        detect_end = perf_counter()
        timings = {"detect": detect_end - start, "preprocess": 0.0, "network": 0.0, "grouping": 0.0}
        if not len(boxes):
            people = People.empty()
            people.timings = timings
            return people
        in_h, in_w = self.input_size
        centers, sizes = box_to_center_size(boxes, in_w / in_h, self.box_padding)
        batch = self.crop_batch(frame, centers, sizes)
        if self.flip_test:
            batch = np.concatenate([batch, batch[..., ::-1]])
        network_start = perf_counter()
        heatmaps = self._run(batch)
        decode_start = perf_counter()
        if self.flip_test:
            heatmaps = (heatmaps[:len(boxes)] + flip_back(heatmaps[len(boxes):])) / 2
        keypoints = decode_heatmaps(heatmaps)
        heatmap_size = (heatmaps.shape[3], heatmaps.shape[2])
        for i in range(len(boxes)):
            to_image = cv2.invertAffineTransform(crop_affine(centers[i], sizes[i, 0], heatmap_size))
            keypoints[i, :, :2] = apply_affine(keypoints[i, :, :2], to_image)
        scores = rescore(box_scores, keypoints[:, :, 2], self.vis_threshold)
        keep = oks_nms(keypoints, scores, sizes.prod(axis=1), self.oks_threshold)
        people = People(keypoints[keep], scores[keep], boxes[keep])
        timings.update(preprocess=network_start - detect_end, network=decode_start - network_start,
                       grouping=perf_counter() - decode_start)  # "decode" is the video decoder's stage
        people.timings = timings
        return people

    def crop_batch(self, frame, centers, sizes):
        """(N, 3, H, W) float32 RGB crops, zero outside the frame (as mmpose and HRNet)."""
        in_h, in_w = self.input_size
        batch = np.empty((len(centers), 3, in_h, in_w), np.float32)
        for i, (center, size) in enumerate(zip(centers, sizes)):
            crop = cv2.warpAffine(frame, crop_affine(center, size[0], (in_w, in_h)), (in_w, in_h),
                                  flags=cv2.INTER_LINEAR)
            batch[i] = crop[:, :, ::-1].transpose(2, 0, 1)
        return batch

    def _run(self, batch):
        heatmaps = np.asarray(self.runner(batch)[0], np.float32)
        if heatmaps.ndim != 4 or heatmaps.shape[:2] != (len(batch), NUM_KEYPOINTS):
            raise WeightsError(f"network output {tuple(heatmaps.shape)} is not top-down heatmaps "
                               f"({len(batch)}, {NUM_KEYPOINTS}, h, w)")
        return heatmaps


class BottomUpBoxes:
    """A detector from a bottom-up pipeline: its people's keypoint boxes grown by `margin`
    of their width and height on every side (keypoints stop short of the head top and the
    feet), and its person scores."""

    def __init__(self, bottomup_pipeline, margin=DETECTOR_BOX_MARGIN):
        self.pipeline = bottomup_pipeline
        self.margin = margin

    def __call__(self, frame_bgr):
        people = self.pipeline(frame_bgr)
        grow = (people.boxes[:, 2:] - people.boxes[:, :2]) * self.margin
        return np.concatenate([people.boxes[:, :2] - grow, people.boxes[:, 2:] + grow], axis=1), people.scores
