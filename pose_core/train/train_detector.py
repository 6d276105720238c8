"""Resumable training of the person detectors (person-detector, centernet-person).

    python -m pose_core.train.train_detector --model person-detector \
        --init-backbone cache/movenet_lightning_backbone.pt --minutes 60 \
        --ckpt cache/train/person-detector.ckpt --save-weights --eval-every-minutes 20
    python -m pose_core.train.train_detector --model centernet-person \
        --init-backbone cache/centernet_mnv3_detector.pt --lr 2e-4 --more-minutes 60 \
        --ckpt cache/train/centernet-person.ckpt --save-weights --keep-best --eval-every-minutes 15

Data (train/detector_data.py): whole images of the --source files (default: the two COCO
training sets), every non-crowd person box a positive, crowd boxes masked out of the
heatmap loss; random scale 0.6-1.4 of a --crop x --crop (320) letterbox, translation,
flip, light colour jitter, cv2.warpAffine in the DataLoader workers. Targets: CenterNet's
Gaussian centre heatmaps, sizes and offsets at the centre cells, at the network's stride
(8 for person-detector, 4 for centernet-person).

Loss (CenterNet): penalty-reduced focal loss on the centre heatmap (alpha 2, beta 4,
normalised by the number of people in the batch) + SIZE_WEIGHT (0.1) x L1 on the box sizes
(in cells) + OFFSET_WEIGHT (1) x L1 on the sub-cell offsets, both at the centre
cells only.

Schedule and loop: train/common.py's, shared with the pose networks: AdamW at --lr for the
neck and heads, --lr x --backbone-lr-mult (0.2) for a pretrained backbone (MoveNet's,
CenterNet's) whose BatchNorm statistics stay frozen; warm-up, then a cosine to 5%; checkpoints (--ckpt every
--ckpt-minutes, at the end and on SIGINT/SIGTERM), --resume-weights, --save-weights (fp16),
--more-minutes and the CSV log. --eval-every-minutes logs the COCO box AP on the first
--eval-limit coco_val_dev images (pose_core.eval_detector). --device cuda runs the same
code with bf16 autocast and channels_last.
"""
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..registry import get_spec
from .common import (DEFAULT_SOURCES, evaluate_copy, main_with_signals, optimise, resolve_sources, run_training,
                     setup, training_parser)
from .detector_data import DetectorDataset

SIZE_WEIGHT = 0.1
OFFSET_WEIGHT = 1.0
INPUT_MULTIPLE = 32


def parse_args(argv=None):
    p = training_parser(__doc__, model="person-detector", sources_help="the two COCO training sets",
                        batch=16, lr=1e-3, warmup_steps=50, crop_help="square input side (320)")
    p.set_defaults(crop=320)
    return p.parse_args(argv)


def focal_loss(logits, target, weight=None):
    """CenterNet's penalty-reduced pixel-wise focal loss (alpha 2, beta 4), summed and divided
    by the number of centres (target == 1); `weight` 0 leaves a pixel's negative term out."""
    logits, target = logits.float(), target.float()
    positive = target.eq(1).float()
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos_loss = log_p * (1 - p) ** 2 * positive
    neg_loss = log_not_p * p ** 2 * (1 - target) ** 4 * (1 - positive)
    if weight is not None:
        neg_loss = neg_loss * weight
    return -(pos_loss.sum() + neg_loss.sum()) / positive.sum().clamp(min=1.0)


def masked_l1(pred, target, mask):
    """Mean absolute error over the masked cells (both channels)."""
    mask = mask.float()
    return ((pred.float() - target).abs() * mask).sum() / (2 * mask.sum()).clamp(min=1.0)


def detector_loss(outputs, batch):
    """(total, (focal, size, offset)) of the network outputs (center, size, offset) on a batch
    of rendered targets."""
    center, size, offset = outputs
    focal = focal_loss(center, batch["heatmap"], batch["heat_weight"])
    size_loss = masked_l1(size, batch["size"], batch["reg_mask"])
    offset_loss = masked_l1(offset, batch["offset"], batch["reg_mask"])
    return focal + SIZE_WEIGHT * size_loss + OFFSET_WEIGHT * offset_loss, (focal, size_loss, offset_loss)


def to_device(batch, device):
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out["image"] = out["image"].float()
    if device.type == "cuda":
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


def train_step(model, optimizer, batch, autocast_dtype=None):
    with torch.autocast(batch["image"].device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        outputs = model(batch["image"])
    loss, _ = detector_loss([o.float() for o in outputs], batch)
    return optimise(optimizer, loss)


def evaluate_box_ap(model, data_root, limit, threads):
    """COCO box AP on the first `limit` coco_val_dev images, or None on failure."""
    from ..eval_detector import EVAL_SCORE_THRESHOLD, EVAL_TOP_K, evaluate_detector
    from ..person_detector import PersonDetector

    folder = Path(data_root) / "coco_val_dev"
    return evaluate_copy(model, threads, lambda runner: evaluate_detector(
        PersonDetector(runner, top_k=EVAL_TOP_K, score_threshold=EVAL_SCORE_THRESHOLD),
        folder / "person_keypoints.json", folder / "images", limit=limit, progress=False)["AP"])

def main(argv=None):
    main_with_signals(run, parse_args(argv))


def run(args, stop):
    setup(args)
    if args.crop % INPUT_MULTIPLE:
        raise InputError(f"--crop {args.crop} must be a multiple of {INPUT_MULTIPLE} (256, 320, ...)")
    sources = resolve_sources(args.source or DEFAULT_SOURCES, args.data_root)
    dataset = DetectorDataset(sources, args.crop, seed=args.seed, stride=get_spec(args.model).build().stride)
    print(f"{len(dataset)} images from {len(sources)} sources, {args.crop}x{args.crop} inputs", flush=True)

    def step(model, optimizer, batch, generator, device, autocast_dtype):
        batch = to_device(batch, device)
        return train_step(model, optimizer, batch, autocast_dtype), len(batch["image"])

    def evaluate(model):
        return evaluate_box_ap(model, args.data_root, args.eval_limit, args.threads)

    run_training(args, stop, dataset, step, evaluate, DEFAULT_SOURCES,
                 collate_fn=torch.utils.data.default_collate, numbered=True, loss_format=".4f")


if __name__ == "__main__":
    main()
