"""Resumable training of the top-down networks (mnv2-hwloss, mnv3-hwloss, mnv3-hwloss-w075).

    python -m pose_core.train.train_topdown --model mnv2-hwloss \
        --init-backbone cache/movenet_lightning_backbone.pt --minutes 600 \
        --ckpt cache/train/mnv2-hwloss.ckpt --save-weights --eval-every-minutes 30

Data (train/topdown_data.py): one 256 x 192 crop per labelled person of the --source
files (default: the two COCO training sets), cropped as inference crops (box -> centre
and size with 1.25 padding at aspect 3:4, topdown.crop_affine, cv2.warpAffine in the
DataLoader workers) with the ICPR22w augmentation: flip with the left/right swap, half
body, scale 0.5 and rotation 40 degrees. Targets: Gaussians of sigma 2 at stride 4, target
weight 0 for unlabelled keypoints (train/topdown_targets.py). Loss: the heatmap-weighting
loss (Li & Xiang), mean over batch, keypoints and pixels of ((pred - gt) w_k)^2 (gt + 1).

Schedule: the paper uses Adam 5e-4, batch 64, 500 warm-up iterations, 210 epochs on a GPU.
Here AdamW at --lr for the head (5e-4), --lr x --backbone-lr-mult (0.2) for a
MoveNet- or CenterNet-initialised backbone (--init-backbone; mnv3-hwloss-w075 takes
cache/centernet_mnv3_backbone.pt), whose BatchNorm statistics stay frozen (the pretrained
BN is folded into identity statistics); warm-up over --warmup-steps, then a cosine to 5% over the planned
run. The loop, checkpoints (--ckpt every --ckpt-minutes, at the end and on SIGINT/SIGTERM),
--resume-weights, --save-weights (fp16) and the CSV log are train/common.py's, shared with
train_bottomup. --eval-every-minutes logs AP on the first --eval-limit coco_val_dev images
with their annotated person boxes (pose_core.eval.GroundTruthBoxes: an upper bound).
--device cuda runs the same code with bf16 autocast and channels_last.
"""
from pathlib import Path

import torch

from ..errors import InputError
from .common import (DEFAULT_SOURCES, evaluate_copy, main_with_signals, optimise, resolve_sources, run_training,
                     setup, training_parser)
from .topdown_data import TopDownDataset
from .topdown_targets import heatmap_weighting_loss, render_topdown_targets

HEATMAP_STRIDE = 4
BACKBONE_STRIDE = 32


def parse_args(argv=None):
    p = training_parser(__doc__, model="mnv2-hwloss", sources_help="the two COCO training sets",
                        batch=32, lr=5e-4, warmup_steps=100,
                        crop_help="crop height; the width is 3/4 of it (256 x 192)")
    return p.parse_args(argv)


def input_size(crop):
    """Crop (H, W) of a crop height: aspect 3:4, as the registry's top-down pipelines."""
    return crop, crop * 3 // 4


def training_batch(batch, size, device):
    """Collated batch -> (images float32 RGB 0..255, targets, target weights) on `device`."""
    images = batch["image"].to(device, non_blocking=True).float()
    heatmap_size = (size[0] // HEATMAP_STRIDE, size[1] // HEATMAP_STRIDE)
    targets, weights = render_topdown_targets(batch["keypoints"].to(device), heatmap_size, size)
    return images, targets, weights


def train_step(model, optimizer, images, targets, weights, autocast_dtype=None):
    with torch.autocast(images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        heatmaps = model(images)
    loss = heatmap_weighting_loss(heatmaps.float(), targets, weights)
    return optimise(optimizer, loss)


def evaluate_ap(model, data_root, limit, size, threads):
    """AP with ground-truth boxes on the first `limit` coco_val_dev images, or None on failure."""
    from ..eval import GroundTruthBoxes, evaluate
    from ..topdown import TopDownPipeline

    ann = Path(data_root) / "coco_val_dev" / "person_keypoints.json"
    return evaluate_copy(model, threads, lambda runner: evaluate(
        TopDownPipeline(GroundTruthBoxes(ann), runner, size), ann, ann.parent / "images",
        limit=limit, progress=False)["AP"])

def main(argv=None):
    main_with_signals(run, parse_args(argv))


def run(args, stop):
    setup(args)
    size = input_size(args.crop)
    if size[0] % BACKBONE_STRIDE or size[1] % BACKBONE_STRIDE:
        raise InputError(f"--crop {args.crop}: the crop {size[0]}x{size[1]} must be a multiple of "
                         f"{BACKBONE_STRIDE} both ways (128, 256, 384, ...) for heatmaps at stride 4")
    sources = resolve_sources(args.source or DEFAULT_SOURCES, args.data_root)
    dataset = TopDownDataset(sources, size, seed=args.seed)
    print(f"{len(dataset)} people from {len(sources)} sources, {size[0]}x{size[1]} crops", flush=True)

    def step(model, optimizer, batch, generator, device, autocast_dtype):
        images, targets, weights = training_batch(batch, size, device)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        return train_step(model, optimizer, images, targets, weights, autocast_dtype), len(images)

    def evaluate(model):
        return evaluate_ap(model, args.data_root, args.eval_limit, size, args.threads)

    run_training(args, stop, dataset, step, evaluate, DEFAULT_SOURCES,
                 collate_fn=torch.utils.data.default_collate, numbered=True, loss_format=".4e")


if __name__ == "__main__":
    main()
