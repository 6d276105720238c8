"""Bad or unusual inputs: one clear line and a non-zero exit, never a half-written output;
odd but valid inputs work."""
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import CLIP, REPO_ROOT, run_main, video_properties, write_video
from pose_core.cli import main
from pose_core.errors import InputError, PoseError
from pose_core.video import SafeVideoWriter, open_video, read_image, safe_write_image


def files_in(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def assert_one_line_error(returncode, stderr, fragment):
    assert returncode == 2, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert fragment in stderr


def random_bytes(path, n=20000):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def zero_frame_video(path):
    cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48)).release()
    return path


def truncated(source, path):
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    return path


# Each case: (name, function (tmp_path, weights) -> main.py arguments, expected message fragment).
BAD_CASES = [
    ("missing video", lambda t, w: ["--video", t / "missing.mp4"], "video not found"),
    ("corrupt video", lambda t, w: ["--video", random_bytes(t / "random.mp4")], "cannot read video"),
    ("zero-length video", lambda t, w: ["--video", zero_frame_video(t / "empty.avi")], "video has no frames"),
    ("empty folder", lambda t, w: ["--video", t], "no videos"),
    ("missing image", lambda t, w: ["--image", t / "missing.png"], "image not found"),
    ("corrupt image", lambda t, w: ["--image", random_bytes(t / "random.png")], "cannot read image"),
    ("absent camera", lambda t, w: ["--camera", 99], "camera 99 cannot be opened"),
    ("missing weights", lambda t, w: ["--video", CLIP, "--weights", t / "none.onnx"], "weights file not found"),
    ("garbage weights", lambda t, w: ["--video", CLIP, "--weights", random_bytes(t / "bad.onnx")],
     "cannot load ONNX weights"),
    ("truncated weights", lambda t, w: ["--video", CLIP, "--weights", truncated(w.onnx, t / "half.onnx")],
     "cannot load ONNX weights"),
    ("truncated torch weights", lambda t, w: ["--video", CLIP, "--backend", "torch", "--weights",
                                              truncated(w.pt, t / "half.pt")], "cannot read weights"),
    ("uncreatable output folder", lambda t, w: ["--video", CLIP, "--weights", w.onnx, "--out",
                                                random_bytes(t / "a_file") / "sub" / "x.mp4"],
     "cannot create output folder"),
    ("multi-scale on a top-down model", lambda t, w: ["--video", CLIP, "--model", "mnv2-hwloss", "--multi-scale", 512],
     "--multi-scale takes heights"),
    ("multi-scale height out of range", lambda t, w: ["--video", CLIP, "--weights", w.onnx, "--multi-scale", 9000],
     "--multi-scale takes heights"),
    ("zoom on a top-down model", lambda t, w: ["--video", CLIP, "--model", "mnv2-hwloss", "--zoom"],
     "--zoom takes a factor above 1 and up to 4 and is for bottom-up models"),
    ("zoom factor out of range", lambda t, w: ["--video", CLIP, "--weights", w.onnx, "--zoom", 1], "--zoom takes a factor"),
    ("longer side on a top-down model", lambda t, w: ["--video", CLIP, "--model", "mnv2-hwloss", "--longer-side", 352],
     "--longer-side takes a size between 32 and 2048 and is for bottom-up models"),
    ("longer side out of range", lambda t, w: ["--video", CLIP, "--weights", w.onnx, "--longer-side", 8],
     "--longer-side takes a size"),
]


@pytest.mark.parametrize("make_args, fragment", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_input_is_one_line_error_and_leaves_no_output(make_args, fragment, untrained_t6, tmp_path, capfd,
                                                          monkeypatch):
    # In process for speed; capfd also catches what OpenCV, FFmpeg or ONNX Runtime print.
    monkeypatch.chdir(tmp_path)
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    args = make_args(inputs, untrained_t6)
    if "--out" not in args:
        args += ["--out", out / "result.mp4" if "--image" not in args else out / "result.png",
                 "--json", out / "result.json"]
    returncode = main([str(a) for a in args] + ["--max-frames", "2", "--quiet"])
    assert_one_line_error(returncode, capfd.readouterr().err, fragment)
    assert not out.exists() or files_in(out) == []


def test_a_corrupt_video_in_a_real_process_prints_one_line(tmp_path):
    result = run_main("--video", random_bytes(tmp_path / "random.mp4"), "--out", tmp_path / "out.mp4")
    assert_one_line_error(result.returncode, result.stderr, "cannot read video")
    assert files_in(tmp_path) == ["random.mp4"]


def test_one_bad_video_among_several_is_reported_and_the_others_done(untrained_t6, tmp_path):
    good = write_video(tmp_path / "good.mp4")
    bad = random_bytes(tmp_path / "bad.mp4")
    result = run_main("--video", bad, good, "--out", tmp_path / "out", "--quiet", "--weights", untrained_t6.onnx)
    assert_one_line_error(result.returncode, result.stderr, "cannot read video")
    assert files_in(tmp_path / "out") == ["good_pose.mp4"]


@pytest.mark.parametrize("name, image", [
    ("gray", np.full((120, 90), 128, np.uint8)),
    ("bgra", np.dstack([np.full((120, 90, 3), 128, np.uint8), np.full((120, 90), 200, np.uint8)])),
    ("tiny", np.full((17, 33, 3), 128, np.uint8)),
    ("huge", np.tile(np.arange(4000, dtype=np.uint8)[None, :, None], (3000, 1, 3))),
])
def test_unusual_images_work(name, image, untrained_t6, tmp_path):
    source = tmp_path / f"{name}.png"
    cv2.imwrite(str(source), image)
    out = tmp_path / "deeper" / "missing" / "folders" / "out.png"   # output folders are created
    assert main(["--image", str(source), "--out", str(out), "--weights", str(untrained_t6.onnx)]) == 0
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).shape == image.shape[:2] + (3,)


