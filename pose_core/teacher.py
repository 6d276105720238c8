"""MoveNet teacher pipelines: MultiPose on the whole frame, Thunder per person.

The ONNX files are converted once by `tools/convert_movenet_teacher.py` into
`cache/teacher/`. Both networks take RGB int32 NHWC 0..255 and answer normalised
(y, x, score) per keypoint; MoveNet's keypoint order is COCO-17 already.
"""
import math
import time

import cv2
import numpy as np

from .backends import OnnxRunner
from .errors import InputError, ModelUnavailable
from .result import People
from .skeleton import NUM_KEYPOINTS

MULTIPOSE_STRIDE = 32   # MultiPose accepts any input whose sides are multiples of this
THUNDER_SIZE = 256      # Thunder's fixed square crop
# Thunder crop side / the longer side of MultiPose's box. On the first 100 coco_val_dev
# images: AP 0.442 at 1.0, 0.443 at 1.05, 0.439 at 1.1, 0.405 at 1.25, 0.373 at 1.5.
THUNDER_PADDING = 1.05


def _run_int32(session, image):
    """The ONNX session on an RGB int32 NHWC image (OnnxRunner feeds float32 only)."""
    return session.run(None, {session.get_inputs()[0].name: image})[0]


def letterbox(frame_bgr, size):
    """-> (RGB int32 (1, H, W, 3), scale): the longer side resized to `size`, then zero
    padded at the bottom and right to multiples of 32. Image pixel = input pixel / scale."""
    h, w = frame_bgr.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(frame_bgr, (new_w, new_h), interpolation=interpolation)
    pad_h = math.ceil(new_h / MULTIPOSE_STRIDE) * MULTIPOSE_STRIDE
    pad_w = math.ceil(new_w / MULTIPOSE_STRIDE) * MULTIPOSE_STRIDE
    canvas = np.zeros((1, pad_h, pad_w, 3), np.int32)
    canvas[0, :new_h, :new_w] = resized[:, :, ::-1]
    return canvas, scale


def decode_multipose(output, input_hw, scale, min_score=0.1):
    """MultiPose's (1, 6, 56) output -> People in image pixels, person score > min_score.

    Per slot: 17 x (y, x, score), box (ymin, xmin, ymax, xmax), person score, all
    normalised to the (padded) network input of size `input_hw`.
    """
    out = np.asarray(output, np.float32).reshape(-1, 56)
    out = out[out[:, 55] > min_score]
    in_h, in_w = input_hw
    yxs = out[:, :51].reshape(-1, NUM_KEYPOINTS, 3)
    keypoints = np.stack([yxs[..., 1] * in_w / scale, yxs[..., 0] * in_h / scale, yxs[..., 2]], axis=-1)
    boxes = out[:, [52, 51, 54, 53]] * np.array([in_w, in_h, in_w, in_h], np.float32) / scale
    order = np.argsort(-out[:, 55], kind="stable")
    return People(keypoints[order], out[order, 55], boxes[order])


def square_crop(box, padding=THUNDER_PADDING):
    """(x0, y0, side) of the square centred on a x1y1x2y2 box, `padding` x its longer side.

    The square stays centred even where it leaves the frame (zero padding): Thunder
    expects a centred person, and shifting the crop inside the frame cost 4 AP points.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(padding * max(x2 - x1, y2 - y1), 16.0)
    return (x1 + x2 - side) / 2, (y1 + y2 - side) / 2, side


class MoveNetMultiPose:
    """Whole-frame MultiPose: frame BGR -> People (up to 6)."""

    def __init__(self, onnx_path, size=256, min_score=0.1, threads=None):
        if size % MULTIPOSE_STRIDE:
            raise InputError(f"MultiPose input size must be a multiple of {MULTIPOSE_STRIDE}, got {size}")
        self.session = OnnxRunner(onnx_path, threads).session
        self.size = size
        self.min_score = min_score

    def __call__(self, frame, size=None):
        """`size` overrides the longer input side for this frame (a multiple of 32)."""
        start = time.perf_counter()
        image, scale = letterbox(frame, size or self.size)
        preprocessed = time.perf_counter()
        output = _run_int32(self.session, image)
        ran = time.perf_counter()
        people = decode_multipose(output, image.shape[1:3], scale, self.min_score)
        people.timings.update(preprocess=preprocessed - start, network=ran - preprocessed,
                              grouping=time.perf_counter() - ran)
        return people


class MoveNetThunder:
    """Single-person Thunder on a square crop: (frame, box) -> (17, 3) keypoints in image pixels."""

    def __init__(self, onnx_path, padding=THUNDER_PADDING, threads=None):
        self.session = OnnxRunner(onnx_path, threads).session
        self.padding = padding

    def __call__(self, frame_bgr, box):
        x0, y0, side = square_crop(box, self.padding)
        s = THUNDER_SIZE / side
        warp = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float32)
        crop = cv2.warpAffine(frame_bgr, warp, (THUNDER_SIZE, THUNDER_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out = _run_int32(self.session, crop[None, :, :, ::-1].astype(np.int32)).reshape(NUM_KEYPOINTS, 3)
        return np.stack([x0 + out[:, 1] * side, y0 + out[:, 0] * side, out[:, 2]], axis=-1)


class MoveNetTeacher:
    """MultiPose finds the people, Thunder re-estimates each on a padded square crop.

    A person's score is MultiPose's person score x Thunder's mean keypoint score.
    """

    def __init__(self, multipose, thunder):
        self.multipose = multipose
        self.thunder = thunder

    def __call__(self, frame, size=None):
        people = self.multipose(frame, size)
        start = time.perf_counter()
        keypoints = np.array([self.thunder(frame, box) for box in people.boxes], np.float32)
        keypoints = keypoints.reshape(-1, NUM_KEYPOINTS, 3)
        refined = People(keypoints, people.scores * keypoints[:, :, 2].mean(1), people.boxes)
        # MultiPose is this pipeline's person detector; Thunder is its pose network.
        refined.timings = {"detect": sum(people.timings.values()), "network": time.perf_counter() - start}
        return refined


def build_pipeline(spec, backend="onnx", height=None, weights=None, threads=None):
    """The registry's builder for the MoveNet specs (ONNX only): MultiPose or the teacher."""
    from .registry import MODELS

    if backend != "onnx":
        raise ModelUnavailable(f"model '{spec.name}' runs on the onnx backend only")
    path = weights or spec.onnx_path
    size = height or spec.input_height
    if spec.kind == "bottom-up":
        return MoveNetMultiPose(path, size, threads=threads)
    multipose = MoveNetMultiPose(MODELS["movenet-multipose"].onnx_path, size, threads=threads)
    return MoveNetTeacher(multipose, MoveNetThunder(path, threads=threads))
