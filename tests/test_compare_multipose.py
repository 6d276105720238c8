"""tools/compare_multipose.py: the same input size for both models, alternating runs, issue 8's test."""
import json
import sys

import pytest

from pose_core.registry import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
import tools.compare_multipose as compare_multipose  # noqa: E402
from tools.compare_multipose import MULTIPOSE, compare, sized  # noqa: E402

OURS = "ldlc-openpose-fpn"


def test_both_models_get_an_input_whose_longer_side_is_the_size():
    assert sized(MULTIPOSE, 352) == (352, {})
    assert sized(OURS, 352) == (None, {"longer_side": 352})


def test_runs_alternate_and_the_condition_needs_both_speed_and_accuracy(monkeypatch):
    calls = []
    # Size -> (our AP, MultiPose's AP); the machine slows down by 2x between the rounds.
    ap = {256: (0.24, 0.25), 352: (0.32, 0.31), 416: (0.34, 0.32)}
    speed = {256: 1.5, 352: 1.35, 416: 1.25}  # our frame rate over MultiPose's: 416 is too slow

    def fake_ap(model, size, ann):
        return ap[size][model == MULTIPOSE]

    def fake_fps(model, size, video, frames):
        calls.append((size, model))
        slowdown = 2.0 ** sum(1 for s, _ in calls if s == size)
        return 100.0 * (speed[size] if model == OURS else 1.0) / slowdown

    monkeypatch.setattr(compare_multipose, "average_precision", fake_ap)
    monkeypatch.setattr(compare_multipose, "frames_per_second", fake_fps)
    lines = []
    rows = compare(OURS, [256, 352, 416], rounds=4, frames=10, video="clip.mp4", ann="ann.json", log=lines.append)

    assert calls[:8] == [(256, OURS), (256, MULTIPOSE), (256, MULTIPOSE), (256, OURS)] * 2
    # Halving the speed after every run skews each round's ratio by 2x, one way then the other:
    # the geometric mean of the rounds' ratios is the true one.
    assert [row["ratio"] for row in rows] == pytest.approx(list(speed.values()), abs=1e-3)
    assert [row["met"] for row in rows] == [False, True, False]
    assert [line.split()[-1] for line in lines] == ["no", "yes", "no"]
    json.dumps(rows)  # --json writes them
