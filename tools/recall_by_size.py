"""Which labelled people a pose model finds, by their size in network-input pixels.

    python tools/recall_by_size.py [--model ldlc-openpose-t6-fast] [--height 256] [--multi-scale 512]
                                   [--zoom [F]] [--precision fp32|int8] [--limit N]
                                   [--ann ../shared/data/coco_val_dev/person_keypoints.json]

For every labelled person (non-crowd, with keypoints) of the annotation file: is some person
the model returns within OKS 0.5 of it (COCO's OKS over the labelled keypoints, a missing
keypoint counting 0)? The people are bucketed by their box height once the image is resized
to the network input height, so the table shows the sizes a bottom-up network at that height
misses. AP50 counts the same matches, ranked by score.
"""
import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pose_core.eval import DEFAULT_ANN, image_ids_to_evaluate, load_ground_truth  # noqa: E402
from pose_core.registry import (DEFAULT_MODEL, PRECISIONS, add_bottom_up_arguments, bottom_up_options,  # noqa: E402
                                load_pipeline)
from pose_core.skeleton import OKS_SIGMAS  # noqa: E402

BUCKETS = (0, 32, 64, 128, 256, np.inf)


def best_oks(found, labelled):
    """(N, 17, 3) found keypoints, one COCO annotation -> the best OKS of any found person."""
    truth = np.asarray(labelled["keypoints"], np.float64).reshape(17, 3)
    visible = truth[:, 2] > 0
    if not len(found):
        return 0.0
    squared = ((found[..., :2] - truth[:, :2]) ** 2).sum(-1)
    spread = 2 * (2 * np.asarray(OKS_SIGMAS)) ** 2 * (labelled["area"] + np.spacing(1))
    similarity = np.where(found[..., 2] > 0, np.exp(-squared / spread), 0.0)
    return float((similarity[:, visible].sum(1) / visible.sum()).max())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--height", type=int, default=256)
    add_bottom_up_arguments(p)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="ONNX Runtime: the fp32 file (default) or the model's int8 file")
    p.add_argument("--ann", default=str(DEFAULT_ANN))
    p.add_argument("--limit", type=int)
    args = p.parse_args(argv)
    options = bottom_up_options([args.model], args.multi_scale, args.zoom, args.longer_side)
    pipeline = load_pipeline(args.model, "onnx", args.height, precision=args.precision, **options)
    coco = load_ground_truth(args.ann)
    rows = []  # (height in network pixels, matched)
    for image_id in image_ids_to_evaluate(coco, args.limit):
        info = coco.imgs[image_id]
        frame = cv2.imread(str(Path(args.ann).parent / "images" / info["file_name"]))
        found = pipeline(frame).keypoints
        scale = args.height / frame.shape[0]
        for labelled in coco.imgToAnns[image_id]:
            if labelled.get("iscrowd") or labelled["num_keypoints"] <= 0:
                continue
            rows.append((labelled["bbox"][3] * scale, best_oks(found, labelled) >= 0.5))
    heights, matched = np.array(rows).T
    print(f"{args.model} at height {args.height}" + (f" + {args.multi_scale}" if args.multi_scale else "")
          + (f", zoom {args.zoom:g}" if args.zoom else ""))
    print("person height (network px) | people | found (OKS >= 0.5)")
    for low, high in zip(BUCKETS[:-1], BUCKETS[1:]):
        inside = (heights >= low) & (heights < high)
        if inside.any():
            print(f"{low:g}-{high:g} | {inside.sum()} | {matched[inside].mean():.2f}")
    print(f"all | {len(rows)} | {matched.mean():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
