"""Quantise a registered network to int8 (ONNX Runtime static quantisation, QDQ), and time it.

    python tools/quantize_onnx.py --model ldlc-openpose-t6-fast [--weights W.onnx] [--out W.int8.onnx]
                                  [--work-dir out/int8] [--images 150] [--method minmax|entropy|percentile]
                                  [--keep-float REGEX ...] [--bench RUNS]

Writes WORK_DIR/NAME.fp32.onnx (the registered file as a float32 graph of the same function,
pose_core.quantize.prepare_fp32, which the int8 file is quantised from) and the int8 file
(--out; default: the model's registered int8 file in weights/, else WORK_DIR/NAME.int8.onnx),
calibrated on --images images of ../shared/data/coco_person_train (never the evaluation
set) preprocessed by the model's own pipeline. --keep-float (node-name regular
expressions; default: quantize.KEEP_FLOAT's for the model, none given = all int8) leaves
nodes in float32. --bench RUNS times the source file (the one the app runs now) and the
int8 file, interleaved, ONNX Runtime as the app sets it up (backends.OnnxRunner), on the
input the model's pipeline makes from the first frame of the bundled 640x480 clip (4 person
crops for a top-down model); it prints the median milliseconds of each and their ratio.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pose_core import quantize  # noqa: E402
from pose_core.backends import OnnxRunner  # noqa: E402
from pose_core.errors import PoseError  # noqa: E402
from pose_core.registry import MODELS, REPO_ROOT, get_spec  # noqa: E402

CLIP = REPO_ROOT / "assets" / "vtest_people.mp4"
BENCH_CROPS = 4
WARMUP_RUNS = 5


def bench_input(spec, frame):
    """The network input the model's pipeline makes from `frame`; a top-down model's is
    BENCH_CROPS crops of people-sized boxes side by side."""
    h, w = frame.shape[:2]
    x = np.linspace(0, w, BENCH_CROPS + 1)
    boxes = np.stack([x[:-1], np.full(BENCH_CROPS, h * 0.2), x[1:], np.full(BENCH_CROPS, h * 0.9)], axis=1)
    return quantize.pipeline_preprocess(spec, None)(frame, boxes.astype(np.float32))


def interleaved_median_ms(runners, batch, runs):
    """Median ms per call of each runner, the runners called in turn `runs` times."""
    for runner in runners:
        for _ in range(WARMUP_RUNS):
            runner(batch)
    times = [[] for _ in runners]
    for _ in range(runs):
        for runner, spent in zip(runners, times):
            start = time.perf_counter()
            runner(batch)
            spent.append(time.perf_counter() - start)
    return [1000 * statistics.median(spent) for spent in times]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ours = sorted(name for name, spec in MODELS.items() if spec.build)  # not the MoveNet teachers
    parser.add_argument("--model", required=True, choices=ours)
    parser.add_argument("--weights", type=Path, help="ONNX file to quantise (default: the registered one)")
    parser.add_argument("--out", type=Path, help="the int8 file (default: the registered one)")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "out" / "int8")
    parser.add_argument("--images", type=int, help="calibration images (default: the measured choice for "
                                                   f"the model, else {quantize.DEFAULT_CALIBRATION[0]})")
    parser.add_argument("--method", choices=("minmax", "entropy", "percentile"),
                        help=f"default: the measured choice for the model, else {quantize.DEFAULT_CALIBRATION[1]}")
    parser.add_argument("--keep-float", nargs="*", metavar="REGEX",
                        help="node names left in float32 (default: the measured choice for the model)")
    parser.add_argument("--bench", type=int, metavar="RUNS",
                        help="time the source and the int8 file, RUNS calls each")
    args = parser.parse_args(argv)
    try:
        spec = get_spec(args.model)
        keep_float = quantize.KEEP_FLOAT.get(spec.name, ()) if args.keep_float is None else args.keep_float
        images, method = quantize.CALIBRATION.get(spec.name, quantize.DEFAULT_CALIBRATION)
        images, method = args.images or images, args.method or method
        source = args.weights or spec.onnx_path
        if not Path(source).is_file():
            raise PoseError(f"weights file not found: {source}")
        args.work_dir.mkdir(parents=True, exist_ok=True)
        out = args.out or spec.int8_path or args.work_dir / f"{spec.name}.int8.onnx"
        fp32 = quantize.prepare_fp32(source, args.work_dir / f"{spec.name}.fp32.onnx")
        start = time.perf_counter()
        batches = quantize.calibration_batches(spec, count=images)
        int8 = quantize.quantize(fp32, out, batches, keep_float, method)
        print(f"wrote {fp32} and {int8} ({len(batches)} calibration images, {method}, "
              f"float32 kept: {', '.join(keep_float) or 'nothing'}; {time.perf_counter() - start:.0f} s)")
        if args.bench:
            capture = cv2.VideoCapture(str(CLIP))
            ok, frame = capture.read()
            capture.release()
            if not ok:
                raise PoseError(f"cannot read a frame of {CLIP}")
            batch = bench_input(spec, frame)
            source_ms, int8_ms = interleaved_median_ms([OnnxRunner(source), OnnxRunner(int8)], batch, args.bench)
            print(f"input {'x'.join(map(str, batch.shape))}: {source.name} {source_ms:.1f} ms, "
                  f"int8 {int8_ms:.1f} ms, int8/source {int8_ms / source_ms:.2f} "
                  f"(medians of {args.bench} interleaved runs)")
    except PoseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
