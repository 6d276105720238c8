"""Issue 8's comparison: a bottom-up model against MoveNet MultiPose at the same input sizes.

    python tools/compare_multipose.py [--model ldlc-openpose-fpn] [--sizes 256 352 416]
                                      [--rounds 4] [--frames 100] [--video assets/vtest_people.mp4]
                                      [--ann ../shared/data/coco_val_dev/person_keypoints.json]
                                      [--json OUT]

MultiPose sizes a frame by its longer side; the model runs with `--longer-side` the same, so
both networks see the same pixels (on the 640x480 clip both pad 352 to 352x288). For each
size: AP on the annotation file (pose_core.eval, the model at its default int8 precision),
and the end-to-end frames/s of pose_core.bench's frame loop on the clip, the two models
back to back `--rounds` times, in alternating order, so that a change in the machine's speed
hits both (the table gives the medians, and the geometric mean of the rounds' ratios). Needs
MultiPose converted into cache/teacher (tools/convert_movenet_teacher.py). "met" is issue 8's
condition: at least 1.3x MultiPose's frame rate at an AP no lower than its own.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pose_core import registry  # noqa: E402
from pose_core.bench import DEFAULT_VIDEO, benchmark  # noqa: E402
from pose_core.errors import PoseError  # noqa: E402
from pose_core.eval import DEFAULT_ANN, evaluate  # noqa: E402

MULTIPOSE = "movenet-multipose"
REQUIRED_SPEEDUP = 1.3


def sized(model, size):
    """(height, load_pipeline options) that give `model` an input whose longer side is `size`:
    MultiPose's height is its longer side; ours takes --longer-side."""
    if model == MULTIPOSE:
        return size, {}
    return None, registry.bottom_up_options([model], longer_side=size)


def average_precision(model, size, ann):
    height, options = sized(model, size)
    pipeline = registry.load_pipeline(model, height=height, **options)
    return evaluate(pipeline, ann, Path(ann).parent / "images", progress=False)["AP"]


def frames_per_second(model, size, video, frames):
    height, options = sized(model, size)
    return benchmark(model, "onnx", video, frames, height, options=options)["fps"]


def compare(model, sizes, rounds, frames, video, ann, log=print):
    rows = []
    for size in sizes:
        ap = {name: average_precision(name, size, ann) for name in (model, MULTIPOSE)}
        fps = {model: [], MULTIPOSE: []}
        for round_ in range(rounds):
            # Back to back, first one then the other first: over an even number of rounds the
            # geometric mean of the rounds' ratios cancels a steady drift in the machine's speed
            # (this one's can change by 40% within minutes).
            for name in (model, MULTIPOSE) if round_ % 2 == 0 else (MULTIPOSE, model):
                fps[name].append(frames_per_second(name, size, video, frames))
        median = {name: statistics.median(values) for name, values in fps.items()}
        ratio = statistics.geometric_mean([a / b for a, b in zip(fps[model], fps[MULTIPOSE])])
        row = {"size": size, "ap": ap, "fps": fps, "fps_median": median, "ratio": round(ratio, 3),
               "met": ratio >= REQUIRED_SPEEDUP and ap[model] >= ap[MULTIPOSE]}
        rows.append(row)
        log(format_row(row, model))
    return rows


def format_row(row, model):
    ap, fps = row["ap"], row["fps_median"]
    return (f"{row['size']:>5}  {ap[model]:>6.3f}  {ap[MULTIPOSE]:>9.3f}  {fps[model]:>8.1f}  {fps[MULTIPOSE]:>10.1f}  "
            f"{row['ratio']:>5.2f}x  {'yes' if row['met'] else 'no'}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=registry.DEFAULT_MODEL)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 288, 320, 352, 384, 416, 448, 512])
    p.add_argument("--rounds", type=int, default=4, help="even: a steady drift in speed cancels out")
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--video", default=str(DEFAULT_VIDEO))
    p.add_argument("--ann", default=str(DEFAULT_ANN))
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    try:
        print(f"{args.model} (--longer-side N, int8) against {MULTIPOSE} (N), AP on {args.ann}, "
              f"frames/s on {Path(args.video).name} (median of {args.rounds})")
        print(f"{'N':>5}  {'AP':>6}  {'MultiPose':>9}  {'frames/s':>8}  {'MultiPose':>10}  {'ratio':>6}  met")
        rows = compare(args.model, args.sizes, args.rounds, args.frames, args.video, args.ann)
    except PoseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
