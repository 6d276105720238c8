"""Draw the learning curve (AP on coco_val_dev against images seen, per variant) from the
training log.

    python tools/plot_learning_curve.py [--log docs/training_log.csv] [--out docs/learning_curve.png]
"""
import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pose_core.registry import MODELS  # noqa: E402

# One panel per kind of network, each with what its AP column measures (the training
# scripts' --eval-every-minutes: a subset of coco_val_dev, bottom-up networks at height 256).
PANELS = (("bottom-up", "bottom-up: keypoint AP"), ("top-down", "top-down: keypoint AP, annotated boxes"),
          ("detector", "detectors: box AP"))
LOSS_SMOOTHING = 20  # rows in the running mean of the loss curves
PALETTE = [f"C{i}" for i in range(10) if i != 7]  # C7 is grey, the colour of runs not kept


def kind_of(variant):
    """The registry kind of a log variant ('<model name>[ <what was trained>]')."""
    model = max((name for name in MODELS if variant.startswith(name)), key=len, default=None)
    return MODELS[model].kind if model else None


def read_curves(log_path):
    """variant -> (images seen, AP) at each evaluation, and variant -> (images seen, loss)."""
    ap, loss = defaultdict(list), defaultdict(list)
    with open(log_path, newline="") as f:
        for row in csv.DictReader(f):
            images = int(row["images_seen"])
            if row["AP"]:
                ap[row["variant"]].append((images, float(row["AP"])))
            if row["loss"]:
                loss[row["variant"]].append((images, float(row["loss"])))
    return ap, loss


def running_mean(values, width):
    cumulative = np.cumsum(np.insert(np.asarray(values, float), 0, 0))
    counts = np.minimum(np.arange(1, len(values) + 1), width)
    ends = np.arange(1, len(values) + 1)
    return (cumulative[ends] - cumulative[ends - counts]) / counts


def style(variant, colours):
    """Kept runs in colour, one per variant; runs whose weights were not kept grey and dashed."""
    if "not kept" in variant:
        return {"color": "0.6", "linestyle": "--"}
    return {"color": colours.setdefault(variant, PALETTE[len(colours) % len(PALETTE)])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", type=Path, default=REPO_ROOT / "docs" / "training_log.csv")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "learning_curve.png")
    args = parser.parse_args(argv)
    ap, loss = read_curves(args.log)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    colours = {}
    for ax, (kind, title) in zip(axes.flat, PANELS):
        for variant, points in sorted(ap.items()):
            if kind_of(variant) == kind:
                ax.plot(*zip(*points), marker="o", markersize=3, label=variant, **style(variant, colours))
        ax.set(title=title, xlabel="training images seen (log)", ylabel="AP (coco_val_dev subset)", xscale="log")
    ax_loss = axes.flat[3]
    for variant, points in sorted(loss.items()):
        if kind_of(variant) == "bottom-up":
            images, values = zip(*points)
            ax_loss.plot(images, running_mean(values, LOSS_SMOOTHING), linewidth=0.8, label=variant,
                         **style(variant, colours))
    ax_loss.set(title=f"bottom-up: training loss (running mean of {LOSS_SMOOTHING} log rows)",
                xlabel="training images seen (log)", ylabel="loss (both stages, or the stages trained)",
                xscale="log", yscale="log")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a kind with no evaluations yet has no legend
            ax.legend(fontsize=7, loc="best", framealpha=0.8)
    fig.suptitle("Learning curves (docs/training_log.csv); grey dashed: runs whose weights were not kept")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
