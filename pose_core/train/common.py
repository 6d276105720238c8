"""What the training scripts share: command line, data sources, model with a MoveNet backbone,
optimiser groups, schedule, checkpoints, committed weights with their progress file, the
CSV log, signals, and the training loop itself (train_bottomup.py, train_topdown.py).

The loop (`run_training`) owns everything but the data and the loss: a script hands it
a dataset, a step function (a collated batch -> one optimiser step, its loss) and an
evaluation function. Checkpoint (model, optimiser, step, images seen, training seconds,
augmentation RNG), written atomically every --ckpt-minutes, at the end and on
SIGINT/SIGTERM; a run restarted with the same --ckpt resumes from it. Without a
checkpoint, --resume-weights starts from committed fp16 weights and their progress file
(<weights>.progress.json) with a fresh optimiser. The learning rate warms up linearly
over --warmup-steps, then follows a cosine to 5% over the planned run (--max-steps, or
--minutes of training time when no step budget is set).
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

from ..errors import InputError, PoseError, WeightsError
from ..eval import DEFAULT_DATA_ROOT
from ..models.io import load_fitting_state, read_state_dict, save_torch_weights
from ..registry import REPO_ROOT, WEIGHTS_DIR, get_spec
from .data import Source, collate, make_loader

LOG_COLUMNS = ("time", "variant", "step", "images_seen", "loss", "images_per_s", "AP", "hardware")
FINAL_LR_FRACTION = 0.05
DEFAULT_SOURCES = (
    # annotation json : image dir : weight (share of the sample stream)
    "coco_person_train/person_keypoints.json:coco_person_train/images:0.97",
    "coco_mini_train/person_keypoints.json:coco_mini_train/images:0.03",
)



def training_parser(doc, model, sources_help, batch, lr, warmup_steps, crop_help="crop side"):
    """The options every training script takes; `doc` is the script's docstring."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=model, help="registry name")
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    p.add_argument("--source", action="append",
                   help="ANN_JSON:IMAGE_DIR:WEIGHT, repeatable; relative paths are looked up in "
                        f"--data-root, then in the repository (default: {sources_help})")
    p.add_argument("--init-backbone", help="converted pretrained weights (.pt): MoveNet Lightning's backbone "
                                           "(cache/movenet_lightning_backbone.pt), MultiPose's for "
                                           "ldlc-openpose-t6w15 (cache/movenet_multipose_backbone.pt) or, for "
                                           "mnv3-hwloss-w075, CenterNet's (cache/centernet_mnv3_backbone.pt); for "
                                           "centernet-person, CenterNet's whole detector "
                                           "(cache/centernet_mnv3_detector.pt). With --resume-weights: a backbone "
                                           "swap, the other layers taken from those weights where they fit")
    p.add_argument("--crop", type=int, default=256, help=crop_help)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--lr", type=float, default=lr, help="learning rate of the new layers")
    p.add_argument("--backbone-lr-mult", type=float, default=0.2,
                   help="backbone lr factor when it is pretrained")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=warmup_steps)
    p.add_argument("--minutes", type=float, help="stop after this much training time (all runs of a checkpoint)")
    p.add_argument("--more-minutes", type=float,
                   help="train this much longer than the resumed run, with a cosine over this run "
                        "alone (a warm restart: a GPU slice after CPU runs, say); overrides --minutes")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--ckpt", help="checkpoint: resumed when it exists")
    p.add_argument("--ckpt-minutes", type=float, default=10.0)
    p.add_argument("--save-weights", nargs="?", const="", default=None, metavar="PATH",
                   help="also write fp16 weights (default path: weights/<model file>) and their "
                        "progress file (<weights>.progress.json) with each checkpoint")
    p.add_argument("--snapshot-minutes", type=float, default=0.0,
                   help="with --save-weights: every this many training minutes also write the weights "
                        "to <weights>.<images seen>.pt, to pick the best point of a run afterwards "
                        "(a GPU slice cannot evaluate on the device); 0: never")
    p.add_argument("--resume-weights", nargs="?", const="", default=None, metavar="PATH",
                   help="when --ckpt does not exist, start from these fp16 weights (default: "
                        "weights/<model file>) and their progress file: the committed way to carry "
                        "training across machines without the optimiser state")
    p.add_argument("--log", default=str(REPO_ROOT / "docs" / "training_log.csv"))
    p.add_argument("--log-every", type=int, default=10, help="steps between log rows")
    p.add_argument("--eval-every-minutes", type=float, default=0.0, help="0: never")
    p.add_argument("--eval-limit", type=int, default=50)
    p.add_argument("--keep-best", action="store_true",
                   help="with --save-weights and --eval-every-minutes: write the weights only when an "
                        "evaluation beats the best so far (the starting weights are evaluated first), "
                        "so a noisy stretch never overwrites better committed weights")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--workers", type=int, default=1, help="data loading processes")
    p.add_argument("--seed", type=int, default=0)
    return p


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
    """The registered network; `init_backbone`: converted pretrained weights: CenterNet's whole
    detector for centernet-person (tools/convert_centernet_detector.py), CenterNet's backbone
    for another MobileNetV3 backbone (tools/convert_centernet_backbone.py), else a MoveNet
    backbone (tools/convert_movenet_backbone.py: Lightning's, or MultiPose's for t6w15 and,
    with its pyramid, for ldlc-openpose-fpn)."""
    model = get_spec(name).build()
    if init_backbone:
        from ..models.bottomup import load_movenet_backbone
        from ..models.centernet_person import CenterNetPersonNet, load_centernet_detector
        from ..models.mobilenetv3_pose import MobileNetV3Large, load_centernet_backbone
        from ..models.multipose_fpn import MultiPoseFeatures, load_multipose_features
        state = read_state_dict(init_backbone)
        if isinstance(model, CenterNetPersonNet):
            load = load_centernet_detector
        elif isinstance(model.backbone, MultiPoseFeatures):
            load = load_multipose_features
        else:
            load = load_centernet_backbone if isinstance(model.backbone, MobileNetV3Large) else load_movenet_backbone
        load(model, state)
    return model


