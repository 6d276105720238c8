"""Fixtures shared by the test files."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIP = REPO_ROOT / "assets" / "vtest_people.mp4"
PHOTO = REPO_ROOT / "assets" / "basketball.png"


def write_coco_json(path, images, annotations):
    """A COCO person-keypoint annotation file of these image and annotation records."""
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "person"}]}))
    return path


@pytest.fixture(scope="session")
def untrained_t6(tmp_path_factory):
    """TEST-ONLY weights: the "t6" network with RANDOM, UNTRAINED weights (seed 0), saved as
    .pt and exported to .onnx with pose_core.export_onnx in a session temporary folder.

    It lets tests drive the real code paths before trained weights exist. It finds next to
    no people, so tests using it check mechanics (files, sizes, frame counts, schemas,
    errors), never pose quality. Never ship or register these files.
    """
    torch = pytest.importorskip("torch")
    from pose_core.export_onnx import export_onnx
    from pose_core.models.bottomup import build_ldlc_openpose
    from pose_core.models.io import save_torch_weights

    folder = tmp_path_factory.mktemp("untrained_t6")
    torch.manual_seed(0)
    model = build_ldlc_openpose("t6").eval()
    weights = SimpleNamespace(pt=folder / "untrained-t6.pt", onnx=folder / "untrained-t6.onnx")
    save_torch_weights(model, weights.pt)
    export_onnx(model, weights.onnx)
    return weights


def run_main(*args, cwd=None, timeout=120):
    """Run `main.py args` with this interpreter in a subprocess; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def write_video(path, frames=3, size=(64, 48), fps=10.0, codec="mp4v"):
    """A small synthetic clip: a bright square moving over a grey background."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), 90, np.uint8)
        cv2.rectangle(frame, (2 * i, 2), (2 * i + 8, 12), (255, 255, 255), -1)
        writer.write(frame)
    writer.release()
    return path


def video_properties(path):
    """(frame count actually decodable, (width, height), fps) of a video file."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    count, size = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, size = count + 1, frame.shape[1::-1]
    capture.release()
    return count, size, fps
