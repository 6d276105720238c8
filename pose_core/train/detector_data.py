"""Training data of the person detector: whole images, letterbox-like random affines, and
CenterNet targets rendered in the DataLoader workers.

Sources are the other networks' (train/data.py: COCO-format files, real or pseudo-labelled,
drawn with SourceWeightedSampler). Per image: EVERY non-crowd person box with a positive
width and height is a positive, people without keypoints included; crowd boxes are masked
out of the heatmap loss (neither positives nor negatives). Images without any box are left
out (the pseudo-labelled sets may have missed their people).

Per sample (the random numbers come from (seed, position in the sample stream), as
topdown_data): the image is scaled so that its longer side is `size` x U(SCALE_RANGE),
placed at a random offset in the size x size input (anywhere it fits when smaller; any
window of it when larger; PAD_RGB around, as inference pads), cv2.warpAffine bilinear;
mirrored with probability 0.5; light colour jitter (contrast, brightness, saturation).
A box is clipped to the input; one whose clipped width or height is under MIN_BOX_SIDE
pixels is masked out like a crowd box rather than trained as a positive or a negative.

Targets at stride 8 (CenterNet, Zhou et al. 2019): a Gaussian per person at its centre
cell with CenterNet's gaussian_radius (min overlap 0.7), element-wise maximum where they
overlap, exactly 1 at the centre cell; width and height (cells) and the centre's offset
within its cell at the centre cell only ("reg_mask"); "heat_weight" 0 inside masked
boxes (except at centre cells), else 1.

An item: {"image": (3, S, S) uint8 RGB, "heatmap": (1, S/8, S/8), "size", "offset":
(2, S/8, S/8), "reg_mask", "heat_weight": (1, S/8, S/8)} float32 tensors; default_collate
batches them.
"""
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from ..bottomup import PAD_RGB
from ..errors import InputError
from .data import SeededSampleDataset, coco_images

STRIDE = 8
SCALE_RANGE = (0.6, 1.4)
FLIP_PROB = 0.5
MIN_BOX_SIDE = 8.0            # input pixels; smaller (after clipping) is masked, not trained
MIN_OVERLAP = 0.7             # CenterNet's gaussian_radius
CONTRAST, BRIGHTNESS, SATURATION = 0.25, 25.0, 0.3


def load_images(ann_file, image_dir):
    """[(path, boxes (N, 4) x1y1x2y2, crowd boxes (M, 4))] of the images with a person box."""
    records = []
    for image, anns in coco_images(ann_file):
        boxes, crowd = [], []
        for ann in anns:
            x, y, w, h = ann.get("bbox", (0, 0, 0, 0))
            if w <= 0 or h <= 0:
                continue
            (crowd if ann.get("iscrowd", 0) else boxes).append((x, y, x + w, y + h))
        if boxes:
            records.append((str(Path(image_dir) / image["file_name"]), np.asarray(boxes, np.float32).reshape(-1, 4),
                            np.asarray(crowd, np.float32).reshape(-1, 4)))
    return records


