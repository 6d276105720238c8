"""Bottom-up pipeline: one frame -> People, through heatmaps and part affinity fields."""
from time import perf_counter

import cv2
import numpy as np

from .errors import PoseError, WeightsError
from .frames import as_bgr
from .paf_grouping import PEAK_THRESHOLD, decode_people
from .result import People
from .skeleton import NUM_HEATMAPS, NUM_PAFS, OPENPOSE_FLIP_INDEX, OPENPOSE_LIMBS, openpose_to_coco

# The ImageNet mean, the "mean value" padding of the training recipe; defined here (not in
# pose_core.train) because inference must not import torch.
PAD_RGB = (124.0, 116.0, 104.0)

# Flip test: heatmap channel c of the mirrored image is channel HEATMAP_FLIP[c] of the
# original (left/right swapped, background kept); limb k of the mirrored image is limb
# PAF_FLIP_LIMB[k] of the original, whose x component changes sign.
HEATMAP_FLIP = np.append(OPENPOSE_FLIP_INDEX, NUM_HEATMAPS - 1)
PAF_FLIP_LIMB = np.array([OPENPOSE_LIMBS.index((OPENPOSE_FLIP_INDEX[a], OPENPOSE_FLIP_INDEX[b]))
                          for a, b in OPENPOSE_LIMBS])


class BottomUpPipeline:
    """Resize (height = `height`, aspect kept) -> network -> peaks + PAF grouping.

    runner(batch (1, 3, H, W) float32 RGB 0..255) returns (heatmaps (1, 19, H/stride,
    W/stride), pafs (1, 38, H/stride, W/stride)). `upsample` is the factor the maps are
    upsampled by before peak finding: 1 (the default) finds peaks on the network's grid with
    sub-cell refinement, 4 upsamples first as the Lightweight OpenPose demo does; on
    coco_val_dev 1 measured both cheaper and more accurate (README). `flip_test`
    also runs the mirrored frame and averages its mirrored-back maps in (twice the
    network time). `height` may be changed between calls (the GUI does).
    """

    kind = "bottom-up"

    def __init__(self, runner, height=256, stride=8, upsample=1, peak_threshold=PEAK_THRESHOLD,
                 flip_test=False):
        self.runner = runner
        self.height = height
        self.stride = stride
        self.upsample = upsample
        self.peak_threshold = peak_threshold
        self.flip_test = flip_test
        self.backend = getattr(runner, "name", type(runner).__name__)

    def __call__(self, frame):
        start = perf_counter()
        frame = as_bgr(frame)
        batch, resized_size = self.preprocess(frame)
        network_start = perf_counter()
        heatmaps, pafs = self._run(batch)
        if self.flip_test:
            heatmaps, pafs = average_with_mirrored(heatmaps, pafs, *self._run(batch[..., ::-1].copy()))
        grouping_start = perf_counter()
        keypoints, scores = decode_people(heatmaps, pafs, self.stride, self.upsample, resized_size,
                                          self.peak_threshold)
        people = People.empty()
        if len(keypoints):
            keypoints = _to_frame_pixels(keypoints, resized_size, frame.shape[:2])
            people = People.from_keypoints(openpose_to_coco(keypoints), scores)
        people.timings = {"preprocess": network_start - start,
                          "network": grouping_start - network_start,
                          "grouping": perf_counter() - grouping_start}
        return people

    def preprocess(self, frame):
        """BGR uint8 frame -> ((1, 3, H, W) float32 RGB batch padded right and bottom to a
        multiple of the stride, (height, width) of the resized image inside it)."""
        if int(self.height) < self.stride:
            raise PoseError(f"network input height {self.height} is below the stride {self.stride}")
        h, w = frame.shape[:2]
        new_h = int(self.height)
        new_w = max(1, round(w * new_h / h))
        # INTER_LINEAR: ~15x faster than INTER_AREA when shrinking a 720p frame.
        resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        pad_h, pad_w = -(-new_h // self.stride) * self.stride, -(-new_w // self.stride) * self.stride
        batch = np.empty((1, 3, pad_h, pad_w), dtype=np.float32)
        batch[0] = np.array(PAD_RGB, dtype=np.float32)[:, None, None]
        batch[0, :, :new_h, :new_w] = resized[:, :, ::-1].transpose(2, 0, 1)
        return batch, (new_h, new_w)

    def _run(self, batch):
        outputs = self.runner(batch)
        expected = (batch.shape[2] // self.stride, batch.shape[3] // self.stride)
        shapes = [tuple(np.shape(o)) for o in outputs[:2]]
        if shapes != [(1, NUM_HEATMAPS) + expected, (1, NUM_PAFS) + expected]:
            raise WeightsError(f"network outputs {shapes} are not bottom-up maps "
                               f"(1, {NUM_HEATMAPS} and {NUM_PAFS}, {expected[0]}, {expected[1]})")
        return outputs[0][0], outputs[1][0]


def average_with_mirrored(heatmaps, pafs, mirrored_heatmaps, mirrored_pafs):
    """Average (C, h, w) maps with those of the mirrored input, mirrored back into the
    original's channels: left/right keypoints swap, limbs swap, PAF x components flip sign.
    The whole padded input was mirrored, so a mirrored column i is column w - 1 - i."""
    back_heatmaps = mirrored_heatmaps[HEATMAP_FLIP, :, ::-1]
    limb_pafs = mirrored_pafs.reshape(len(OPENPOSE_LIMBS), 2, *mirrored_pafs.shape[1:])
    back_pafs = limb_pafs[np.argsort(PAF_FLIP_LIMB), :, :, ::-1] * np.array([-1, 1], np.float32)[:, None, None]
    return ((heatmaps + back_heatmaps) / 2,
            (pafs + back_pafs.reshape(pafs.shape)) / 2)


def _to_frame_pixels(keypoints, resized_size, frame_size):
    """Network-input pixels -> frame pixels; an integer coordinate is a pixel centre in
    both, as cv2.resize aligns them. Missing keypoints stay (0, 0, 0)."""
    scale = np.array([resized_size[1] / frame_size[1], resized_size[0] / frame_size[0]], dtype=np.float32)
    present = keypoints[..., 2:] > 0
    keypoints[..., :2] = np.where(present, (keypoints[..., :2] + 0.5) / scale - 0.5, 0)
    return keypoints
