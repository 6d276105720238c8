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
resumes from it.
"""
import argparse
import copy
import csv
import json
import math
import os
import platform
import signal
import time
from datetime import datetime
from pathlib import Path

import torch

from ..errors import InputError, PoseError
from ..registry import REPO_ROOT, WEIGHTS_DIR, get_spec
from .augment import augment_batch
from .data import BottomUpDataset, Source, make_loader
from .targets import render_bottomup_targets_batch

STRIDE = 8
DEFAULT_SOURCES = (
    # annotation json : image dir : weight (share of the sample stream)
    "coco_person_train/person_keypoints.json:coco_person_train/images:0.97",
    "coco_mini_train/person_keypoints.json:coco_mini_train/images:0.03",
)
LOG_COLUMNS = ("time", "variant", "step", "images_seen", "loss", "images_per_s", "AP", "hardware")
FINAL_LR_FRACTION = 0.05


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ldlc-openpose-t6", help="registry name")
    p.add_argument("--data-root", default=str(REPO_ROOT.parent / "shared" / "data"))
    p.add_argument("--source", action="append",
                   help="ANN_JSON:IMAGE_DIR:WEIGHT, repeatable; relative paths are looked up in "
                        "--data-root, then in the repository (default: the two COCO training sets)")
    p.add_argument("--init-backbone", help="converted MoveNet Lightning backbone (.pt)")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate of the new layers")
    p.add_argument("--backbone-lr-mult", type=float, default=0.2,
                   help="backbone lr factor when it is pretrained")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--minutes", type=float, help="stop after this much training time (all runs of a checkpoint)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--ckpt", help="checkpoint: resumed when it exists")
    p.add_argument("--ckpt-minutes", type=float, default=10.0)
    p.add_argument("--save-weights", nargs="?", const="", default=None, metavar="PATH",
                   help="also write fp16 weights (default path: weights/<model file>) and their "
                        "progress file (<weights>.progress.json) with each checkpoint")
    p.add_argument("--resume-weights", nargs="?", const="", default=None, metavar="PATH",
                   help="when --ckpt does not exist, start from these fp16 weights (default: "
                        "weights/<model file>) and their progress file: the committed way to carry "
                        "training across machines without the optimiser state")
    p.add_argument("--log", default=str(REPO_ROOT / "docs" / "training_log.csv"))
    p.add_argument("--log-every", type=int, default=10, help="steps between log rows")
    p.add_argument("--eval-every-minutes", type=float, default=0.0, help="0: never")
    p.add_argument("--eval-limit", type=int, default=50)
    p.add_argument("--eval-height", type=int, default=256)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--workers", type=int, default=1, help="JPEG decoding processes")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def resolve_sources(specs, data_root):
    sources = []
    for spec in specs:
        try:
            ann, images, weight = spec.rsplit(":", 2)
            weight = float(weight)
        except ValueError:
            raise InputError(f"--source '{spec}': expected ANN_JSON:IMAGE_DIR:WEIGHT") from None
        ann, images = _find(ann, data_root), _find(images, data_root)
        if "coco_val_dev" in f"{ann}{images}":
            raise InputError("coco_val_dev is for evaluation only, never for training")
        sources.append(Source(str(ann), str(images), weight))
    return sources


def _find(path, data_root):
    path = Path(path)
    for candidate in (path, Path(data_root) / path, REPO_ROOT / path):
        if candidate.exists():
            return candidate
    raise InputError(f"training data not found: {path}")


def build_model(name, init_backbone=None):
    model = get_spec(name).build()
    if init_backbone:
        from ..models.bottomup import load_movenet_backbone
        state = torch.load(init_backbone, map_location="cpu", weights_only=True)
        load_movenet_backbone(model, state)
    return model


def freeze_batchnorm(module):
    """Keep BN layers on their running statistics (their affine parameters still train)."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def param_groups(model, lr, backbone_lr, weight_decay):
    """Backbone and new layers at their own rates; no weight decay on biases, BN and
    depthwise kernels (Lightweight OpenPose's rule)."""
    groups = {}
    for name, param in model.named_parameters():
        depthwise = param.ndim >= 4 and param.shape[-3] == 1
        decay = weight_decay if param.ndim >= 2 and not depthwise else 0.0
        group_lr = backbone_lr if name.startswith("backbone.") else lr
        groups.setdefault((group_lr, decay), []).append(param)
    return [{"params": params, "lr": group_lr, "base_lr": group_lr, "weight_decay": decay}
            for (group_lr, decay), params in groups.items()]


