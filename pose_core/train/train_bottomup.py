"""Resumable training of the bottom-up network.

    python -m pose_core.train.train_bottomup --model ldlc-openpose-t6 \
        --init-backbone cache/movenet_lightning_backbone.pt --minutes 600 \
        --ckpt cache/train/ldlc-openpose-t6.ckpt --save-weights

Schedule: the paper trains 260 COCO epochs at Adam lr 4e-5 (batch 32); a CPU run sees a
few epochs of 2-3k crops, so it needs larger steps to get anywhere. The new heads
(CPM and stages, random init) use --lr (5e-4 by default); the MoveNet-pretrained
backbone uses --lr x --backbone-lr-mult (0.2) so early head gradients do not wreck the
pretrained features, and its BatchNorm statistics stay frozen (MoveNet's BN is folded
into identity statistics, and batch-16 statistics would change the pretrained function).
The rate warms up linearly over --warmup-steps and then follows a cosine to 5% over
the planned run (--max-steps, or --minutes of training time when no step budget is set).

Loss (spec 1.9): for every stage, sum(((pred - target) * mask)^2) / 2 / batch over the
heatmaps and over the PAFs, summed over stages. The checkpoint (model, optimiser, step,
images seen, training seconds, augmentation RNG) is written atomically every
--ckpt-minutes, at the end and on SIGINT/SIGTERM; a run restarted with the same --ckpt
resumes from it. The loop, checkpoints and schedule are train/common.py's.
"""
from pathlib import Path

import torch

from .augment import augment_batch
from .common import (DEFAULT_SOURCES, evaluate_copy, main_with_signals, resolve_sources, run_training,
                     setup, training_parser)
from .data import BottomUpDataset
from .targets import render_bottomup_targets_batch

STRIDE = 8


def parse_args(argv=None):
    p = training_parser(__doc__, model="ldlc-openpose-t6", sources_help="the two COCO training sets",
                        batch=16, lr=5e-4, warmup_steps=200)
    p.add_argument("--eval-height", type=int, default=256)
    return p.parse_args(argv)


def bottomup_loss(outputs, heatmaps, pafs, mask):
    """Spec 1.9: per stage sum(((pred - gt) * mask)^2) / 2 / batch for heatmaps and PAFs, summed."""
    batch = heatmaps.shape[0]
    total = heatmaps.new_zeros(())
    for pred_heatmaps, pred_pafs in outputs:
        total = total + (((pred_heatmaps.float() - heatmaps) * mask) ** 2).sum() / 2 / batch
        total = total + (((pred_pafs.float() - pafs) * mask) ** 2).sum() / 2 / batch
    return total


def training_batch(batch, crop, generator, device):
    """Collated batch -> (images, heatmaps, pafs, mask) on `device`."""
    with torch.no_grad():
        images, keypoints, valid, mask = augment_batch(batch, crop, generator, STRIDE, device)
        heatmaps, pafs = render_bottomup_targets_batch(keypoints, valid, crop // STRIDE, crop // STRIDE, STRIDE)
    return images, heatmaps, pafs, mask


def train_step(model, optimizer, images, heatmaps, pafs, mask, autocast_dtype=None):
    with torch.autocast(images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        outputs = model(images)
    loss = bottomup_loss(outputs, heatmaps, pafs, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def evaluate_ap(model, data_root, limit, height, threads):
    """AP on the first `limit` coco_val_dev images, or None on failure."""
    from ..bottomup import BottomUpPipeline
    from ..eval import evaluate

    folder = Path(data_root) / "coco_val_dev"
    return evaluate_copy(model, threads, lambda runner: evaluate(
        BottomUpPipeline(runner, height=height), folder / "person_keypoints.json", folder / "images",
        limit=limit, progress=False)["AP"])

def main(argv=None):
    main_with_signals(run, parse_args(argv))


def run(args, stop):
    setup(args)
    sources = resolve_sources(args.source or DEFAULT_SOURCES, args.data_root)
    dataset = BottomUpDataset(sources, args.crop)
    print(f"{len(dataset)} samples from {len(sources)} sources", flush=True)

    def step(model, optimizer, batch, generator, device, autocast_dtype):
        images, heatmaps, pafs, mask = training_batch(batch, args.crop, generator, device)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        return train_step(model, optimizer, images, heatmaps, pafs, mask, autocast_dtype), len(images)

    def evaluate(model):
        return evaluate_ap(model, args.data_root, args.eval_limit, args.eval_height, args.threads)

    run_training(args, stop, dataset, step, evaluate, DEFAULT_SOURCES)


if __name__ == "__main__":
    main()
