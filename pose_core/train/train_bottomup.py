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

Heads on a frozen backbone (--freeze-backbone), for CPU runs: the backbone (MoveNet's,
about three quarters of a full step's time on the CPU) runs without gradients and only
the CPM and stages train; --train-stages 1 trains (and evaluates) the initial stage alone,
the default model's path. --replay R then takes R optimiser steps per fresh batch, the
first on it and the others on batches drawn from a buffer of the last --replay-buffer
samples' backbone features and targets: each crop serves about R steps for one backbone
pass. A "step" in the log and the schedule is one fresh batch. The buffer is not
checkpointed: a resumed run refills it.
"""
from pathlib import Path

import torch

from ..errors import InputError
from ..models.multipose_fpn import NUM_KEYPOINTS, MultiPoseFeatures
from .augment import SCALE_RANGE, augment_batch
from .common import (DEFAULT_SOURCES, build_model, evaluate_copy, main_with_signals, optimise,
                     resolve_sources, run_training, setup, training_parser)
from .data import BottomUpDataset
from .targets import render_bottomup_targets_batch

STRIDE = 8


def parse_args(argv=None):
    p = training_parser(__doc__, model="ldlc-openpose-t6", sources_help="the two COCO training sets",
                        batch=16, lr=5e-4, warmup_steps=200)
    p.add_argument("--eval-height", type=int, default=256)
    p.add_argument("--freeze-backbone", action="store_true",
                   help="train the CPM and stages only; the backbone runs without gradients")
    p.add_argument("--train-stages", type=int, help="train and evaluate the first N stages (default: all)")
    p.add_argument("--frozen-stages", type=int, default=0,
                   help="with --freeze-backbone: the CPM and the first K stages are frozen too, so only "
                        "the later stages train (K=1: the refinement stage on the default model's "
                        "unchanged initial stage)")
    p.add_argument("--replay", type=int, default=1,
                   help="with --freeze-backbone: optimiser steps per fresh batch, the extra ones on "
                        "batches drawn from the buffer of recent backbone features")
    p.add_argument("--replay-buffer", type=int, default=4096, help="samples the replay buffer holds")
    p.add_argument("--scale-range", type=float, nargs=2, default=SCALE_RANGE, metavar=("LOW", "HIGH"),
                   help="the main person's height is 0.6 x crop x U[LOW, HIGH] (Lightweight OpenPose: "
                        f"{SCALE_RANGE[0]} {SCALE_RANGE[1]}); a lower LOW trains on the small people that "
                        f"coco_val_dev has at height 256 (HIGH at most {SCALE_RANGE[1]})")
    p.add_argument("--heatmap-teacher", metavar="PT",
                   help="ldlc-openpose-fpn with its feature extractor training (no --freeze-backbone): "
                        "converted MultiPose weights (cache/movenet_multipose_fpn.pt) whose keypoint "
                        "heatmaps the training ones are held to, since decoding reads them (averaged "
                        "into ours, snapping, person scores) and no label trains them")
    p.add_argument("--heatmap-weight", type=float, default=10.0,
                   help="weight of that term: sum of squared differences / 2 / batch, as the main loss")
    args = p.parse_args(argv)
    if args.heatmap_teacher and args.freeze_backbone:
        p.error("--heatmap-teacher is for a training feature extractor: drop --freeze-backbone")
    if not 0 < args.scale_range[0] <= args.scale_range[1] <= SCALE_RANGE[1]:
        p.error(f"--scale-range needs 0 < LOW <= HIGH <= {SCALE_RANGE[1]}")
    if args.replay < 1 or (args.replay > 1 and not args.freeze_backbone):
        p.error("--replay N (N >= 1) needs --freeze-backbone when N > 1")
    if args.train_stages is not None and args.train_stages < 1:
        p.error("--train-stages must be at least 1")
    if args.frozen_stages and (not args.freeze_backbone or args.train_stages is None
                               or not 0 < args.frozen_stages < args.train_stages):
        p.error("--frozen-stages K needs --freeze-backbone and fewer than --train-stages stages")
    return args


def bottomup_loss(outputs, heatmaps, pafs, mask):
    """Spec 1.9: per stage sum(((pred - gt) * mask)^2) / 2 / batch for heatmaps and PAFs, summed."""
    batch = heatmaps.shape[0]
    total = heatmaps.new_zeros(())
    for pred_heatmaps, pred_pafs in outputs:
        total = total + (((pred_heatmaps.float() - heatmaps) * mask) ** 2).sum() / 2 / batch
        total = total + (((pred_pafs.float() - pafs) * mask) ** 2).sum() / 2 / batch
    return total


def training_batch(batch, crop, generator, device, scale_range=SCALE_RANGE):
    """Collated batch -> (images, heatmaps, pafs, mask) on `device`."""
    with torch.no_grad():
        images, keypoints, valid, mask = augment_batch(batch, crop, generator, STRIDE, device, scale_range)
        heatmaps, pafs = render_bottomup_targets_batch(keypoints, valid, crop // STRIDE, crop // STRIDE, STRIDE)
    return images, heatmaps, pafs, mask


def heatmap_distillation(features, teacher_features, weight):
    """weight x sum((student - teacher)^2) / 2 / batch over MultiPoseFeatures' last channels,
    its keypoint heatmaps (folded 2x2 into channels)."""
    channels = 4 * NUM_KEYPOINTS
    difference = features[:, -channels:].float() - teacher_features[:, -channels:].float()
    return weight * (difference ** 2).sum() / 2 / len(features)


def train_step(model, optimizer, images, heatmaps, pafs, mask, autocast_dtype=None, num_stages=None,
               heatmap_teacher=None, heatmap_weight=0.0):
    """One step of the whole network; with `heatmap_teacher` (a frozen MultiPoseFeatures) the
    model's MultiPose heatmaps are also held to the teacher's."""
    with torch.autocast(images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        features = model.backbone_features(images)
        loss = bottomup_loss(model.stage_outputs(features, num_stages), heatmaps, pafs, mask)
        if heatmap_teacher is not None:
            with torch.no_grad():
                teacher_features = heatmap_teacher(model.normalise(images))
            loss = loss + heatmap_distillation(features, teacher_features, heatmap_weight)
    return optimise(optimizer, loss)


def load_heatmap_teacher(model_name, path, device):
    """The backbone of `model_name` built with the converted MultiPose weights at `path`
    (build_model's --init-backbone), frozen; it must be MultiPoseFeatures, whose last channels
    heatmap_distillation compares."""
    backbone = build_model(model_name, path).backbone
    if not isinstance(backbone, MultiPoseFeatures):
        raise InputError(f"--heatmap-teacher needs a model on MultiPose's feature extractor "
                         f"(ldlc-openpose-fpn), not {model_name}")
    return backbone.to(device).eval().requires_grad_(False)


def train_heads_step(model, optimizer, features, heatmaps, pafs, mask, num_stages=None, frozen_stages=0):
    """One step of the CPM and stages on backbone features computed without gradients; the
    loss covers the stages that train (not the first `frozen_stages`)."""
    outputs = model.stage_outputs(features, num_stages, frozen_stages)[frozen_stages:]
    return optimise(optimizer, bottomup_loss(outputs, heatmaps, pafs, mask))


class ReplayBuffer:
    """A ring of the last `capacity` samples: backbone features, heatmaps, PAFs, mask (fp16)."""

    def __init__(self, capacity):
        self.capacity, self.size, self.next = capacity, 0, 0
        self.tensors = None

    def add(self, *tensors):
        if self.tensors is None:
            self.tensors = [torch.empty((self.capacity, *t.shape[1:]), dtype=torch.float16) for t in tensors]
        for i in range(len(tensors[0])):
            for store, t in zip(self.tensors, tensors):
                store[self.next] = t[i]
            self.next = (self.next + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def sample(self, batch, generator, device):
        index = torch.randint(self.size, (batch,), generator=generator)
        return [store[index].to(device).float() for store in self.tensors]


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

    replay = ReplayBuffer(args.replay_buffer) if args.replay > 1 else None
    heatmap_teacher = load_heatmap_teacher(args.model, args.heatmap_teacher, torch.device(args.device)) \
        if args.heatmap_teacher else None

    def step(model, optimizer, batch, generator, device, autocast_dtype):
        images, heatmaps, pafs, mask = training_batch(batch, args.crop, generator, device, tuple(args.scale_range))
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        if not args.freeze_backbone:
            return train_step(model, optimizer, images, heatmaps, pafs, mask, autocast_dtype,
                              args.train_stages, heatmap_teacher, args.heatmap_weight), len(images)
        for module in [model.backbone, *model.frozen_modules(args.frozen_stages)]:
            module.eval()  # frozen, BatchNorm statistics included (the loop sets train mode)
        with torch.no_grad():
            features = model.backbone_features(images)
        heads = dict(num_stages=args.train_stages, frozen_stages=args.frozen_stages)
        losses = [train_heads_step(model, optimizer, features, heatmaps, pafs, mask, **heads)]
        if replay is not None:
            replay.add(features, heatmaps, pafs, mask)
            losses += [train_heads_step(model, optimizer, *replay.sample(len(images), generator, device), **heads)
                       for _ in range(args.replay - 1)]
        return sum(losses) / len(losses), len(images)

    def evaluate(model):
        model.eval_stages = args.train_stages  # eval mode runs the stages that train
        return evaluate_ap(model, args.data_root, args.eval_limit, args.eval_height, args.threads)

    # Rows of a partial run are its own curve: its loss and AP are those of the stages it trains.
    log_variant = None if args.train_stages is None else (
        f"{args.model} {'' if args.freeze_backbone else 'backbone + '}"
        f"{trained_stages_label(args.frozen_stages + 1, args.train_stages)}")
    run_training(args, stop, dataset, step, evaluate, DEFAULT_SOURCES, log_variant=log_variant)


def trained_stages_label(first, last):
    """'initial stage', 'first 2 stages', 'stage 2', 'stages 2-3': what a partial run trains."""
    if first == 1:
        return "initial stage" if last == 1 else f"first {last} stages"
    return f"stage {last}" if first == last else f"stages {first}-{last}"


if __name__ == "__main__":
    main()