def gaussian_radius(height, width, min_overlap=MIN_OVERLAP):
    """CenterNet's radius (in cells) of a box of height x width cells (its code, as released)."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap, cx, cy, radius):
    """Element-wise maximum of `heatmap` (H, W) with a Gaussian of sigma (2r + 1) / 6 at (cx, cy)."""
    sigma = (2 * radius + 1) / 6
    ys, xs = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    gaussian = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma))
    h, w = heatmap.shape
    left, right = min(cx, radius), min(w - cx, radius + 1)
    top, bottom = min(cy, radius), min(h - cy, radius + 1)
    region = heatmap[cy - top:cy + bottom, cx - left:cx + right]
    np.maximum(region, gaussian[radius - top:radius + bottom, radius - left:radius + right], out=region)


def render_targets(boxes, ignore_boxes, input_size, stride=STRIDE):
    """Targets of one input (H, W) from its boxes and masked boxes (x1y1x2y2 input pixels).

    Returns dict of float32 arrays: heatmap, reg_mask, heat_weight (1, h, w); size, offset
    (2, h, w), h, w = H / stride, W / stride (rounded up)."""
    in_h, in_w = input_size
    h, w = -(-in_h // stride), -(-in_w // stride)
    heatmap = np.zeros((h, w), np.float32)
    size = np.zeros((2, h, w), np.float32)
    offset = np.zeros((2, h, w), np.float32)
    reg_mask = np.zeros((h, w), np.float32)
    heat_weight = np.ones((h, w), np.float32)
    for x1, y1, x2, y2 in np.asarray(ignore_boxes, np.float32).reshape(-1, 4):
        heat_weight[max(0, int(y1 // stride)):max(0, int(math.ceil(y2 / stride))),
                    max(0, int(x1 // stride)):max(0, int(math.ceil(x2 / stride)))] = 0
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for x1, y1, x2, y2 in boxes[np.argsort(-areas, kind="stable")]:  # small people win shared cells
        bw, bh = (x2 - x1) / stride, (y2 - y1) / stride
        cx, cy = (x1 + x2) / 2 / stride, (y1 + y2) / 2 / stride
        ix, iy = int(cx), int(cy)
        if not (0 <= ix < w and 0 <= iy < h):
            continue
        draw_gaussian(heatmap, ix, iy, max(0, int(gaussian_radius(bh, bw))))
        heatmap[iy, ix] = 1.0
        size[:, iy, ix] = bw, bh
        offset[:, iy, ix] = cx - ix, cy - iy
        reg_mask[iy, ix] = 1.0
    heat_weight[reg_mask > 0] = 1.0
    return {"heatmap": heatmap[None], "size": size, "offset": offset, "reg_mask": reg_mask[None],
            "heat_weight": heat_weight[None]}


class DetectorDataset(SeededSampleDataset):
    """One sample per image over all sources: (path, boxes, crowd boxes) in `samples`.

    `augment=False` gives the inference letterbox (longer side `size`, top-left).
    """

    def __init__(self, sources, size=320, seed=0, augment=True, stride=STRIDE):
        if size % 32:
            raise InputError(f"detector input {size} must be a multiple of 32")
        self.size, self.stride = int(size), stride
        super().__init__(sources, lambda source: load_images(source.ann_file, source.image_dir), seed, augment)

    def sample(self, index, rng=None):
        path, boxes, crowd = self.samples[index]
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"cannot read training image {path}")
        size = self.size
        img_h, img_w = image.shape[:2]
        scale = size / max(img_h, img_w)
        tx = ty = 0.0
        flip = False
        if rng is not None:
            scale *= rng.uniform(*SCALE_RANGE)
            free_x, free_y = size - img_w * scale, size - img_h * scale
            tx, ty = rng.uniform(min(0, free_x), max(0, free_x)), rng.uniform(min(0, free_y), max(0, free_y))
            flip = rng.random() < FLIP_PROB
        affine = np.array([[scale, 0, tx], [0, scale, ty]], np.float64)
        crop = cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=PAD_RGB[::-1])
        # warpAffine maps pixel indices; box coordinates are continuous (pixel i spans [i, i + 1])
        shift = np.array([tx, ty, tx, ty]) + 0.5 * (1 - scale)
        boxes = np.clip(boxes * scale + shift, 0, size)
        crowd = np.clip(crowd * scale + shift, 0, size)
        if flip:
            crop = crop[:, ::-1]
            boxes, crowd = mirror_boxes(boxes, size), mirror_boxes(crowd, size)
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        small = sides < MIN_BOX_SIDE
        visible = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        ignore = np.concatenate([crowd, boxes[small & visible]])
        boxes = boxes[~small]
        rgb = crop[:, :, ::-1]
        if rng is not None:
            rgb = colour_jitter(rgb, rng)
        targets = render_targets(boxes, ignore, (size, size), self.stride)
        item = {"image": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))}
        item.update({k: torch.from_numpy(v) for k, v in targets.items()})
        return item


def mirror_boxes(boxes, width):
    """x1y1x2y2 boxes of an image of `width` mirrored left to right."""
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


def colour_jitter(rgb, rng):
    """Light contrast, brightness and saturation jitter of an HWC uint8 image."""
    image = rgb.astype(np.float32)
    gray = image.mean(axis=2, keepdims=True)
    image = gray + (image - gray) * (1 + rng.uniform(-SATURATION, SATURATION))
    mean = gray.mean()
    image = mean + (image - mean) * (1 + rng.uniform(-CONTRAST, CONTRAST)) + rng.uniform(-BRIGHTNESS, BRIGHTNESS)
    return np.clip(image, 0, 255).astype(np.uint8)
