"""Training data of the top-down network: one sample per person, cropped like inference.

Sources are the bottom-up network's (train/data.py: COCO-format keypoint files, real or
pseudo-labelled, drawn with SourceWeightedSampler). A sample is every non-crowd person
with at least MIN_KEYPOINTS labelled keypoints. Per sample (spec ARCHITECTURES.md 0.2,
0.3, with the ICPR22w settings of section 4.4), in the DataLoader worker:
- box -> centre and size at the network's aspect ratio with 1.25 padding:
  topdown.box_to_center_size, exactly as inference; with probability 0.3 the centre moves
  by 0.4 * (U[0,1)^2 - 0.5) * (box w, h) (mmpose 0.x `_xywh2cs`);
- half body with probability 0.3 when more than 8 keypoints are labelled: the labelled
  upper-body (COCO 0-10) or lower-body (11-16) keypoints, whichever is drawn and has more
  than 2; the crop is centred on their mean and sized on their box, padded 1.5 instead
  of 1.25 (mmpose half_body_transform);
- size x clip(1 + 0.5 N(0,1), 0.5, 1.5); rotation clip(40 N(0,1), -80, 80) degrees with
  probability 0.6, else 0;
- the crop: cv2.warpAffine(topdown.crop_affine(...)), bilinear, zero outside the image,
  as TopDownPipeline.crop_batch; the keypoints go through the same affine;
- flip with probability 0.5: the crop is mirrored (x -> W - 1 - x) and the left/right
  keypoints swap (skeleton.COCO_FLIP_INDEX), as the flip test's mirrored crops.
Mirroring the crop after the rotation equals mirroring the image before it with the
opposite angle, which is as likely. The random numbers of a sample come from
(seed, its position in the sample stream), so a resumed run continues with fresh
augmentations and the worker count does not change what is trained on.

An item is {"image": (3, H, W) uint8 RGB tensor, "keypoints": (17, 3) float32 (x, y, v)
in crop pixels}; train_topdown renders the targets (topdown_targets) batched.
"""
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import InputError
from ..skeleton import COCO_FLIP_INDEX, NUM_KEYPOINTS
from ..topdown import apply_affine, box_to_center_size, crop_affine
from .data import SeededSampleDataset, coco_images

MIN_KEYPOINTS = 3
# ICPR22w's configs (spec 0.3, 4.4)
CENTER_JITTER_PROB = 0.3
CENTER_JITTER = 0.4
HALF_BODY_PROB = 0.3
HALF_BODY_MIN_KEYPOINTS = 8     # more than this many labelled keypoints
HALF_BODY_PADDING = 1.5
SCALE_FACTOR = 0.5
ROTATION_FACTOR = 40.0
ROTATION_PROB = 0.6
FLIP_PROB = 0.5
UPPER_BODY = np.arange(11)     # COCO 0-10: face, shoulders, arms


@dataclass(frozen=True)
class Instance:
    image: int                 # index into TopDownDataset.paths
    box: np.ndarray            # (4,) x1 y1 x2 y2, source pixels
    keypoints: np.ndarray      # (17, 3) COCO order, source pixels, v > 0 labelled


def load_instances(ann_file, image_dir, paths):
    """Instances of one COCO-format keypoint file; their image paths are appended to `paths`."""
    instances = []
    for image, anns in coco_images(ann_file):
        index = None
        for ann in anns:
            if ann.get("iscrowd", 0) or "keypoints" not in ann:
                continue
            kp = np.asarray(ann["keypoints"], np.float32).reshape(NUM_KEYPOINTS, 3)
            labelled = kp[:, 2] > 0
            if labelled.sum() < MIN_KEYPOINTS:
                continue
            x, y, w, h = ann.get("bbox", (0, 0, 0, 0))
            if w <= 0 or h <= 0:  # no usable box: the labelled keypoints' extent
                (x, y), (x2, y2) = kp[labelled, :2].min(0), kp[labelled, :2].max(0)
                w, h = x2 - x, y2 - y
            if index is None:
                index = len(paths)
                paths.append(str(Path(image_dir) / image["file_name"]))
            instances.append(Instance(index, np.array([x, y, x + w, y + h], np.float32), kp))
    return instances