def lr_factor(step, progress, warmup_steps):
    """Linear warm-up, then a cosine from 1 to FINAL_LR_FRACTION as progress goes 0 -> 1."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    cosine = 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return warm * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * cosine)


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
    """AP on the first `limit` coco_val_dev images, or None while the evaluator or the
    pipeline does not exist yet."""
    try:
        from ..backends import TorchRunner
        from ..bottomup import BottomUpPipeline
        from ..eval import evaluate
    except ImportError as exc:
        print(f"evaluation skipped: {exc}", flush=True)
        return None
    folder = Path(data_root) / "coco_val_dev"
    try:
        pipeline = BottomUpPipeline(TorchRunner(copy.deepcopy(model).float().cpu(), threads), height=height)
        return evaluate(pipeline, folder / "person_keypoints.json", folder / "images", limit=limit,
                        progress=False)["AP"]
    except Exception as exc:  # a sibling module still in development must not end a long run
        print(f"evaluation failed: {type(exc).__name__}: {exc}", flush=True)
        return None


def progress_path(weights_path):
    """Training progress (step, images seen, time) saved beside committed weights."""
    return Path(weights_path).with_suffix(".progress.json")


def save_atomic(obj, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def append_log(path, row):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, LOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def hardware_name(device, threads):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.machine()} {threads} threads"


class StopFlag:
    """Within `with`, SIGINT/SIGTERM set `stop` so the loop saves a checkpoint and exits at
    the next step; the previous handlers come back afterwards."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.stop = False
        self.previous = [signal.signal(sig, self._handle) for sig in self.SIGNALS]
        return self

    def __exit__(self, *_):
        for sig, handler in zip(self.SIGNALS, self.previous):
            signal.signal(sig, handler)

    def _handle(self, signum, _frame):
        print(f"signal {signum}: saving and stopping", flush=True)
        self.stop = True


def main(argv=None):
    args = parse_args(argv)
    try:
        with StopFlag() as stop:
            run(args, stop)
    except PoseError as exc:
        raise SystemExit(f"error: {exc}")


