"""Per-stage benchmark of the command line's own frame loop.

    python -m pose_core.bench [--model NAME ...] [--backend onnx torch] [--video assets/vtest_people.mp4]
                              [--height 256] [--frames N] [--threads N] [--weights PATH] [--json OUT]

For each model and backend: mean milliseconds per frame of decode, preprocess, network,
grouping, tracking, smoothing, draw and encode, and the end-to-end FPS of the loop. It runs
pose_core.cli's FrameProcessor and process_stream with an annotated video being written,
so the numbers are those of `main.py --video`.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

from . import registry
from .backends import BACKENDS, default_threads
from .cli import FrameProcessor, process_stream
from .errors import PoseError
from .video import SafeVideoWriter, open_video

DEFAULT_VIDEO = registry.REPO_ROOT / "assets" / "vtest_people.mp4"
WARMUP_FRAMES = 3  # first runs allocate memory and pick kernels


def benchmark(model, backend, video, frames, height=None, threads=None, weights=None, track=True, smooth=True):
    """One result dict: mean ms per frame per stage, end-to-end fps, people per frame."""
    pipeline = registry.load_pipeline(model, backend, height, weights=weights, threads=threads)
    with open_video(video) as reader:
        process_stream(reader, FrameProcessor(pipeline, track, smooth), max_frames=WARMUP_FRAMES)
    with open_video(video) as reader, tempfile.TemporaryDirectory() as tmp:
        writer = SafeVideoWriter(Path(tmp) / "bench.mp4", reader.fps, reader.size)
        try:
            stats = process_stream(reader, FrameProcessor(pipeline, track, smooth), writer, max_frames=frames)
        finally:
            writer.abort()
        size = reader.size
    return {
        "model": model, "backend": backend, "threads": _threads(backend, threads),
        "input_height": height or registry.get_spec(model).input_height,
        "video": str(video), "video_size": list(size), "frames": stats.frames,
        "ms_per_frame": {stage: round(ms, 3) for stage, ms in stats.mean_ms().items()},
        "fps": round(stats.fps, 2), "people_per_frame": round(stats.people / max(stats.frames, 1), 2),
    }


def _threads(backend, threads):
    if threads:
        return threads
    if backend == "torch":
        import torch
        return torch.get_num_threads()
    return default_threads()


def format_result(r):
    lines = [f"{r['model']}  backend {r['backend']}  threads {r['threads']}  input height {r['input_height']}  "
             f"{Path(r['video']).name} {r['video_size'][0]}x{r['video_size'][1]}  frames {r['frames']}",
             f"  {'stage':<12}{'ms/frame':>10}"]
    lines += [f"  {stage:<12}{ms:>10.2f}" for stage, ms in r["ms_per_frame"].items()]
    lines += [f"  {'sum':<12}{sum(r['ms_per_frame'].values()):>10.2f}",
              f"  end-to-end {r['fps']:.1f} fps, {r['people_per_frame']:.2f} people/frame"]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", help="default: every model whose weights are present")
    p.add_argument("--backend", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    p.add_argument("--height", type=int, help="network input height (default: each model's)")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    p.add_argument("--weights", help="weights file for a single --model and --backend (e.g. an untrained export)")
    p.add_argument("--no-track", action="store_true")
    p.add_argument("--no-smooth", action="store_true")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    args = p.parse_args(argv)
    try:
        if args.weights and (not args.model or len(args.model) != 1 or len(args.backend) != 1):
            raise PoseError("--weights needs exactly one --model and one --backend")
        jobs = [(m, b) for m in (args.model or registry.MODELS) for b in args.backend]
        results = []
        for model, backend in jobs:
            status = "ready" if args.weights else registry.weights_status(registry.get_spec(model), backend)
            if status != "ready":
                print(f"{model}  backend {backend}: skipped, {status}\n")
                continue
            result = benchmark(model, backend, args.video, args.frames, args.height, args.threads, args.weights,
                               not args.no_track, not args.no_smooth)
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
