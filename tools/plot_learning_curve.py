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

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pose_core.registry import MODELS  # noqa: E402

# What each kind's AP column measures (the training scripts' --eval-every-minutes).
AP_MEANING = {"top-down": "keypoint AP, annotated person boxes", "detector": "box AP"}


def variant_label(variant):
    spec = MODELS.get(variant)
    meaning = AP_MEANING.get(spec.kind) if spec else None
    return f"{variant} ({meaning})" if meaning else variant


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", type=Path, default=REPO_ROOT / "docs" / "training_log.csv")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "learning_curve.png")
    args = parser.parse_args(argv)
    ap, loss = read_curves(args.log)
    fig, (ax_ap, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for variant, points in sorted(ap.items()):
        ax_ap.plot(*zip(*points), marker="o", label=variant_label(variant))
    for variant, points in sorted(loss.items()):
        ax_loss.plot(*zip(*points), label=variant, linewidth=0.8)
    ax_ap.set(xlabel="training images seen", ylabel="AP (coco_val_dev subset; bottom-up at height 256)",
              title="AP at checkpoints")
    ax_loss.set(xlabel="training images seen", ylabel="loss (each network's own)", title="training loss",
                yscale="log")
    for ax in (ax_ap, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
