"""The committed default model: it finds people, and both backends agree on them."""
import json

import cv2
import numpy as np
import pytest

from pose_core import registry
from pose_core.skeleton import NUM_KEYPOINTS

from conftest import CLIP, PHOTO, run_main

SPEC = registry.get_spec(registry.DEFAULT_MODEL)


def test_default_model_weights_are_committed_and_ready():
    assert registry.weights_status(SPEC, "onnx") == "ready"
    assert registry.weights_status(SPEC, "torch") == "ready"


def test_onnx_and_torch_find_the_same_people_on_the_same_frame():
    pytest.importorskip("torch")
    frame = cv2.imread(str(PHOTO))
    onnx_people = registry.load_pipeline(SPEC.name, "onnx", precision="fp32")(frame)  # int8: test_quantize
    torch_people = registry.load_pipeline(SPEC.name, "torch")(frame)
    assert len(onnx_people) == len(torch_people) >= 1
    order_onnx, order_torch = np.argsort(-onnx_people.scores), np.argsort(-torch_people.scores)
    visible = onnx_people.keypoints[order_onnx, :, 2] > 0.2
    diff = np.abs(onnx_people.keypoints[order_onnx, :, :2] - torch_people.keypoints[order_torch, :, :2])
    assert np.all(diff[visible] < 1.0), "keypoints differ by a pixel or more between backends"


def test_video_command_draws_people_on_the_bundled_clip(tmp_path):
    out, export = tmp_path / "clip.mp4", tmp_path / "clip.json"
    result = run_main("--video", CLIP, "--out", out, "--json", export, "--max-frames", "10", "--quiet")
    assert result.returncode == 0, result.stderr
    records = json.loads(export.read_text())["records"]
    frames_with_people = {r["frame"] for r in records}
    assert len(frames_with_people) >= 8, "the pedestrians of the clip are found in most frames"
    assert all(len(r["keypoints"]) == NUM_KEYPOINTS for r in records)
    assert all(r["track_id"] is not None for r in records)


def test_the_app_runs_on_onnx_runtime_without_pytorch(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "photo.png"
    script = ("import sys, runpy; sys.modules['torch'] = None; "  # every 'import torch' fails
              f"sys.argv = ['main.py', '--image', {str(PHOTO)!r}, '--out', {str(out)!r}, '--quiet']; "
              f"runpy.run_path({str(CLIP.parent.parent / 'main.py')!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(out)).shape == cv2.imread(str(PHOTO)).shape