def load_heads(model, state, source):
    """A backbone swap: `model` keeps its new pretrained backbone and takes every other layer of
    `state` (another network's weights) whose name and shape fit; the rest keep their fresh
    initialisation (ldlc-openpose-t6w15: the CPM's first conv, which reads the wider backbone)."""
    own = model.state_dict()
    heads = {k: v for k, v in state.items()
             if not k.startswith("backbone.") and k in own and own[k].shape == v.shape}
    if not heads:
        raise WeightsError(f"{source} has no layer that fits {type(model).__name__} outside its backbone")
    model.load_state_dict(heads, strict=False)
    fresh = [k for k in own if not k.startswith("backbone.") and k not in heads]
    print(f"backbone swap: {len(heads)} tensors from {source}; initialised afresh: {', '.join(fresh) or 'none'}",
          flush=True)


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


def optimise(optimizer, loss):
    """One optimiser step on `loss`; returns it as a float."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def evaluate_copy(model, threads, score):
    """score(runner) with a TorchRunner on a float32 CPU copy of the model in training, or
    None (logged) when it fails: an evaluation must not end a long run."""
    from ..backends import TorchRunner
    try:
        return score(TorchRunner(copy.deepcopy(model).float().cpu(), threads))
    except Exception as exc:
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


def autocast_dtype_for(device):
    """bf16 on a GPU that has it (no GradScaler needed), fp16 on an older one, none on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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


def main_with_signals(run, args):
    """run(args, stop) with the StopFlag installed; a PoseError ends as one `error:` line."""
    try:
        with StopFlag() as stop:
            run(args, stop)
    except PoseError as exc:
        raise SystemExit(f"error: {exc}")


def setup(args):
    """Process-wide settings of a run; returns the device."""
    torch.set_flush_denormal(True)  # denormals slow CPU convolutions down about 10x
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.benchmark = True  # fixed crop size: pick the fastest kernels once
    return torch.device(args.device)


