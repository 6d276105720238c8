"""Per-stage benchmark of the command line's own frame loop.

    python -m pose_core.bench [--model NAME ...] [--backend onnx torch] [--video assets/vtest_people.mp4]
                              [--people N ...] [--height 256] [--frames N] [--threads N]
                              [--weights PATH] [--json OUT]

For each model and backend: mean milliseconds per frame of decode, preprocess, network,
grouping, tracking, smoothing, draw and encode, and the end-to-end FPS of the loop. It runs
pose_core.cli's FrameProcessor and process_stream with an annotated video being written,
so the numbers are those of `main.py --video`.

--people 1 3 10 runs each model on generated 640x480 clips instead of --video, with that
many copies of the left player of assets/basketball.png swaying side to side on a plain
background: how the cost grows with the number of people (a top-down model runs its
network once per person; the table adds network ms per person found).
"""
import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from . import registry
from .backends import BACKENDS, default_threads
from .cli import WRITE_BEHIND_FRAMES, FrameProcessor, process_stream
from .errors import PoseError
from .video import SafeVideoWriter, open_video

DEFAULT_VIDEO = registry.REPO_ROOT / "assets" / "vtest_people.mp4"
WARMUP_FRAMES = 3  # first runs allocate memory and pick kernels
PLAYER_IMAGE = registry.REPO_ROOT / "assets" / "basketball.png"
PLAYER_BOX = (20, 70, 195, 480)    # x1, y1, x2, y2 of the left player, head to feet
CLIP_SIZE = (640, 480)
CLIP_FPS = 10.0
BACKGROUND_BGR = (150, 150, 150)
SWAY_PIXELS, SWAY_PERIOD_FRAMES = 12, 40


