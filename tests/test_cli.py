"""End-to-end command line runs with the test-only untrained network (see conftest.untrained_t6)."""
import json

import cv2
import numpy as np
import pytest

from conftest import CLIP, PHOTO, run_main, video_properties, write_video
from pose_core import bench, cli, registry
from pose_core.cli import FrameProcessor, main
from pose_core.result import People
from pose_core.video import open_video
from pose_core.keypoint_export import SCHEMA_NAME, read_keypoint_export


def files_in(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_video_to_annotated_video_and_json(untrained_t6, tmp_path):
    out, keypoints = tmp_path / "clip.mp4", tmp_path / "clip.json"
    result = run_main("--video", CLIP, "--out", out, "--json", keypoints, "--max-frames", 4,
                      "--weights", untrained_t6.onnx)
    assert result.returncode == 0, result.stderr
    assert video_properties(out) == (4, (640, 480), 10.0)
    doc = json.loads(keypoints.read_text())
    assert doc["schema"] == SCHEMA_NAME and doc["frames"] == 4
    assert (doc["source"]["width"], doc["source"]["height"], doc["source"]["fps"]) == (640, 480, 10.0)
    assert all(len(r["keypoints"]) == 17 and "track_id" in r for r in doc["records"])
    read_keypoint_export(keypoints)  # the reader accepts it
    assert "frames 4," in result.stdout and "network" in result.stdout
    assert files_in(tmp_path) == ["clip.json", "clip.mp4"]   # no temporary files left


def test_a_folder_of_videos_gives_one_output_each_in_the_out_folder(untrained_t6, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_video(inputs / "a.mp4", frames=3, size=(64, 48), fps=12)
    write_video(inputs / "b.avi", frames=2, size=(80, 60), fps=5, codec="MJPG")
    (inputs / "notes.txt").write_text("not a video")
    result = run_main("--video", inputs, "--out", tmp_path / "out", "--csv", tmp_path / "csv", "--quiet",
                      "--weights", untrained_t6.onnx)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert files_in(tmp_path / "out") == ["a_pose.mp4", "b_pose.mp4"]
    assert files_in(tmp_path / "csv") == ["a.csv", "b.csv"]
    assert video_properties(tmp_path / "out" / "a_pose.mp4") == (3, (64, 48), 12.0)
    assert video_properties(tmp_path / "out" / "b_pose.mp4") == (2, (80, 60), 5.0)


def test_avi_output_and_default_output_folder(untrained_t6, tmp_path):
    result = run_main("--video", CLIP, "--out", tmp_path / "x.avi", "--max-frames", 2, "--quiet",
                      "--weights", untrained_t6.onnx)
    assert result.returncode == 0, result.stderr
    assert video_properties(tmp_path / "x.avi")[:2] == (2, (640, 480))
    result = run_main("--video", CLIP, "--max-frames", 1, "--quiet",
                      "--no-track", "--weights", untrained_t6.onnx, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert video_properties(tmp_path / "out" / "vtest_people_pose.mp4")[:2] == (1, (640, 480))


def test_image_with_torch_backend(untrained_t6, tmp_path):
    out = tmp_path / "photo.png"
    result = run_main("--image", PHOTO, "--out", out, "--json", tmp_path / "photo.json",
                      "--model", "ldlc-openpose-t6-fast", "--backend", "torch", "--weights", untrained_t6.pt)
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(out)).shape == cv2.imread(str(PHOTO)).shape
    assert json.loads((tmp_path / "photo.json").read_text())["frames"] == 1


def test_list_models_prints_name_kind_and_weights_status():
    result = run_main("--list-models")
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == list(registry.MODELS)
    for name, kind, status in rows:
        spec = registry.MODELS[name]
        assert kind == spec.kind and status == registry.weights_status(spec, "onnx")


def test_bench_reports_every_stage_of_the_cli_loop(untrained_t6, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(["--model", registry.DEFAULT_MODEL, "--backend", "onnx", "--weights", str(untrained_t6.onnx),
                       "--frames", "3", "--json", str(out)])
    assert code == 0
    [result] = json.loads(out.read_text())
    assert result["frames"] == 3 and result["backend"] == "onnx" and result["threads"] >= 1
    assert list(result["ms_per_frame"]) == ["decode", "preprocess", "network", "grouping", "tracking",
                                            "smoothing", "draw", "encode"]
    assert result["fps"] > 0 and result["ms_per_frame"]["network"] > 0
    assert set(result["thread_ms_per_frame"]) == {"decode", "encode"}
    assert all(ms > 0 for ms in result["thread_ms_per_frame"].values())
    assert result["write_behind"] == 4
    assert "network" in capsys.readouterr().out
    assert bench.main(["--model", registry.DEFAULT_MODEL, "--backend", "onnx", "--weights", str(untrained_t6.onnx),
                       "--frames", "2", "--write-behind", "0", "--json", str(out)]) == 0
    [result] = json.loads(out.read_text())
    assert result["write_behind"] == 0 and result["thread_ms_per_frame"]["encode"] > 0
    assert bench.main(["--model", registry.DEFAULT_MODEL, "--write-behind", "-1"]) == 2
    assert "--write-behind takes 0 or more frames" in capsys.readouterr().err


def test_bench_times_multi_scale_and_refuses_it_for_top_down(untrained_t6, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--model", registry.DEFAULT_MODEL, "--backend", "onnx", "--weights", str(untrained_t6.onnx),
                       "--frames", "2", "--multi-scale", "384", "--json", str(out)]) == 0
    [result] = json.loads(out.read_text())
    assert result["extra_heights"] == [384] and "input height 256 + 384" in capsys.readouterr().out
    assert bench.main(["--model", "mnv2-hwloss", "--backend", "onnx", "--multi-scale", "384"]) == 2
    assert "--multi-scale takes heights between 32 and 2048 and is for bottom-up models" in capsys.readouterr().err


def test_bench_times_the_zoom_pass_of_the_trained_default(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--model", registry.DEFAULT_MODEL, "--backend", "onnx", "--frames", "2", "--zoom",
                       "--json", str(out)]) == 0
    [result] = json.loads(out.read_text())
    assert result["zoom"] == 2.0 and result["people_per_frame"] > 0
    assert "input height 256 zoom 2 " in capsys.readouterr().out


def test_bench_on_generated_clips_reports_the_cost_per_person(tmp_path):
    """The generated clips hold the asked number of people: the trained top-down model finds
    them, and its network time is also given per person."""
    out = tmp_path / "bench.json"
    code = bench.main(["--model", "mnv2-hwloss", "--backend", "onnx", "--people", "1", "3", "--frames", "3",
                       "--json", str(out)])
    assert code == 0
    one, three = json.loads(out.read_text())
    assert (one["video"], three["video"]) == ("generated clip, 1 people", "generated clip, 3 people")
    assert one["people_per_frame"] == 1 and three["people_per_frame"] == 3
    assert three["network_ms_per_person"] == pytest.approx(
        three["ms_per_frame"]["network"] / 3, abs=0.01)


def test_generated_clip_people_sway(tmp_path):
    bench.write_people_clip(tmp_path / "two.mp4", 2, frames=6)
    with open_video(tmp_path / "two.mp4") as reader:
        frames = [frame.astype(int) for frame in reader]
    assert len(frames) == 6 and frames[0].shape == (480, 640, 3)
    assert np.abs(frames[0] - frames[5]).mean() > 1, "the people move between frames"


@pytest.mark.parametrize("args, message", [
    (["--video", "a.mp4", "--image", "b.png"], "not allowed with"),
    (["--out", "x.mp4"], "one of the arguments"),
    (["--video", CLIP, "--backend", "tensorflow"], "invalid choice"),
    (["--video", CLIP, "--out", "x.gif"], "use .mp4"),
    (["--video", CLIP, "--json", "x.csv"], "use .json"),
    (["--video", CLIP, "--out", CLIP], "overwrite its input"),
    (["--video", CLIP, "--model", "nope"], "unknown model"),
    (["--video", CLIP, CLIP, "--out", "x.mp4"], "must be a folder"),
])
def test_usage_mistakes_are_one_line_errors(args, message, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([str(a) for a in args]) == 2
    stderr = capfd.readouterr().err
    assert stderr.startswith("error: ") and stderr.count("\n") == 1
    assert message in stderr
    assert files_in(tmp_path) == []


class CameraStoppedByCtrlC:
    """Stands in for a camera: the clip's first frames, then the user presses Ctrl-C."""

    def __init__(self, index, frames=3):
        self.reader = open_video(CLIP)
        self.fps, self.size, self.frame_count, self.source = self.reader.fps, self.reader.size, 0, f"camera {index}"
        self.frames = frames

    def __iter__(self):
        for i, frame in enumerate(self.reader):
            if i == self.frames:
                raise KeyboardInterrupt
            yield frame

    def close(self):
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_camera_recording_is_kept_when_stopped_with_ctrl_c(untrained_t6, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "open_camera", CameraStoppedByCtrlC)
    out = tmp_path / "rec.mp4"
    assert main(["--camera", "0", "--out", str(out), "--json", str(tmp_path / "rec.json"), "--quiet",
                 "--weights", str(untrained_t6.onnx)]) == 0
    assert video_properties(out) == (3, (640, 480), 10.0)
    assert json.loads((tmp_path / "rec.json").read_text())["frames"] == 3


def test_people_below_the_person_score_floor_are_left_out(tmp_path):
    people = People(np.ones((3, 17, 3)), [0.05, 0.5, 0.1], np.zeros((3, 4)))
    assert FrameProcessor(lambda frame: people, track=False, min_person_score=0.1)(
        np.zeros((8, 8, 3), np.uint8), 0.0).scores.tolist() == pytest.approx([0.5, 0.1])
    assert len(FrameProcessor(lambda frame: people, track=False, min_person_score=0.0)(
        np.zeros((8, 8, 3), np.uint8), 0.0)) == 3


def test_the_person_score_floor_defaults_to_the_pipelines_own():
    people = People(np.ones((3, 17, 3)), [0.03, 0.5, 0.07], np.zeros((3, 4)))

    class SizeScoredPipeline:
        min_person_score = 0.05

        def __call__(self, frame):
            return people

    frame = np.zeros((8, 8, 3), np.uint8)
    assert FrameProcessor(SizeScoredPipeline(), track=False)(frame, 0.0).scores.tolist() == pytest.approx([0.5, 0.07])
    assert FrameProcessor(lambda f: people, track=False)(frame, 0.0).scores.tolist() == pytest.approx([0.5])  # 0.1
    assert len(FrameProcessor(SizeScoredPipeline(), track=False, min_person_score=0.0)(frame, 0.0)) == 3