def test_odd_sized_video_works(untrained_t6, tmp_path):
    source = write_video(tmp_path / "odd.avi", frames=3, size=(33, 17), codec="MJPG")
    assert main(["--video", str(source), "--out", str(tmp_path / "odd_pose.avi"), "--quiet",
                 "--weights", str(untrained_t6.onnx)]) == 0
    count, size, _ = video_properties(tmp_path / "odd_pose.avi")
    assert count == 3 and abs(size[0] - 33) <= 1 and abs(size[1] - 17) <= 1  # encoders need even sizes


def test_ctrl_c_removes_the_partial_outputs(untrained_t6, tmp_path):
    source = write_video(tmp_path / "long.mp4", frames=400)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "main.py"), "--video", str(source), "--out", str(out / "long_pose.mp4"),
         "--json", str(out / "long.json"), "--weights", str(untrained_t6.onnx)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(files_in(out) if out.exists() else []) < 2:   # both temporary files are open
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert files_in(out) == []


# ---------------------------------------------------------------- pose_core.video in process


def test_safe_video_writer_publishes_on_close_and_removes_on_error(tmp_path):
    frame = np.zeros((48, 64, 3), np.uint8)
    with SafeVideoWriter(tmp_path / "ok.mp4", 10, (64, 48)) as writer:
        writer.write(frame)
        assert files_in(tmp_path) != ["ok.mp4"]          # still a temporary name
    assert files_in(tmp_path) == ["ok.mp4"]
    with pytest.raises(KeyboardInterrupt):
        with SafeVideoWriter(tmp_path / "cut.mp4", 10, (64, 48)) as writer:
            writer.write(frame)
            raise KeyboardInterrupt
    assert files_in(tmp_path) == ["ok.mp4"]
    with SafeVideoWriter(tmp_path / "bad.mp4", 10, (64, 48)) as writer, pytest.raises(ValueError):
        writer.write(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(PoseError, match="must end in"):
        SafeVideoWriter(tmp_path / "x.gif", 10, (64, 48))


def test_write_behind_video_writer_encodes_every_frame_in_order_or_leaves_nothing(tmp_path):
    """The encoding thread writes all frames, in order, before the file is published; an
    abort with frames still queued leaves no file; the encoding time is counted."""
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(6)]
    with SafeVideoWriter(tmp_path / "ok.avi", 10, (64, 48), write_behind=2) as writer:
        for frame in frames:
            writer.write(frame)
        writer.flush()
        assert writer.frames == 6 and writer.encode_seconds > 0
    capture = cv2.VideoCapture(str(tmp_path / "ok.avi"))
    read = []
    while (frame := capture.read()[1]) is not None:
        read.append(int(np.rint(frame.mean())))
    capture.release()
    assert read == pytest.approx([40 * i for i in range(6)], abs=3)
    with pytest.raises(KeyboardInterrupt):
        with SafeVideoWriter(tmp_path / "cut.avi", 10, (64, 48), write_behind=8) as writer:
            for frame in frames:
                writer.write(frame)
            raise KeyboardInterrupt
    assert files_in(tmp_path) == ["ok.avi"]


@pytest.mark.parametrize("write_behind", [0, 2])
def test_an_encoding_error_is_one_pose_error_and_leaves_no_file(write_behind, tmp_path):
    """Also from the encoding thread: the next write (or the close) raises it, and the loop
    never blocks on a queue that nobody empties."""
    class FailingEncoder:
        def __init__(self, encoder):
            self.encoder, self.calls = encoder, 0

        def write(self, frame):
            self.calls += 1
            if self.calls >= 2:
                raise cv2.error("disk full\nmore detail")
            self.encoder.write(frame)

        def release(self):
            self.encoder.release()

    frame = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(PoseError, match=r"cannot write video .*bad\.avi: disk full$"):
        with SafeVideoWriter(tmp_path / "bad.avi", 10, (64, 48), write_behind=write_behind) as writer:
            writer._writer = FailingEncoder(writer._writer)
            for _ in range(20):
                writer.write(frame)
    assert files_in(tmp_path) == []


def test_safe_write_image_refuses_unknown_extensions_without_leaving_files(tmp_path):
    with pytest.raises(PoseError, match="cannot write image"):
        safe_write_image(tmp_path / "x.unknown", np.zeros((8, 8, 3), np.uint8))
    safe_write_image(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    assert files_in(tmp_path) == ["x.png"]


@pytest.mark.parametrize("prefetch", [0, 4])
def test_video_reader_yields_every_frame_and_closes_mid_stream(prefetch, tmp_path):
    source = write_video(tmp_path / "v.mp4", frames=7)
    with open_video(source, prefetch=prefetch) as reader:
        frames = list(reader)
    assert len(frames) == 7 and (reader.size, reader.fps, reader.frame_count) == ((64, 48), 10.0, 7)
    assert not np.array_equal(frames[0], frames[-1])
    with open_video(source, prefetch=prefetch) as reader:
        stream = iter(reader)
        next(stream), next(stream)


def test_readers_raise_input_errors(tmp_path):
    with pytest.raises(InputError, match="has no frames"):
        open_video(zero_frame_video(tmp_path / "zero.avi"))
    with pytest.raises(InputError, match="cannot read image"):
        read_image(random_bytes(tmp_path / "x.jpg"))