def write_people_clip(path, people, frames):
    """A CLIP_SIZE clip of `people` copies of the player in a grid (at most 5 a row), each
    swaying sideways with its own phase, so that trackers and detectors see motion."""
    x1, y1, x2, y2 = PLAYER_BOX
    player = cv2.imread(str(PLAYER_IMAGE), cv2.IMREAD_COLOR)[y1:y2, x1:x2]
    width, height = CLIP_SIZE
    columns = min(people, 5)
    rows = math.ceil(people / columns)
    cell_w, cell_h = width / columns, height / rows
    scale = min(0.9 * cell_h / player.shape[0], 0.8 * cell_w / player.shape[1])
    player = cv2.resize(player, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ph, pw = player.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), CLIP_FPS, CLIP_SIZE)
    for t in range(frames):
        frame = np.full((height, width, 3), BACKGROUND_BGR, np.uint8)
        for i in range(people):
            sway = SWAY_PIXELS * math.sin(2 * math.pi * t / SWAY_PERIOD_FRAMES + i)
            left = int(np.clip((i % columns + 0.5) * cell_w - pw / 2 + sway, 0, width - pw))
            top = int((i // columns + 0.5) * cell_h - ph / 2)
            frame[top:top + ph, left:left + pw] = player
        writer.write(frame)
    writer.release()


def benchmark(model, backend, video, frames, height=None, threads=None, weights=None, track=True, smooth=True,
              precision=registry.DEFAULT_PRECISION, options=None, write_behind=WRITE_BEHIND_FRAMES):
    """One result dict: mean ms per frame per stage, end-to-end fps, people per frame;
    `options`: a bottom-up model's registry.bottom_up_options; `write_behind`: the frames the
    video encoder's thread may lag (0: encoding in the loop)."""
    options = options or {}
    pipeline = registry.load_pipeline(model, backend, height, weights=weights, threads=threads, precision=precision,
                                      **options)
    with open_video(video) as reader:
        process_stream(reader, FrameProcessor(pipeline, track, smooth), max_frames=WARMUP_FRAMES)
    with open_video(video) as reader, tempfile.TemporaryDirectory() as tmp:
        writer = SafeVideoWriter(Path(tmp) / "bench.mp4", reader.fps, reader.size, write_behind=write_behind)
        try:
            stats = process_stream(reader, FrameProcessor(pipeline, track, smooth), writer, max_frames=frames)
        finally:
            writer.abort()
        size = reader.size
        threads_ms = {"decode": 1000 * reader.decode_seconds / max(reader.frames_decoded, 1),
                      "encode": 1000 * writer.encode_seconds / max(writer.frames, 1)}
    return {
        "model": model, "backend": backend, "threads": _threads(backend, threads),
        "precision": _precision(model, backend, weights, precision),
        "input_height": height or registry.get_spec(model).input_height,
        "longer_side": options.get("longer_side"),
        "extra_heights": list(options.get("extra_heights", ())), "zoom": options.get("zoom"),
        "video": str(video), "video_size": list(size), "frames": stats.frames,
        "write_behind": write_behind,
        "ms_per_frame": {stage: round(ms, 3) for stage, ms in stats.mean_ms().items()},
        "thread_ms_per_frame": {stage: round(ms, 3) for stage, ms in threads_ms.items()},
        "fps": round(stats.fps, 2), "people_per_frame": round(stats.people / max(stats.frames, 1), 2),
    }


def _precision(model, backend, weights, precision):
    """What the network ran at: int8 only for ONNX Runtime on a model's registered int8 file."""
    spec = registry.get_spec(model)
    if backend == "onnx" and weights is None and registry.onnx_weights(spec, precision) == spec.int8_path:
        return "int8"
    return "fp32"


def _threads(backend, threads):
    if threads:
        return threads
    if backend == "torch":
        import torch
        return torch.get_num_threads()
    return default_threads()


def format_result(r):
    size = f"longer side {r['longer_side']}" if r.get("longer_side") else f"height {r['input_height']}"
    lines = [f"{r['model']}  backend {r['backend']} {r['precision']}  threads {r['threads']}  input {size}"
             + (f" + {', '.join(map(str, r['extra_heights']))}" if r.get("extra_heights") else "")
             + (f" zoom {r['zoom']:g}" if r.get("zoom") else "") + "  "
             f"{Path(r['video']).name} {r['video_size'][0]}x{r['video_size'][1]}  frames {r['frames']}",
             f"  {'stage':<12}{'ms/frame':>10}"]
    lines += [f"  {stage:<12}{ms:>10.2f}" for stage, ms in r["ms_per_frame"].items()]
    lines += [f"  {'sum':<12}{sum(r['ms_per_frame'].values()):>10.2f}",
              f"  end-to-end {r['fps']:.1f} fps, {r['people_per_frame']:.2f} people/frame"]
    if r.get("thread_ms_per_frame"):
        spent = ", ".join(f"{ms:.2f} ms/frame {stage}" for stage, ms in r["thread_ms_per_frame"].items())
        lines.append(f"  decode and encode are the waits for their own threads, which spent {spent}")
    if r.get("network_ms_per_person") is not None:
        lines.append(f"  network {r['network_ms_per_person']:.2f} ms per person found")
    return "\n".join(lines)


def network_ms_per_person(result):
    """A top-down model's network milliseconds per person found (None for other kinds)."""
    if registry.get_spec(result["model"]).kind != "top-down" or not result["people_per_frame"]:
        return None
    return round(result["ms_per_frame"].get("network", 0.0) / result["people_per_frame"], 3)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", help="default: every model whose weights are present")
    p.add_argument("--backend", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    p.add_argument("--people", type=int, nargs="+", metavar="N",
                   help="instead of --video: generated clips with N people each (e.g. 1 3 10)")
    p.add_argument("--height", type=int, help="network input height (default: each model's)")
    registry.add_bottom_up_arguments(p)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    registry.add_precision_argument(p)
    p.add_argument("--weights", help="weights file for a single --model and --backend (e.g. an untrained export)")
    p.add_argument("--no-track", action="store_true")
    p.add_argument("--no-smooth", action="store_true")
    p.add_argument("--write-behind", type=int, default=WRITE_BEHIND_FRAMES, metavar="N",
                   help=f"frames the video encoder's thread may lag behind the loop (default {WRITE_BEHIND_FRAMES}, "
                        "as main.py; 0: encode in the loop)")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    args = p.parse_args(argv)
    try:
        if args.weights and (not args.model or len(args.model) != 1 or len(args.backend) != 1):
            raise PoseError("--weights needs exactly one --model and one --backend")
        options = registry.bottom_up_options(args.model or registry.MODELS, args.multi_scale, args.zoom,
                                             args.longer_side)
        if args.people and min(args.people) < 1:
            raise PoseError("--people counts must be at least 1")
        if args.write_behind < 0:
            raise PoseError("--write-behind takes 0 or more frames")
        jobs = [(m, b) for m in (args.model or registry.MODELS) for b in args.backend]
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            clips = {None: args.video}
            if args.people:
                clips = {n: Path(tmp) / f"people{n}.mp4" for n in args.people}
                for n, path in clips.items():
                    write_people_clip(path, n, args.frames + WARMUP_FRAMES)
            for people, video in clips.items():
                for model, backend in jobs:
                    status = "ready" if args.weights else registry.weights_status(registry.get_spec(model), backend)
                    if status != "ready":
                        print(f"{model}  backend {backend}: skipped, {status}\n")
                        continue
                    result = benchmark(model, backend, video, args.frames, args.height, args.threads, args.weights,
                                       not args.no_track, not args.no_smooth, args.precision, options,
                                       args.write_behind)
                    if people is not None:
                        result["video"] = f"generated clip, {people} people"
                    result["network_ms_per_person"] = network_ms_per_person(result)
                    results.append(result)
                    print(format_result(result) + "\n", flush=True)
        if not results:
            raise PoseError("nothing was benchmarked: no model has weights for these backends")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    except PoseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
