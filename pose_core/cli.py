"""Command line: annotate videos, an image or a camera; export keypoints; list the models.

`FrameProcessor` and `process_stream` are the per-frame work and the frame loop; the
benchmark (pose_core.bench) times these same functions.
"""
import argparse
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from . import registry
from .backends import BACKENDS
from .draw import draw_people
from .errors import InputError, PoseError
from .keypoint_export import open_keypoint_writer
from .result import min_person_score_of
from .smoothing import PoseSmoother
from .tracking import PoseTracker
from .video import (VIDEO_CODECS, VIDEO_EXTENSIONS, SafeVideoWriter, open_camera, open_video, prepare_output,
                    read_image, safe_write_image)

DEFAULT_OUT_DIR = Path("out")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# The annotated video is encoded on its own thread, up to this many frames behind the frame
# loop: ldlc-openpose-fpn's loop on the bundled clip ran at 82.6-84.4 frames/s instead of
# 80.5-80.7 (README, "Speed").
WRITE_BEHIND_FRAMES = 4
# Summary order. Pipelines report detect (top-down), preprocess, network and grouping
# (PAF grouping, or heatmap decoding in top-down pipelines) themselves. With the decode-ahead
# reader and the write-behind writer, decode and encode are the loop's waits for their threads.
STAGES = ("decode", "detect", "preprocess", "network", "grouping", "tracking", "smoothing", "draw", "encode",
          "export")


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        # Usage mistakes are user errors like any other: one line, exit code 2.
        raise PoseError(f"{message} (see --help)")


def build_parser():
    p = _ArgumentParser(
        prog="main.py", description="Multi-person pose estimation on videos, images or a camera. "
                                    "Without arguments main.py starts the GUI.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", nargs="+", metavar="IN",
                        help="video files or folders of videos; one annotated video per input")
    source.add_argument("--image", metavar="IN", help="an image file")
    source.add_argument("--camera", type=int, metavar="N", help="camera index; stop with Ctrl-C")
    source.add_argument("--list-models", action="store_true", help="print: name, kind, weights status")
    p.add_argument("--out", metavar="OUT",
                   help="annotated output: a file for one input, else a folder (default: out/NAME_pose.mp4 "
                        "or .png; with --json/--csv and no --out no video is written; camera: only with --out)")
    p.add_argument("--json", metavar="OUT.json", help="export keypoints as JSON (a folder for several inputs)")
    p.add_argument("--csv", metavar="OUT.csv", help="export keypoints as CSV (a folder for several inputs)")
    p.add_argument("--model", default=registry.DEFAULT_MODEL, help=f"default {registry.DEFAULT_MODEL}")
    p.add_argument("--weights", metavar="PATH", help="use this weights file instead of the registered one")
    p.add_argument("--backend", choices=BACKENDS, default="onnx")
    registry.add_precision_argument(p)
    p.add_argument("--height", type=int, metavar="H", help="network input height (default: the model's)")
    p.add_argument("--threads", type=int, metavar="N", help="inference threads (default: all cores)")
    p.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=None,
                   help="also run the mirrored frame and average: more accurate, twice the network "
                        "time (default: the model's; off for bottom-up models)")
    registry.add_bottom_up_arguments(p)
    p.add_argument("--detector", metavar="NAME",
                   help="top-down models: the person detector, a registered detector or bottom-up model "
                        f"(default: {registry.DEFAULT_DETECTOR} when its weights exist, else {registry.DEFAULT_MODEL})")
    p.add_argument("--threshold", type=float, default=0.2, help="draw keypoints above this score (default 0.2)")
    p.add_argument("--min-person-score", type=float, default=None, metavar="S",
                   help="leave out people scored below S: drawing, ids and exports (default: the model's: "
                        "0.005 for ldlc-openpose-fpn, whose person scores are weighted by size and keypoint "
                        "heat, 0.05 for the other bottom-up models, weighted by size, else 0.1)")
    p.add_argument("--no-track", action="store_true", help="no person ids across frames (also disables smoothing)")
    p.add_argument("--no-smooth", action="store_true", help="no keypoint smoothing across frames")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    return p