class TopDownDataset(SeededSampleDataset):
    """One sample per person instance (an Instance in `samples`) over all sources.

    `input_size` is the crop (H, W). `augment=False` gives the inference crop of the
    annotated box.
    """

    def __init__(self, sources, input_size=(256, 192), seed=0, augment=True):
        self.input_size = tuple(input_size)
        self.paths = []  # image paths, shared by the instances of one image
        super().__init__(sources, lambda source: load_instances(source.ann_file, source.image_dir, self.paths),
                         seed, augment)

    def read_image(self, index):
        path = self.paths[self.samples[index].image]
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"cannot read training image {path}")
        return image

    def crop_params(self, index, rng=None):
        """(centre (2,), source width of the crop, rotation in degrees, flip) of a sample;
        without `rng`, the inference crop of the box."""
        inst = self.samples[index]
        in_h, in_w = self.input_size
        aspect = in_w / in_h
        centers, sizes = box_to_center_size(inst.box[None], aspect)
        center, size = centers[0], sizes[0]
        if rng is None:
            return center, size[0], 0.0, False
        box_w, box_h = inst.box[2:] - inst.box[:2]
        if rng.random() < CENTER_JITTER_PROB:
            center = center + CENTER_JITTER * (rng.random(2) - 0.5) * (box_w, box_h)
        labelled = inst.keypoints[:, 2] > 0
        if labelled.sum() > HALF_BODY_MIN_KEYPOINTS and rng.random() < HALF_BODY_PROB:
            points = half_body_points(inst.keypoints, rng)
            if points is not None:
                box = np.concatenate([points.min(0), points.max(0)])
                center, size = points.mean(0), box_to_center_size(box[None], aspect, HALF_BODY_PADDING)[1][0]
        scale = np.clip(rng.standard_normal() * SCALE_FACTOR + 1, 1 - SCALE_FACTOR, 1 + SCALE_FACTOR)
        rotation = np.clip(rng.standard_normal() * ROTATION_FACTOR, -2 * ROTATION_FACTOR, 2 * ROTATION_FACTOR)
        if rng.random() >= ROTATION_PROB:
            rotation = 0.0
        flip = rng.random() < FLIP_PROB
        return center, size[0] * scale, float(rotation), bool(flip)

    def sample(self, index, rng=None):
        """The (augmented, when `rng` is given) crop of instance `index` and its keypoints."""
        in_h, in_w = self.input_size
        center, width, rotation, flip = self.crop_params(index, rng)
        affine = crop_affine(center, width, (in_w, in_h), rotation)
        crop = cv2.warpAffine(self.read_image(index), affine, (in_w, in_h), flags=cv2.INTER_LINEAR)
        keypoints = self.samples[index].keypoints.copy()
        keypoints[:, :2] = apply_affine(keypoints[:, :2], affine)
        keypoints[keypoints[:, 2] <= 0] = 0  # unlabelled: no position to carry
        if flip:
            crop = crop[:, ::-1]
            keypoints[:, 0] = np.where(keypoints[:, 2] > 0, in_w - 1 - keypoints[:, 0], 0)
            keypoints = keypoints[COCO_FLIP_INDEX]
        image = np.ascontiguousarray(crop[:, :, ::-1].transpose(2, 0, 1))  # BGR HWC -> RGB CHW
        return {"image": torch.from_numpy(image), "keypoints": torch.from_numpy(keypoints.astype(np.float32))}


def half_body_points(keypoints, rng):
    """(N, 2) labelled upper- or lower-body keypoints (mmpose half_body_transform), or None
    when the chosen half has fewer than 2."""
    labelled = keypoints[:, 2] > 0
    upper = labelled.copy()
    upper[len(UPPER_BODY):] = False
    lower = labelled & ~upper
    if rng.random() < 0.5 and upper.sum() > 2:
        chosen = upper
    else:
        chosen = lower if lower.sum() > 2 else upper
    if chosen.sum() < 2:
        return None
    return keypoints[chosen, :2].astype(np.float64)
