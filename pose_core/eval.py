"""COCO keypoint evaluation of any `frame_bgr -> People` pipeline.

    python -m pose_core.eval --model NAME [--ann COCO.json --images DIR] [--limit N] [--gt-boxes]

runs the pipeline on the images of a COCO keypoint annotation file, scores the
people with pycocotools `COCOeval(..., "keypoints")` and ends with one line `AP=<value>`.
A top-down model crops the people its registry detector finds (centernet-person when its
weights exist, else the default bottom-up model's people; --detector NAME chooses), or
with --gt-boxes the annotation file's person boxes (non-crowd, with keypoints, score 1):
the upper bound that a perfect detector would give.
"""
import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError, PoseError
from .registry import REPO_ROOT

DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
DEFAULT_ANN = DEFAULT_DATA_ROOT / "coco_val_dev" / "person_keypoints.json"
DEFAULT_IMAGES = DEFAULT_DATA_ROOT / "coco_val_dev" / "images"
STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
PERSON_CATEGORY = 1


def _quiet():
    """pycocotools prints 'loading annotations...' and timings; keep only what we print."""
    return contextlib.redirect_stdout(io.StringIO())


def load_ground_truth(ann_file):
    from pycocotools.coco import COCO

    if not Path(ann_file).is_file():
        raise InputError(f"annotation file not found: {ann_file}")
    with _quiet():
        return COCO(str(ann_file))


class GroundTruthBoxes:
    """A top-down detector that returns the annotated person boxes of the image being
    evaluated: non-crowd annotations with at least one labelled keypoint, x1y1x2y2, score 1.

    `evaluate` tells it which image comes next (`select_image`); a frame alone does not say.
    """

    def __init__(self, ann_file_or_coco):
        coco = ann_file_or_coco if hasattr(ann_file_or_coco, "imgs") else load_ground_truth(ann_file_or_coco)
        self.boxes = {}
        for ann in coco.dataset.get("annotations", []):
            x, y, w, h = ann.get("bbox", (0, 0, 0, 0))
            if ann.get("iscrowd", 0) or ann.get("num_keypoints", 0) <= 0 or w <= 0 or h <= 0:
                continue
            self.boxes.setdefault(ann["image_id"], []).append((x, y, x + w, y + h))
        self.image_id = None

    def select_image(self, image_id):
        self.image_id = image_id

    def __call__(self, frame_bgr):
        if self.image_id is None:
            raise PoseError("GroundTruthBoxes: no image selected (use it through pose_core.eval.evaluate)")
        boxes = np.asarray(self.boxes.get(self.image_id, []), np.float32).reshape(-1, 4)
        return boxes, np.ones(len(boxes), np.float32)


def people_to_coco_results(people, image_id):
    """COCO result records (keypoints x, y, score per joint) for one image's People."""
    return [{"image_id": int(image_id), "category_id": PERSON_CATEGORY,
             "keypoints": [round(float(v), 3) for v in people.keypoints[i].reshape(-1)],
             "score": float(people.scores[i])}
            for i in range(len(people))]


def image_ids_to_evaluate(coco_gt, limit=None):
    """Sorted ids of the images that carry person annotations, the first `limit` of them."""
    ids = sorted(img_id for img_id in coco_gt.getImgIds() if coco_gt.getAnnIds(imgIds=[img_id]))
    return ids[:limit] if limit else ids


