"""Does training on a pack teach what training on the source images teaches?

    python tools/pack_fidelity.py --pack cache/packed [--steps 120] [--lr 6e-5] [--out out/pack_fidelity]

From the committed ldlc-openpose-t6 weights, two short runs of the backbone + initial stage
(AdamW, batch 16, backbone at half the rate, its BatchNorm frozen, as train_bottomup trains it on
the CPU) on the same coco_person_train people in the same order with the same augmentation:
one reads the source images, the other the pack's copies. Then each run's loss on fixed crops of
320 other people of the source images, and its AP on coco_val_dev (ldlc-openpose-t6-fast, ONNX
fp32, as `pose_core.eval` measures the registered model). A pack that blurs or degrades the
crops moves the weights away from what the source teaches. Stop 17 measured, at 120 steps from
0.196: with the people of a 256 px WebP pack, 0.196 from the source and 0.182 from the pack (0.192
from full-size WebP at quality 75); with those of a --training-crop 256 WebP 90 pack, 0.184 and
0.178. The restart alone moves AP by about 0.01, so compare the two arms of one run. About 10
minutes a run on 2 cores.
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from pose_core.models.io import save_torch_weights  # noqa: E402
from pose_core.registry import WEIGHTS_DIR  # noqa: E402
from pose_core.train.common import (DEFAULT_DATA_ROOT, build_model, freeze_batchnorm, lr_factor,  # noqa: E402
                                    optimise, param_groups, resolve_sources)
from pose_core.train.data import BottomUpDataset, collate  # noqa: E402
from pose_core.train.train_bottomup import bottomup_loss, training_batch  # noqa: E402

SOURCE = "coco_person_train/person_keypoints.json:coco_person_train/images:1"
MODEL, EVAL_MODEL = "ldlc-openpose-t6", "ldlc-openpose-t6-fast"
BATCH, CROP, HELD_OUT, WARMUP_STEPS = 16, 256, 320, 20


def paired_samples(source, pack):
    """[(index in source, index in pack)] of the same main person, matched by image file stem."""
    def by_stem(dataset):
        stems = {}
        for i, (record, _) in enumerate(dataset.items):
            stems.setdefault(dataset.records[record].path.stem, []).append(i)
        return stems
    a, b = by_stem(source), by_stem(pack)
    return [(i, j) for stem in sorted(b) if stem in a and len(a[stem]) == len(b[stem])
            for i, j in zip(a[stem], b[stem])]


def stage1_loss(model, images, heatmaps, pafs, mask):
    return bottomup_loss(model.stage_outputs(model.backbone_features(images), 1), heatmaps, pafs, mask)


def held_out_loss(model, dataset, indices):
    model.eval()
    total = 0.0
    with torch.no_grad():
        for k in range(0, len(indices), 32):
            batch = collate([dataset[i] for i in indices[k:k + 32]])
            tensors = training_batch(batch, CROP, torch.Generator().manual_seed(5000 + k), "cpu")
            total += stage1_loss(model, *tensors).item() * len(tensors[0])
    return total / len(indices)


def short_run(dataset, train, held, source, steps, lr, weights):
    """Train `steps` batches of `dataset` items `train` (in order); the held-out loss before and after."""
    model = build_model(MODEL)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    optimizer = torch.optim.AdamW(param_groups(model, lr, lr * 0.5, 1e-4))
    before = held_out_loss(model, source, held)
    start = time.perf_counter()
    for step in range(steps):
        model.train()
        freeze_batchnorm(model.backbone)
        batch = collate([dataset[i] for i in train[(step * BATCH) % len(train):][:BATCH]])
        tensors = training_batch(batch, CROP, torch.Generator().manual_seed(step), "cpu")
        for group in optimizer.param_groups:   # a linear warm-up, then constant (progress 0)
            group["lr"] = group["base_lr"] * lr_factor(step, 0.0, WARMUP_STEPS)
        loss = optimise(optimizer, stage1_loss(model, *tensors))
        if step % 20 == 0:
            print(f"  step {step} loss {loss:.2f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return model, before, held_out_loss(model, source, held)


def val_ap(model, out):
    """AP on coco_val_dev of the weights (stored fp16, as committed), through ONNX fp32."""
    weights, onnx = out.with_suffix(".pt"), out.with_suffix(".onnx")
    save_torch_weights(model, weights)
    python = sys.executable
    subprocess.run([python, "-m", "pose_core.export_onnx", "--model", EVAL_MODEL, "--weights", str(weights),
                    "--out", str(onnx)], cwd=REPO_ROOT, check=True, capture_output=True)
    result = subprocess.run([python, "-m", "pose_core.eval", "--model", EVAL_MODEL, "--weights", str(onnx),
                             "--precision", "fp32"], cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    return next(line for line in result.stdout.splitlines() if line.startswith("AP="))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", required=True, help="a tools/pack_training_data.py folder")
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--lr", type=float, default=6e-5)
    p.add_argument("--weights", default=str(WEIGHTS_DIR / "ldlc-openpose-t6.pt"))
    p.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "pack_fidelity")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    source = BottomUpDataset(resolve_sources([SOURCE], args.data_root), CROP)
    pack = BottomUpDataset(resolve_sources([SOURCE], args.pack), CROP)
    pairs = paired_samples(source, pack)
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(1)).tolist()
    held = [pairs[j][0] for j in order[-HELD_OUT:]]
    held_stems = {source.records[source.items[i][0]].path.stem for i in held}
    train = [pairs[j] for j in order[:-HELD_OUT]
             if source.records[source.items[pairs[j][0]][0]].path.stem not in held_stems]
    print(f"{len(pairs)} people in both; {len(train)} to train on, {len(held)} held out", flush=True)

    rows = []
    for name, dataset, indices in (("source", source, [i for i, _ in train]), ("pack", pack, [j for _, j in train])):
        print(f"{name}: {args.steps} steps", flush=True)
        model, before, after = short_run(dataset, indices, held, source, args.steps, args.lr, args.weights)
        rows.append((name, before, after, val_ap(model, args.out / name)))
    print(f"{'crops from':<8} {'held-out loss before':>20} {'after':>8}  coco_val_dev")
    for name, before, after, ap in rows:
        print(f"{name:<8} {before:>20.3f} {after:>8.3f}  {ap}")


if __name__ == "__main__":
    main()