def run(args, stop):
    torch.set_flush_denormal(True)  # denormals slow CPU convolutions down about 10x
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    spec = get_spec(args.model)
    sources = resolve_sources(args.source or DEFAULT_SOURCES, args.data_root)
    dataset = BottomUpDataset(sources, args.crop)
    print(f"{len(dataset)} samples from {len(sources)} sources", flush=True)

    ckpt = None
    if args.ckpt and Path(args.ckpt).exists():
        ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=False)
        if ckpt["model_name"] != args.model:
            raise InputError(f"checkpoint {args.ckpt} is for {ckpt['model_name']}, not {args.model}")
    pretrained = bool(args.init_backbone) or bool(ckpt and ckpt["pretrained_backbone"])
    model = build_model(args.model, None if ckpt else args.init_backbone).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    backbone_lr = args.lr * (args.backbone_lr_mult if pretrained else 1.0)
    optimizer = torch.optim.AdamW(param_groups(model, args.lr, backbone_lr, args.weight_decay))
    generator = torch.Generator().manual_seed(args.seed)
    step, images_seen, train_seconds, warmup_offset = 0, 0, 0.0, 0
    if ckpt:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        step, images_seen, train_seconds = ckpt["step"], ckpt["images_seen"], ckpt["train_seconds"]
        print(f"resumed {args.ckpt}: step {step}, {images_seen} images", flush=True)
    elif args.resume_weights is not None:
        weights_path = Path(args.resume_weights or WEIGHTS_DIR / spec.torch_file)
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        progress_file = progress_path(weights_path)
        if progress_file.exists():
            saved = json.loads(progress_file.read_text())
            step, images_seen, train_seconds = saved["step"], saved["images_seen"], saved["train_seconds"]
            pretrained = pretrained or saved.get("pretrained_backbone", False)
        # A fresh optimiser: its moments come back within the warm-up, counted from here.
        warmup_offset = step
        generator.manual_seed(args.seed + images_seen)  # new augmentations, not a replay
        print(f"resumed weights {weights_path}: step {step}, {images_seen} images", flush=True)

    def save():
        if args.ckpt:
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "generator": generator.get_state(), "step": step, "images_seen": images_seen,
                         "train_seconds": train_seconds, "model_name": args.model,
                         "pretrained_backbone": pretrained}, args.ckpt)
        if args.save_weights is not None:
            from ..models.io import save_torch_weights
            weights_path = Path(args.save_weights or WEIGHTS_DIR / spec.torch_file)
            save_torch_weights(model, weights_path)
            progress_path(weights_path).write_text(json.dumps(
                {"model": args.model, "step": step, "images_seen": images_seen,
                 "train_seconds": round(train_seconds, 1), "pretrained_backbone": pretrained,
                 "sources": args.source or list(DEFAULT_SOURCES), "crop": args.crop,
                 "batch": args.batch, "lr": args.lr, "hardware": hardware}, indent=1) + "\n")

    loader = iter(make_loader(dataset, args.batch, args.workers, args.seed, images_seen,
                              pin_memory=device.type == "cuda"))
    autocast_dtype = None
    if device.type == "cuda":
        autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # fp16 autocast would need a GradScaler; bf16 (every recent GPU) does not.
    hardware = hardware_name(device, args.threads)
    model.train()
    if pretrained:
        freeze_batchnorm(model.backbone)
    last_ckpt = last_eval = time.monotonic()
    window_loss, window_steps, window_images, window_start = 0.0, 0, 0, time.monotonic()

    def log_row(loss="", images_per_s="", AP=""):
        append_log(args.log, {"time": datetime.now().isoformat(timespec="seconds"), "variant": args.model,
                              "step": step, "images_seen": images_seen, "loss": loss,
                              "images_per_s": images_per_s, "AP": AP, "hardware": hardware})

    def progress():
        if args.max_steps:
            return step / args.max_steps
        return train_seconds / (60 * args.minutes) if args.minutes else 0.0

    def done():
        return (stop.stop or (args.max_steps and step >= args.max_steps)
                or (args.minutes and train_seconds >= 60 * args.minutes))

    while not done():
        started = time.monotonic()
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor(step - warmup_offset, progress(), args.warmup_steps)
        images, heatmaps, pafs, mask = training_batch(next(loader), args.crop, generator, device)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        loss = train_step(model, optimizer, images, heatmaps, pafs, mask, autocast_dtype)
        if not math.isfinite(loss):
            raise PoseError(f"loss became {loss} at step {step}; lower --lr")
        step += 1
        images_seen += len(images)
        train_seconds += time.monotonic() - started
        window_loss, window_steps, window_images = window_loss + loss, window_steps + 1, window_images + len(images)

        now = time.monotonic()
        if step % args.log_every == 0 or done():
            rate = window_images / (now - window_start)
            log_row(loss=f"{window_loss / window_steps:.3f}", images_per_s=f"{rate:.2f}")
            print(f"step {step} images {images_seen} loss {window_loss / window_steps:.3f} "
                  f"{rate:.2f} img/s lr {optimizer.param_groups[0]['lr']:.2e}", flush=True)
            window_loss, window_steps, window_images, window_start = 0.0, 0, 0, time.monotonic()
        if args.ckpt_minutes and now - last_ckpt >= 60 * args.ckpt_minutes:
            save()
            last_ckpt = now
        if args.eval_every_minutes and now - last_eval >= 60 * args.eval_every_minutes and not done():
            ap = evaluate_ap(model, args.data_root, args.eval_limit, args.eval_height, args.threads)
            if ap is not None:
                log_row(AP=f"{ap:.4f}")
                print(f"step {step}: AP {ap:.4f} on {args.eval_limit} coco_val_dev images", flush=True)
            last_eval = time.monotonic()
            window_start += last_eval - now  # evaluation time is not training throughput
    save()
    print(f"stopped at step {step}, {images_seen} images, {train_seconds / 60:.1f} training minutes", flush=True)


if __name__ == "__main__":
    main()