def run_training(args, stop, dataset, step_fn, evaluate_fn, default_sources, collate_fn=collate,
                 numbered=False, loss_format=".3f", log_variant=None):
    """The resumable training loop; returns the model.

    step_fn(model, optimizer, batch, generator, device, autocast_dtype) -> (loss float,
    images in the batch): one optimiser step on a collated batch; `generator` is the
    checkpointed augmentation RNG. evaluate_fn(model) -> AP or None. `collate_fn` and
    `numbered` go to data.make_loader; `loss_format` formats the logged mean loss;
    `log_variant` names the log rows (default: the model), e.g. when only part of it trains.
    """
    device = torch.device(args.device)
    spec = get_spec(args.model)
    ckpt = None
    if args.ckpt and Path(args.ckpt).exists():
        ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=False)
        if ckpt["model_name"] != args.model:
            raise InputError(f"checkpoint {args.ckpt} is for {ckpt['model_name']}, not {args.model}")
    resumed = None  # (fp16 weights path, their progress or {}) when --resume-weights starts the run
    if ckpt is None and args.resume_weights is not None:
        weights_path = Path(args.resume_weights or WEIGHTS_DIR / spec.torch_file)
        progress_file = progress_path(weights_path)
        resumed = weights_path, json.loads(progress_file.read_text()) if progress_file.exists() else {}
    # Known before the optimiser is built: the backbone's rate depends on it (until stop 18 a
    # --resume-weights run learnt it after, and trained a pretrained backbone at the full rate).
    pretrained = (bool(args.init_backbone) or bool(ckpt and ckpt["pretrained_backbone"])
                  or bool(resumed and resumed[1].get("pretrained_backbone", False)))
    model = build_model(args.model, None if ckpt else args.init_backbone).to(device)
    backbone_lr = args.lr * (args.backbone_lr_mult if pretrained else 1.0)
    optimizer = torch.optim.AdamW(param_groups(model, args.lr, backbone_lr, args.weight_decay))
    generator = torch.Generator().manual_seed(args.seed)
    step, images_seen, train_seconds, warmup_offset = 0, 0, 0.0, 0
    earlier_runs = []
    if ckpt:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        # The rates are this command's (--lr, --backbone-lr-mult), not the checkpoint's: a resumed
        # run keeps the optimiser's moments and may continue at a lower rate.
        rate_of = {id(param): group["base_lr"] for group in param_groups(model, args.lr, backbone_lr,
                                                                          args.weight_decay)
                   for param in group["params"]}
        for group in optimizer.param_groups:
            group["base_lr"] = rate_of[id(group["params"][0])]
        generator.set_state(ckpt["generator"])
        step, images_seen, train_seconds = ckpt["step"], ckpt["images_seen"], ckpt["train_seconds"]
        earlier_runs = ckpt.get("runs", [])
        print(f"resumed {args.ckpt}: step {step}, {images_seen} images", flush=True)
    elif resumed:
        weights_path, saved = resumed
        state = read_state_dict(weights_path)
        if args.init_backbone:
            load_heads(model, state, weights_path)   # load_state_dict casts the fp16 tensors
        else:
            try:
                load_fitting_state(model, state, f"weights {weights_path}", args.model)
            except WeightsError as exc:
                raise WeightsError(f"{exc} (another network's weights? --init-backbone swaps a new backbone "
                                   "under the layers that fit)") from None
        if saved:
            step, images_seen, train_seconds = saved["step"], saved["images_seen"], saved["train_seconds"]
            earlier_runs = saved.get("runs", [])
        # A fresh optimiser: its moments come back within the warm-up, counted from here.
        warmup_offset = step
        generator.manual_seed(args.seed + images_seen)  # new augmentations, not a replay
        print(f"resumed weights {weights_path}: step {step}, {images_seen} images", flush=True)

    # Provenance: every run's options and the images it took the weights from and to.
    this_run = {"from_images": images_seen, "options": dict(sorted(vars(args).items()))}

    def runs():
        return earlier_runs + [dict(this_run, to_images=images_seen)]

    def weights_file():
        return Path(args.save_weights or WEIGHTS_DIR / spec.torch_file)

    def snapshot():
        path = weights_file()
        save_torch_weights(model, path.with_name(f"{path.stem}.{images_seen}{path.suffix}"))

    def save(weights=True):
        if args.ckpt:
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "generator": generator.get_state(), "step": step, "images_seen": images_seen,
                         "train_seconds": train_seconds, "model_name": args.model,
                         "pretrained_backbone": pretrained, "runs": runs()}, args.ckpt)
        if weights and args.save_weights is not None:
            weights_path = weights_file()
            save_torch_weights(model, weights_path)
            progress_path(weights_path).write_text(json.dumps(
                {"model": args.model, "step": step, "images_seen": images_seen,
                 "train_seconds": round(train_seconds, 1), "pretrained_backbone": pretrained,
                 "sources": args.source or list(default_sources), "crop": args.crop,
                 "batch": args.batch, "lr": args.lr, "hardware": hardware, "runs": runs()},
                indent=1, default=str) + "\n")

    loader = iter(make_loader(dataset, args.batch, args.workers, args.seed, images_seen,
                              pin_memory=device.type == "cuda", collate_fn=collate_fn, numbered=numbered))
    autocast_dtype = autocast_dtype_for(device)
    hardware = hardware_name(device, args.threads)
    model.train()
    if pretrained:
        freeze_batchnorm(model.backbone)
    last_ckpt = last_eval = time.monotonic()
    run_images, run_seconds = images_seen, train_seconds
    last_snapshot = train_seconds
    window_loss, window_steps, window_images, window_start = 0.0, 0, 0, time.monotonic()

    def log_row(loss="", images_per_s="", AP=""):
        append_log(args.log, {"time": datetime.now().isoformat(timespec="seconds"), "variant": log_variant or args.model,
                              "step": step, "images_seen": images_seen, "loss": loss,
                              "images_per_s": images_per_s, "AP": AP, "hardware": hardware})

    if args.more_minutes:
        args.minutes = run_seconds / 60 + args.more_minutes

    keep_best = args.keep_best and args.eval_every_minutes and args.save_weights is not None
    best_ap = None

    def evaluate_and_keep():
        """Evaluate, log, and with --keep-best write the weights when they are the best so far."""
        nonlocal best_ap
        ap = evaluate_fn(model)
        if ap is None:
            return
        log_row(AP=f"{ap:.4f}")
        print(f"step {step}: AP {ap:.4f} on {args.eval_limit} coco_val_dev images", flush=True)
        if keep_best and (best_ap is None or ap > best_ap):
            if best_ap is not None:
                save()
                print(f"best so far: weights written at step {step}", flush=True)
            best_ap = ap

    if keep_best:
        evaluate_and_keep()  # the baseline the run has to beat
        last_eval = window_start = time.monotonic()

    def progress():
        if args.max_steps:
            return step / args.max_steps
        if args.more_minutes:
            return (train_seconds - run_seconds) / (60 * args.more_minutes)
        return train_seconds / (60 * args.minutes) if args.minutes else 0.0

    def done():
        return (stop.stop or (args.max_steps and step >= args.max_steps)
                or (args.minutes and train_seconds >= 60 * args.minutes))

    while not done():
        started = time.monotonic()
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor(step - warmup_offset, progress(), args.warmup_steps)
        loss, batch_images = step_fn(model, optimizer, next(loader), generator, device, autocast_dtype)
        if not math.isfinite(loss):
            raise PoseError(f"loss became {loss} at step {step}; lower --lr")
        step += 1
        images_seen += batch_images
        train_seconds += time.monotonic() - started
        window_loss, window_steps, window_images = window_loss + loss, window_steps + 1, window_images + batch_images

        now = time.monotonic()
        if step % args.log_every == 0 or done():
            rate = window_images / (now - window_start)
            mean_loss = format(window_loss / window_steps, loss_format)
            log_row(loss=mean_loss, images_per_s=f"{rate:.2f}")
            print(f"step {step} images {images_seen} loss {mean_loss} "
                  f"{rate:.2f} img/s lr {optimizer.param_groups[0]['lr']:.2e}", flush=True)
            window_loss, window_steps, window_images, window_start = 0.0, 0, 0, time.monotonic()
        if args.ckpt_minutes and now - last_ckpt >= 60 * args.ckpt_minutes:
            save(weights=not keep_best)
            last_ckpt = now
        if (args.snapshot_minutes and args.save_weights is not None and not done()
                and train_seconds - last_snapshot >= 60 * args.snapshot_minutes):
            snapshot()
            last_snapshot = train_seconds
        if args.eval_every_minutes and now - last_eval >= 60 * args.eval_every_minutes and not done():
            evaluate_and_keep()
            last_eval = time.monotonic()
            window_start += last_eval - now  # evaluation time is not training throughput
    if keep_best:
        save(weights=False)
        evaluate_and_keep()
    else:
        save()
    rate = (images_seen - run_images) / max(train_seconds - run_seconds, 1e-9)
    print(f"stopped at step {step}, {images_seen} images, {train_seconds / 60:.1f} training minutes; "
          f"this run {rate:.2f} images/s of training time (data loading included)", flush=True)
    return model
