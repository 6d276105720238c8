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


def tf_same_conv(x, kernel, stride=1, dilation=1, depthwise=False):
    """TensorFlow 'SAME' convolution of an H x W x C array in NumPy (float64), the reference
    for converted tfjs layers: `kernel` HWIO, or H x W x C x 1 when `depthwise`. An odd total
    padding puts the extra pixel at the bottom/right."""
    kernel = kernel.astype(np.float64)
    kh, kw = kernel.shape[:2]
    out_shape, pads = [], []
    for size, k in zip(x.shape[:2], (kh, kw)):
        out = -(-size // stride)
        total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
        out_shape.append(out)
        pads.append((total // 2, total - total // 2))
    xp = np.pad(x, pads + [(0, 0)])
    y = 0.0
    for i in range(kh):
        for j in range(kw):
            patch = xp[i * dilation:i * dilation + (out_shape[0] - 1) * stride + 1:stride,
                       j * dilation:j * dilation + (out_shape[1] - 1) * stride + 1:stride]
            y = y + (patch * kernel[i, j, :, 0] if depthwise else patch @ kernel[i, j])
    return y


def tf_resize2_reference(x, half_pixel_centers):
    """TensorFlow ResizeBilinear x2 (align_corners False) of an H x W x C array in NumPy:
    `half_pixel_centers` as MultiPose's graph sets it; without, output i samples input i / 2
    (CenterNet's legacy resize)."""
    for axis in (0, 1):
        n = x.shape[axis]
        src = np.arange(2 * n) / 2
        if half_pixel_centers:
            src = np.clip(src - 0.25, 0, n - 1)  # (i + 0.5) / 2 - 0.5
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, n - 1)
        frac = (src - low).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
        x = np.take(x, low, axis) * (1 - frac) + np.take(x, high, axis) * frac
    return x


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
