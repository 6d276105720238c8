"""Training data of the bottom-up network: COCO-format sources, a per-source sampler and
a collate function that only pads; the augmentation runs batched on the training device.
The sources, the COCO reading and the sampler serve the top-down network's data too
(train/topdown_data.py).

A source is (annotation json, image dir, weight) in COCO keypoint format: the real COCO
sets, or pseudo-labels (extra per-annotation fields such as "keypoint_scores" are
ignored; the teacher already wrote v = 0 for keypoints it is not sure of). Per image:
- every annotation with a labelled keypoint and iscrowd 0 gets heatmap and PAF targets;
- annotations without keypoints and crowd annotations only give boxes that are left
  out of the loss (these files carry no segmentations), never treated as background;
- samples are Lightweight OpenPose's "main persons" (spec 1.8): >= 5 keypoints,
  area >= 32^2, centre at least 0.3 x max(w, h) of an earlier main person away.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import InputError
from ..skeleton import NUM_KEYPOINTS, NUM_OPENPOSE_KEYPOINTS, coco_to_openpose
from .augment import PAD_RGB, SCALE_RANGE, TARGET_HEIGHT

MIN_MAIN_KEYPOINTS = 5
MIN_MAIN_AREA = 32 * 32
MIN_MAIN_SPACING = 0.3


def load_shrink(height, crop):
    """The factor BottomUpDataset resizes an image by on loading for a main person `height` px
    tall (< 1: it shrinks the image), so that even the largest random scale of a crop of side
    `crop` would shrink it: that keeps the batched bilinear warp from aliasing."""
    return TARGET_HEIGHT * crop * SCALE_RANGE[1] / max(height, 1.0)


@dataclass(frozen=True)
class Source:
    ann_file: str
    image_dir: str
    weight: float = 1.0


@dataclass
class ImageRecord:
    path: Path
    keypoints: np.ndarray      # (P, 18, 3) OpenPose order, source pixels
    ignore_boxes: np.ndarray   # (Q, 4) x1 y1 x2 y2 of regions left out of the loss
    mains: list                # [(centre x, centre y, box height)] of the main persons


def coco_images(ann_file):
    """(image record, [its annotations]) of a COCO-format keypoint file, by image id."""
    with open(ann_file) as f:
        coco = json.load(f)
    by_image = {}
    for ann in coco.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    return [(image, by_image.get(image["id"], [])) for image in sorted(coco["images"], key=lambda im: im["id"])]


def load_source(ann_file, image_dir):
    """ImageRecords of one COCO-format keypoint file; images without a main person are
    dropped (nothing to centre a crop on)."""
    records = []
    for image, anns in coco_images(ann_file):
        record = _image_record(Path(image_dir) / image["file_name"], anns)
        if record.mains:
            records.append(record)
    return records


def _image_record(path, anns):
    keypoints, ignore_boxes, mains = [], [], []
    for ann in anns:
        kp = np.asarray(ann.get("keypoints", [0] * 3 * NUM_KEYPOINTS), np.float32).reshape(NUM_KEYPOINTS, 3)
        labelled = int((kp[:, 2] > 0).sum())
        x, y, w, h = ann.get("bbox", (0, 0, 0, 0))
        if ann.get("iscrowd", 0) or labelled == 0:
            if w > 0 and h > 0:
                ignore_boxes.append((x, y, x + w, y + h))
            continue
        keypoints.append(coco_to_openpose(kp))
        centre = (x + w / 2, y + h / 2)
        if (labelled >= MIN_MAIN_KEYPOINTS and ann.get("area", w * h) >= MIN_MAIN_AREA
                and all(np.hypot(centre[0] - cx, centre[1] - cy) >= MIN_MAIN_SPACING * size
                        for cx, cy, size, _ in mains)):
            mains.append((centre[0], centre[1], max(w, h), h))
    return ImageRecord(
        path,
        np.asarray(keypoints, np.float32).reshape(-1, NUM_OPENPOSE_KEYPOINTS, 3),
        np.asarray(ignore_boxes, np.float32).reshape(-1, 4),
        [(cx, cy, h) for cx, cy, _, h in mains])


class SeededSampleDataset(torch.utils.data.Dataset):
    """Samples of all sources stored contiguously (`source_of_item` for the sampler), each
    source's from load(source). An index is a sample number, or (sample number, stream
    position) from SourceWeightedSampler(numbered=True): the position seeds the sample's
    augmentation, so that a resumed run draws fresh crops whatever the worker count.
    Subclasses define sample(index, rng); rng is None when `augment` is off.
    """

    def __init__(self, sources, load, seed=0, augment=True):
        self.sources = list(sources)
        self.seed, self.augment = seed, augment
        self.samples, source_of_item = [], []
        for index, source in enumerate(self.sources):
            found = load(source)
            self.samples += found
            source_of_item += [index] * len(found)
        self.source_of_item = np.asarray(source_of_item, np.int64)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, key):
        index, position = key if isinstance(key, tuple) else (key, key)
        rng = np.random.default_rng([self.seed, position]) if self.augment else None
        return self.sample(index, rng)


class BottomUpDataset(torch.utils.data.Dataset):
    """One sample per (image, main person) over all sources, sources stored contiguously.

    An item is a dict: "image" (H, W, 3) uint8 RGB, "keypoints" (P, 18, 3), "ignore_boxes"
    (Q, 4), "center" (2,) and "height" of the main person. The image is shrunk (INTER_AREA)
    when even the largest random scale of a crop of side `crop` would shrink it: that keeps
    the batched bilinear warp from aliasing and the canvases small.
    """

    def __init__(self, sources, crop=256):
        self.sources = list(sources)
        self.crop = crop
        self.records, self.items, self.source_of_item = [], [], []
        for index, source in enumerate(self.sources):
            for record in load_source(source.ann_file, source.image_dir):
                self.records.append(record)
                for main in record.mains:
                    self.items.append((len(self.records) - 1, main))
                    self.source_of_item.append(index)
        self.source_of_item = np.asarray(self.source_of_item, np.int64)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        record_index, (cx, cy, height) = self.items[index]
        record = self.records[record_index]
        image = cv2.imread(str(record.path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"cannot read training image {record.path}")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        keypoints, boxes = record.keypoints.copy(), record.ignore_boxes.copy()
        center = np.array([cx, cy], np.float32)
        shrink = load_shrink(height, self.crop)
        if shrink < 1.0:
            h, w = image.shape[:2]
            size = (max(1, round(w * shrink)), max(1, round(h * shrink)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            fx, fy = size[0] / w, size[1] / h
            # Pixel centres sit at integer coordinates: x' = (x + 0.5) f - 0.5.
            keypoints[..., 0] = (keypoints[..., 0] + 0.5) * fx - 0.5
            keypoints[..., 1] = (keypoints[..., 1] + 0.5) * fy - 0.5
            center = (center + 0.5) * np.array([fx, fy], np.float32) - 0.5
            boxes *= np.array([fx, fy, fx, fy], np.float32)
            height *= fy
        return {"image": image, "keypoints": keypoints, "ignore_boxes": boxes,
                "center": center, "height": np.float32(height)}


def collate(items):
    """Pad a list of items to one canvas: "images" (B, H, W, 3) uint8 filled with PAD_RGB,
    "ignore" (B, H, W) uint8 (1 inside ignore boxes), "keypoints" (B, P, 18, 3) with
    "valid" (B, P) marking real people, "centers" (B, 2), "heights" (B,)."""
    b = len(items)
    h = max(it["image"].shape[0] for it in items)
    w = max(it["image"].shape[1] for it in items)
    p = max(1, max(len(it["keypoints"]) for it in items))
    images = np.empty((b, h, w, 3), np.uint8)
    images[:] = PAD_RGB
    ignore = np.zeros((b, h, w), np.uint8)
    keypoints = np.zeros((b, p, NUM_OPENPOSE_KEYPOINTS, 3), np.float32)
    valid = np.zeros((b, p), bool)
    for i, it in enumerate(items):
        ih, iw = it["image"].shape[:2]
        images[i, :ih, :iw] = it["image"]
        for x1, y1, x2, y2 in it["ignore_boxes"]:
            ignore[i, max(0, int(np.floor(y1))):max(0, int(np.ceil(y2))),
                   max(0, int(np.floor(x1))):max(0, int(np.ceil(x2)))] = 1
        n = len(it["keypoints"])
        keypoints[i, :n] = it["keypoints"]
        valid[i, :n] = True
    return {"images": torch.from_numpy(images), "ignore": torch.from_numpy(ignore),
            "keypoints": torch.from_numpy(keypoints), "valid": torch.from_numpy(valid),
            "centers": torch.from_numpy(np.stack([it["center"] for it in items])),
            "heights": torch.tensor([float(it["height"]) for it in items])}


class SourceWeightedSampler(torch.utils.data.Sampler):
    """Endless stream of dataset indices: each draw picks source s with probability
    w_s / sum(w) over the sources that have samples, then one of its samples uniformly.
    A source's share of the stream is thus its weight's share, whatever its size.
    The stream is a pure function of (seed, start), so a resumed run continues with
    `start` = images already seen instead of replaying the same samples. `numbered`
    yields (index, position in the stream) instead, for datasets that seed their
    augmentation with the position (the same crops whatever the number of workers)."""

    def __init__(self, source_of_item, weights, seed=0, start=0, numbered=False):
        super().__init__()
        self.source_of_item = np.asarray(source_of_item)
        counts = np.bincount(self.source_of_item, minlength=len(weights))
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.counts = counts
        weights = np.asarray(weights, np.float64) * (counts > 0)
        if weights.sum() <= 0:
            raise InputError("no training samples: every source is empty or has weight 0")
        self.probabilities = weights / weights.sum()
        self.seed, self.start, self.numbered = seed, start, numbered

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.start])
        position = self.start
        while True:
            sources = rng.choice(len(self.probabilities), size=1024, p=self.probabilities)
            within = (rng.random(1024) * self.counts[sources]).astype(np.int64)
            indices = (self.offsets[sources] + within).tolist()
            if self.numbered:
                yield from zip(indices, range(position, position + len(indices)))
            else:
                yield from indices
            position += len(indices)


def _worker_init(_):
    import signal
    # The main process handles Ctrl-C and SIGTERM and saves; a worker that died of the signal
    # (`pkill -f train_bottomup` reaches the workers too) would crash its final evaluation.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def make_loader(dataset, batch_size, workers=1, seed=0, start=0, pin_memory=False, collate_fn=collate,
                numbered=False):
    """Endless DataLoader of collated batches drawn with the sources' weights; for the
    bottom-up data, workers decode JPEGs and pad, nothing else. `collate_fn` and
    `numbered` (see SourceWeightedSampler) serve other datasets."""
    weights = [source.weight for source in dataset.sources]
    sampler = SourceWeightedSampler(dataset.source_of_item, weights, seed, start, numbered)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn, num_workers=workers,
        worker_init_fn=_worker_init if workers else None, pin_memory=pin_memory,
        persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
