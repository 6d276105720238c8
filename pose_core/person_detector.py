"""Person detector for the top-down pipelines: frame -> person boxes, numpy only.

The network ("person-detector", models/person_detector.py, or "centernet-person",
models/centernet_person.py) sees the frame resized so that its longer side is `input_size`,
padded right and bottom with bottomup.PAD_RGB to a multiple of 32, and returns centre
logits, box sizes and sub-cell offsets at stride 8 or 4 (read from the maps' size).
Decoding (CenterNet): 3x3 max-pool peak NMS on the centre map, the top-K peaks above the
score threshold (sigmoid of the logit), box = (cell + offset) * stride +- size * stride / 2,
a greedy IoU NMS, then back to frame pixels, clipped to the frame.

`PersonDetector(runner)(frame_bgr) -> (boxes (N, 4) x1y1x2y2 float32, scores (N,))`, the
detector interface of topdown.TopDownPipeline; `timings["detect"]` holds the last call's
seconds.
"""
from time import perf_counter

import cv2
import numpy as np

from .bottomup import PAD_RGB
from .errors import PoseError, WeightsError
from .frames import as_bgr

STRIDE = 8
STRIDES = (4, 8)        # the detectors' output strides
INPUT_MULTIPLE = 32
INPUT_SIZE = 320
TOP_K = 20
SCORE_THRESHOLD = 0.3
NMS_IOU = 0.6


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def peak_mask(heatmap):
    """(H, W) -> bool (H, W): cells equal to the maximum of their 3x3 neighbourhood."""
    padded = np.pad(heatmap, 1, mode="constant", constant_values=-np.inf)
    h, w = heatmap.shape
    pooled = heatmap.copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(pooled, padded[dy:dy + h, dx:dx + w], out=pooled)
    return heatmap >= pooled


def box_iou(box, boxes):
    """IoU of one x1y1x2y2 box with (N, 4) boxes."""
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes, scores, iou_threshold=NMS_IOU):
    """Greedy IoU NMS: indices of the kept boxes, best first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(best)
        order = order[box_iou(boxes[best], boxes[order]) <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def decode_detections(center, size, offset, stride=STRIDE, top_k=TOP_K, score_threshold=SCORE_THRESHOLD,
                      nms_iou=NMS_IOU):
    """One image's maps -> (boxes (N, 4) float32 x1y1x2y2 in input pixels, scores (N,)), best first.

    center (H, W) logits (or (1, H, W)), size (2, H, W) w, h in cells, offset (2, H, W) x, y
    in cells. `nms_iou` None skips the IoU NMS.
    """
    center = np.asarray(center, np.float32).reshape(np.shape(center)[-2:])
    size, offset = np.asarray(size, np.float32), np.asarray(offset, np.float32)
    peaks = np.flatnonzero(peak_mask(center))
    logits = center.reshape(-1)[peaks]
    if len(peaks) > top_k:
        best = np.argpartition(-logits, top_k - 1)[:top_k]
        peaks, logits = peaks[best], logits[best]
    scores = sigmoid(logits)
    chosen = scores >= score_threshold
    peaks, scores = peaks[chosen], scores[chosen]
    order = np.argsort(-scores, kind="stable")
    peaks, scores = peaks[order], scores[order]
    w = center.shape[1]
    ys, xs = peaks // w, peaks % w
    cx = (xs + offset[0, ys, xs]) * stride
    cy = (ys + offset[1, ys, xs]) * stride
    half_w = np.maximum(size[0, ys, xs], 0) * stride / 2
    half_h = np.maximum(size[1, ys, xs], 0) * stride / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(np.float32)
    scores = scores.astype(np.float32)
    if nms_iou is not None and len(boxes) > 1:
        keep = nms(boxes, scores, nms_iou)
        boxes, scores = boxes[keep], scores[keep]
    return boxes.reshape(-1, 4), scores


def letterbox(frame, input_size=INPUT_SIZE, multiple=INPUT_MULTIPLE):
    """BGR frame -> ((1, 3, H, W) float32 RGB 0..255 batch, scale): longer side resized to
    `input_size`, padded right and bottom with PAD_RGB to multiples of `multiple`."""
    h, w = frame.shape[:2]
    scale = input_size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_h, pad_w = -(-new_h // multiple) * multiple, -(-new_w // multiple) * multiple
    batch = np.empty((1, 3, pad_h, pad_w), np.float32)
    batch[0] = np.array(PAD_RGB, np.float32)[:, None, None]
    batch[0, :, :new_h, :new_w] = resized[:, :, ::-1].transpose(2, 0, 1)
    return batch, (new_w / w, new_h / h)


class PersonDetector:
    """frame BGR -> (boxes (N, 4) x1y1x2y2 frame pixels, scores (N,)).

    runner(batch (1, 3, H, W) float32 RGB 0..255) returns (center (1, 1, H/s, W/s), size,
    offset (1, 2, H/s, W/s)) at a stride s in STRIDES. `input_size` is the longer side of the
    network input.
    """

    kind = "detector"

    def __init__(self, runner, input_size=INPUT_SIZE, top_k=TOP_K, score_threshold=SCORE_THRESHOLD,
                 nms_iou=NMS_IOU):
        if input_size < INPUT_MULTIPLE:
            raise PoseError(f"detector input size {input_size} is below {INPUT_MULTIPLE}")
        self.runner = runner
        self.input_size = int(input_size)
        self.top_k, self.score_threshold, self.nms_iou = top_k, score_threshold, nms_iou
        self.backend = getattr(runner, "name", type(runner).__name__)
        self.timings = {}

    def __call__(self, frame_bgr):
        start = perf_counter()
        frame = as_bgr(frame_bgr)
        batch, (scale_x, scale_y) = letterbox(frame, self.input_size)
        outputs = self.runner(batch)
        shapes = [tuple(np.shape(o)) for o in outputs[:3]]
        stride = batch.shape[2] // shapes[0][2] if len(shapes[0]) == 4 and shapes[0][2] else 0
        expected = (batch.shape[2] // max(stride, 1), batch.shape[3] // max(stride, 1))
        if stride not in STRIDES or shapes != [(1, 1) + expected, (1, 2) + expected, (1, 2) + expected]:
            raise WeightsError(f"network outputs {shapes} are not person-detector maps "
                               f"(1, 1 / 2 / 2, H / stride, W / stride) for a {batch.shape[2]}x{batch.shape[3]} "
                               f"input at a stride in {STRIDES}")
        boxes, scores = decode_detections(outputs[0][0], outputs[1][0], outputs[2][0], stride, self.top_k,
                                          self.score_threshold, self.nms_iou)
        h, w = frame.shape[:2]
        boxes = boxes / np.array([scale_x, scale_y, scale_x, scale_y], np.float32)
        boxes = np.clip(boxes, 0, np.array([w, h, w, h], np.float32)).astype(np.float32)
        self.timings = {"detect": perf_counter() - start}
        return boxes, scores
