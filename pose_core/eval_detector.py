"""COCO person-box evaluation of a person detector.

    python -m pose_core.eval_detector [--model centernet-person|person-detector] [--ann COCO.json --images DIR] [--limit N]

runs the detector on the images of a COCO person annotation file (default coco_val_dev),
scores its boxes with pycocotools `COCOeval(..., "bbox")` (crowd boxes ignored, every
non-crowd person box counts, with or without keypoints), prints the table and the ms per
image, and ends with one line `AP=<value>`. The detector keeps up to EVAL_TOP_K boxes per
image down to EVAL_SCORE_THRESHOLD, as COCO box AP expects (the pipelines' defaults,
person_detector.TOP_K and SCORE_THRESHOLD, trade recall for fewer crops).
"""
import sys

from .eval import PERSON_CATEGORY, coco_eval_parser, run_coco_eval, run_eval_command

EVAL_TOP_K = 100
EVAL_SCORE_THRESHOLD = 0.01


def boxes_to_coco_results(boxes, scores, image_id):
    """COCO bbox result records (x, y, w, h) of one image's boxes."""
    return [{"image_id": int(image_id), "category_id": PERSON_CATEGORY,
             "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2), round(float(y2 - y1), 2)],
             "score": round(float(s), 5)}
            for (x1, y1, x2, y2), s in zip(boxes, scores)]


def evaluate_detector(detector, ann_file, image_dir, limit=None, progress=True, results_file=None):
    """Run `detector` (frame -> boxes, scores) on the annotated images; COCOeval "bbox".

    Returns {"AP", "AP50", "AP75", "APm", "APl", "AR", "stats", "images", "seconds",
    "ms_per_image", "table"}."""
    return run_coco_eval(lambda frame, image_id: boxes_to_coco_results(*detector(frame), image_id),
                         ann_file, image_dir, limit, progress, results_file, iou_type="bbox")


def main(argv=None):
    from .registry import DEFAULT_DETECTOR, load_detector

    parser = coco_eval_parser("python -m pose_core.eval_detector", __doc__, DEFAULT_DETECTOR,
                              "longer input side (default: the model's)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    def evaluate_in(image_dir):
        detector = load_detector(args.model, args.backend, args.height, args.weights, args.threads, args.precision,
                                 top_k=EVAL_TOP_K, score_threshold=EVAL_SCORE_THRESHOLD)
        return evaluate_detector(detector, args.ann, image_dir, args.limit, results_file=args.results)

    return run_eval_command(args, evaluate_in)


if __name__ == "__main__":
    sys.exit(main())