def main(argv=None):
    """Run the command line; returns the exit code. User errors print one line to stderr."""
    try:
        args = build_parser().parse_args(argv)
        _check_numbers(args)
        if args.list_models:
            return list_models(args.backend)
        if args.video:
            return run_videos(args)
        if args.image:
            return run_image(args)
        return run_camera(args)
    except PoseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; unfinished outputs were removed", file=sys.stderr)
        return 130


def _check_numbers(args):
    if args.height is not None and not 32 <= args.height <= 2048:
        raise PoseError("--height must be between 32 and 2048")
    if args.threads is not None and args.threads < 1:
        raise PoseError("--threads must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise PoseError("--max-frames must be at least 1")
    if args.min_person_score is not None and not 0 <= args.min_person_score <= 1:
        raise PoseError("--min-person-score must be between 0 and 1")


def list_models(backend):
    for spec in registry.MODELS.values():
        print(f"{spec.name}\t{spec.kind}\t{registry.weights_status(spec, backend)}")
    return 0


# ---------------------------------------------------------------- per frame and frame loop


class FrameProcessor:
    """Pose, tracking, smoothing and drawing for one frame after another of one source."""

    def __init__(self, pipeline, track=True, smooth=True, min_score=0.2, min_person_score=None):
        self.pipeline = pipeline
        self.min_score = min_score
        self.min_person_score = min_person_score  # None: the pipeline's own, read after each frame
        self.tracker = PoseTracker() if track else None
        self.smoother = PoseSmoother() if track and smooth else None  # it follows track ids

    def __call__(self, frame, time_s):
        """People of BGR `frame`, which is annotated in place; `people.timings` gains our stages."""
        people = self.pipeline(frame)
        people = people.confident(min_person_score_of(self.pipeline) if self.min_person_score is None
                                  else self.min_person_score)
        timings = dict(people.timings)
        for stage, follower in (("tracking", self.tracker), ("smoothing", self.smoother)):
            if follower is not None:
                start = time.perf_counter()
                people = follower.update(people, time_s)
                timings[stage] = time.perf_counter() - start
        start = time.perf_counter()
        draw_people(frame, people, self.min_score)
        timings["draw"] = time.perf_counter() - start
        people.timings = timings
        return people


@dataclass
class RunStats:
    frames: int = 0
    people: int = 0
    seconds: float = 0.0                                  # wall time of the whole loop
    stage_seconds: dict = field(default_factory=dict)

    def add(self, timings, people):
        self.frames += 1
        self.people += people
        for stage, seconds in timings.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    @property
    def fps(self):
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def mean_ms(self):
        """Stage -> mean milliseconds per frame, in STAGES order (unknown stages last)."""
        order = sorted(self.stage_seconds, key=lambda s: STAGES.index(s) if s in STAGES else len(STAGES))
        return {s: 1000 * self.stage_seconds[s] / max(self.frames, 1) for s in order}

    def summary(self):
        stages = " | ".join(f"{s} {ms:.1f}" for s, ms in self.mean_ms().items())
        return (f"frames {self.frames}, mean people/frame {self.people / max(self.frames, 1):.2f}, "
                f"mean {self.fps:.1f} fps end to end\nms/frame: {stages}")


def process_stream(reader, processor, video_writer=None, keypoint_writers=(), max_frames=None,
                   progress=None, live=False):
    """Run `processor` over the frames of `reader`, writing the annotated video and keypoints.

    live: a camera; frame times are seconds since the start and Ctrl-C ends the run normally.
    """
    stats = RunStats()
    frames = iter(reader)
    start = time.perf_counter()
    try:
        while max_frames is None or stats.frames < max_frames:
            tick = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                break
            # With a decode-ahead reader this is the wait for a frame, not the whole decode.
            timings = {"decode": time.perf_counter() - tick}
            time_s = tick - start if live else stats.frames / reader.fps
            people = processor(frame, time_s)
            timings.update(people.timings)
            if video_writer is not None:
                tick = time.perf_counter()
                video_writer.write(frame)
                timings["encode"] = time.perf_counter() - tick
            if keypoint_writers:
                tick = time.perf_counter()
                for writer in keypoint_writers:
                    writer.write(stats.frames, time_s, people)
                timings["export"] = time.perf_counter() - tick
            stats.add(timings, len(people))
            if progress is not None:
                progress.update()
        if video_writer is not None:
            video_writer.flush()  # a write-behind encoder's last frames count in the run's time
    except KeyboardInterrupt:
        if not live:
            raise
    stats.seconds = time.perf_counter() - start
    return stats


# ---------------------------------------------------------------- commands


def load_pipeline(args):
    options = {} if args.flip_test is None else {"flip_test": args.flip_test}
    if args.detector:
        spec = registry.get_spec(args.model)
        if spec.kind != "top-down" or spec.layout == "movenet":
            raise PoseError(f"--detector is for the top-down models; {args.model} does not take a person detector")
        options["detector"] = args.detector
    options.update(registry.bottom_up_options([args.model], args.multi_scale, args.zoom, args.longer_side))
    return registry.load_pipeline(args.model, args.backend, args.height, weights=args.weights,
                                  threads=args.threads, precision=args.precision, **options)


def make_processor(pipeline, args):
    return FrameProcessor(pipeline, track=not args.no_track, smooth=not args.no_smooth,
                          min_score=args.threshold, min_person_score=args.min_person_score)


def run_videos(args):
    inputs = collect_videos(args.video)
    several = len(inputs) > 1 or any(Path(v).is_dir() for v in args.video)
    jobs = [(source, _outputs(args, source, several, ".mp4")) for source in inputs]
    _check_outputs(jobs, tuple(VIDEO_CODECS))
    pipeline, failures = None, 0
    for source, outputs in jobs:
        try:
            with open_video(source) as reader:
                if pipeline is None:  # after the first input opens: a bad input fails fast
                    pipeline = load_pipeline(args)
                stats = _annotate(reader, make_processor(pipeline, args), outputs, args)
        except InputError as e:
            if not several:
                raise
            print(f"error: {e}", file=sys.stderr)
            failures += 1
            continue
        _report(args, source, outputs, stats)
    return 2 if failures else 0


def run_image(args):
    image = read_image(args.image)
    outputs = _outputs(args, args.image, False, ".png")
    _check_outputs([(args.image, outputs)], IMAGE_SUFFIXES)
    processor = make_processor(load_pipeline(args), args)
    with ExitStack() as stack:
        exports = _open_exports(stack, outputs, _source_info(args, args.image, 0.0, image.shape[1::-1], 1))
        people = processor(image, 0.0)
        for writer in exports:
            writer.write(0, 0.0, people)
        if outputs["annotated"] is not None:
            safe_write_image(outputs["annotated"], image)
    if not args.quiet:
        print(f"{args.image}: {len(people)} people -> {_written(outputs)}")
    return 0


def run_camera(args):
    outputs = _outputs(args, f"camera{args.camera}", False, ".mp4", default_annotated=False)
    _check_outputs([(f"camera{args.camera}", outputs)], tuple(VIDEO_CODECS))
    with open_camera(args.camera) as reader:
        processor = make_processor(load_pipeline(args), args)
        if not args.quiet:
            print(f"camera {args.camera}: {reader.size[0]}x{reader.size[1]}; stop with Ctrl-C", file=sys.stderr)
        stats = _annotate(reader, processor, outputs, args, live=True)
    _report(args, f"camera {args.camera}", outputs, stats)
    return 0


def _annotate(reader, processor, outputs, args, live=False):
    """Run one source into its outputs; every output is published only if the run completes."""
    total = min(filter(None, (reader.frame_count, args.max_frames)), default=None)
    info = _source_info(args, reader.source, reader.fps, reader.size, reader.frame_count)
    with ExitStack() as stack:
        # The bar before the outputs: a Ctrl-C inside tqdm's constructor leaves a half-built bar
        # whose __del__ prints a traceback; built first, no interrupt once the outputs exist lands there.
        progress = stack.enter_context(tqdm(total=total, unit="frame", disable=args.quiet, file=sys.stderr,
                                            dynamic_ncols=True, leave=False))
        writer = None
        if outputs["annotated"] is not None:
            writer = stack.enter_context(SafeVideoWriter(outputs["annotated"], reader.fps, reader.size,
                                                         write_behind=WRITE_BEHIND_FRAMES))
        exports = _open_exports(stack, outputs, info)
        return process_stream(reader, processor, writer, exports, args.max_frames, progress, live)


def _open_exports(stack, outputs, info):
    writers = []
    for key in ("json", "csv"):
        if outputs[key] is not None:
            writers.append(stack.enter_context(open_keypoint_writer(prepare_output(outputs[key]), info)))
    return writers


def _source_info(args, source, fps, size, frame_count):
    return {"path": str(source), "fps": fps, "width": int(size[0]), "height": int(size[1]),
            "frame_count": frame_count, "model": args.model, "backend": args.backend,
            "weights": args.weights}


def _report(args, source, outputs, stats):
    if not args.quiet:
        print(f"{source} -> {_written(outputs)}\n{stats.summary()}")


def _written(outputs):
    return ", ".join(str(p) for p in outputs.values() if p is not None) or "(no output)"


# ---------------------------------------------------------------- inputs and output names


def collect_videos(paths):
    """Video files from files and folders (a folder's videos in name order)."""
    videos = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise InputError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in folder {path}")
            videos += found
        elif path.is_file():
            videos.append(path)
        else:
            raise InputError(f"video not found: {path}")
    return videos


def _outputs(args, source, several, media_suffix, default_annotated=True):
    """{'annotated', 'json', 'csv'} -> output path or None, for one input."""
    stem = Path(source).stem
    annotated = None
    if args.out is not None:
        annotated = _output_path(args.out, f"{stem}_pose{media_suffix}", several, "--out")
    elif default_annotated and not (args.json or args.csv):
        annotated = DEFAULT_OUT_DIR / f"{stem}_pose{media_suffix}"
    return {
        "annotated": annotated,
        "json": None if args.json is None else _output_path(args.json, f"{stem}.json", several, "--json"),
        "csv": None if args.csv is None else _output_path(args.csv, f"{stem}.csv", several, "--csv"),
    }


def _output_path(given, name_in_folder, several, option):
    """`given` itself when it names a file (it has a suffix), else `name_in_folder` inside it."""
    path = Path(given)
    if not path.suffix or path.is_dir():
        return path / name_in_folder
    if several:
        raise PoseError(f"with several inputs {option} must be a folder, not {path}")
    return path


def _check_outputs(jobs, media_suffixes):
    """Fail before any work on outputs that cannot be written or would clobber something."""
    seen = set()
    for source, outputs in jobs:
        for key, path in outputs.items():
            if path is None:
                continue
            allowed = media_suffixes if key == "annotated" else (f".{key}",)
            if path.suffix.lower() not in allowed:
                raise PoseError(f"cannot write {path}: use {' or '.join(allowed)}")
            resolved = path.resolve()
            if resolved == Path(source).resolve():
                raise PoseError(f"output {path} would overwrite its input")
            if resolved in seen:
                raise PoseError(f"two inputs would write the same output {path}; give them different names")
            seen.add(resolved)