def coco_keypoint_stats(coco_gt, results, image_ids, iou_type="keypoints"):
    """Run COCOeval on `results` restricted to `image_ids` -> (stats list, printed table);
    `iou_type` "bbox" scores person boxes (pose_core.eval_detector)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with _quiet():
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes cannot take an empty list; an empty result set still scores 0
            coco_dt = COCO()
            coco_dt.dataset = {"images": coco_gt.dataset["images"],
                               "categories": coco_gt.dataset["categories"], "annotations": []}
            coco_dt.createIndex()
    evaluator = COCOeval(coco_gt, coco_dt, iou_type)
    evaluator.params.imgIds = list(image_ids)
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        evaluator.evaluate()
        evaluator.accumulate()
        table.seek(0)
        table.truncate()  # keep the summary only, not evaluate()'s timing lines
        evaluator.summarize()
    return [float(s) for s in evaluator.stats], table.getvalue()


def evaluate(pipeline, ann_file, image_dir, limit=None, progress=True, results_file=None):
    """Run `pipeline` on the annotated images and score it with COCOeval.

    Returns {"AP", "AP50", "AP75", "APm", "APl", "AR", "stats", "images", "seconds",
    "ms_per_image", "table"}; `seconds` is the time spent inside the pipeline.
    """
    select_image = getattr(getattr(pipeline, "detector", None), "select_image", None)

    def predict(frame, image_id):
        if select_image is not None:
            select_image(image_id)
        return people_to_coco_results(pipeline(frame), image_id)

    return run_coco_eval(predict, ann_file, image_dir, limit, progress, results_file)


def run_coco_eval(predict, ann_file, image_dir, limit=None, progress=True, results_file=None,
                  iou_type="keypoints"):
    """predict(BGR frame, image id) -> COCO result records, over the annotated images, scored
    by COCOeval(`iou_type`); the dict `evaluate` returns, with the time spent in `predict`."""
    coco_gt = load_ground_truth(ann_file)
    image_ids = image_ids_to_evaluate(coco_gt, limit)
    results, seconds = [], 0.0
    ids = image_ids
    if progress:
        from tqdm import tqdm
        ids = tqdm(image_ids, desc="eval", unit="img")
    for image_id in ids:
        path = Path(image_dir) / coco_gt.imgs[image_id]["file_name"]
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise InputError(f"cannot read image {path}")
        start = time.perf_counter()
        results.extend(predict(frame, image_id))
        seconds += time.perf_counter() - start
    if results_file:
        Path(results_file).write_text(json.dumps(results))
    stats, table = coco_keypoint_stats(coco_gt, results, image_ids, iou_type)
    summary = dict(zip(STAT_NAMES, stats))
    return {**{k: summary[k] for k in ("AP", "AP50", "AP75", "APm", "APl", "AR")},
            "stats": stats, "images": len(image_ids), "seconds": seconds,
            "ms_per_image": 1000 * seconds / max(1, len(image_ids)), "table": table}


def print_result(result):
    """The table, the time per image and the final `AP=` line of both evaluation commands."""
    print(result["table"], end="")
    print(f"images={result['images']} ms_per_image={result['ms_per_image']:.1f}")
    print(f"AP={result['AP']:.3f}")


def coco_eval_parser(prog, doc, default_model, height_help):
    """The options both evaluation commands share."""
    from .backends import BACKENDS
    from .registry import add_precision_argument

    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument("--model", default=default_model)
    parser.add_argument("--ann", default=str(DEFAULT_ANN), help="COCO person annotation json")
    parser.add_argument("--images", default=None, help="image folder (default: 'images' next to --ann)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N image ids only")
    parser.add_argument("--backend", choices=BACKENDS, default="onnx")
    parser.add_argument("--height", type=int, default=None, help=height_help)
    parser.add_argument("--weights", default=None, help="weights file instead of the registered one")
    add_precision_argument(parser)
    parser.add_argument("--results", default=None, help="write the COCO result records here")
    return parser


def run_eval_command(args, evaluate_in):
    """The tail both evaluation commands share: `evaluate_in(image_dir)` -> result dict, printed
    with print_result; a PoseError is one `error:` line and exit code 2."""
    image_dir = args.images or str(Path(args.ann).parent / "images")
    try:
        result = evaluate_in(image_dir)
    except PoseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_result(result)
    return 0


def main(argv=None):
    from .registry import DEFAULT_MODEL, add_bottom_up_arguments, bottom_up_options, get_spec, load_pipeline

    parser = coco_eval_parser("python -m pose_core.eval", __doc__, DEFAULT_MODEL, "network input height")
    parser.add_argument("--gt-boxes", action="store_true",
                        help="top-down models: crop the annotated person boxes instead of detecting "
                             "people (an upper bound)")
    parser.add_argument("--detector", default=None, metavar="NAME",
                        help="top-down models: the person detector, a registered detector or bottom-up "
                             "model (default: the registry's choice, centernet-person when its weights exist)")
    parser.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=None,
                        help="also run the mirrored image and average (default: the model's)")
    parser.add_argument("--upsample", type=int, default=None,
                        help="bottom-up: map upsampling before peak finding (1: sub-cell peaks on the grid)")
    for name, what in (("fill-missing", "fill the keypoints the grouping left empty from the person's "
                                         "neighbourhood of the heatmaps"),
                       ("size-score", "weight person scores by the person's size"),
                       ("fine-heatmaps", "use the network's stride-4 keypoint heatmaps where it has them "
                                         "(ldlc-openpose-fpn): averaged into the heatmaps for peak finding, and "
                                         "keypoints snapped to their nearby peaks")):
        parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None,
                            help=f"bottom-up: {what} (default: on)")
    add_bottom_up_arguments(parser)
    args = parser.parse_args(argv)

    def evaluate_in(image_dir):
        spec = get_spec(args.model)
        options = {}
        if args.flip_test is not None:
            options["flip_test"] = args.flip_test
        if args.upsample is not None:
            if spec.kind != "bottom-up" or args.upsample < 1:
                raise InputError("--upsample takes a factor >= 1 and is for bottom-up models")
            options["upsample"] = args.upsample
        options.update(bottom_up_options([args.model], args.multi_scale, args.zoom, args.longer_side))
        for option in ("fill_missing", "size_score", "fine_heatmaps"):
            if getattr(args, option) is not None:
                if spec.kind != "bottom-up":
                    raise InputError(f"--{option.replace('_', '-')} is for bottom-up models")
                options[option] = getattr(args, option)
        if args.detector and args.gt_boxes:
            raise InputError("--detector and --gt-boxes exclude each other")
        if args.detector:
            if spec.kind != "top-down" or spec.layout == "movenet":
                raise InputError(f"--detector is for the top-down models; {args.model} does not take one")
            options["detector"] = args.detector
        if args.gt_boxes:
            if spec.kind != "top-down" or spec.layout == "movenet":
                raise InputError(f"--gt-boxes is for top-down models; {args.model} does not take a person detector")
            options["detector"] = GroundTruthBoxes(args.ann)
        pipeline = load_pipeline(args.model, args.backend, args.height, args.weights, precision=args.precision,
                                 **options)
        return evaluate(pipeline, args.ann, image_dir, args.limit, results_file=args.results)

    return run_eval_command(args, evaluate_in)


if __name__ == "__main__":
    sys.exit(main())
