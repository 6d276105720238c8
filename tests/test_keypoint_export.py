import csv
import json

import numpy as np
import pytest

from pose_core.errors import InputError
from pose_core.keypoint_export import (CSV_COLUMNS, SCHEMA_VERSION, open_keypoint_writer,
                                       read_keypoint_export)
from pose_core.result import People
from pose_core.skeleton import COCO_KEYPOINTS

SOURCE = {"path": "clip.mp4", "fps": 30.0, "width": 640, "height": 480, "model": "test"}


def random_people(rng, n, tracked):
    keypoints = np.concatenate([rng.uniform(0, 640, (n, 17, 2)), rng.uniform(0, 1, (n, 17, 1))], axis=2)
    ids = rng.integers(0, 1000, n) if tracked else None
    return People(keypoints, rng.uniform(0, 1, n), rng.uniform(0, 640, (n, 4)), ids)


def sample_frames():
    rng = np.random.default_rng(0)
    return [(0, 0.0, random_people(rng, 2, tracked=True)),
            (1, 1 / 30, People.empty()),               # nobody: no records
            (2, 2 / 30, random_people(rng, 3, tracked=False)),
            (5, 5 / 30, random_people(rng, 1, tracked=True))]


def write_all(path, frames):
    with open_keypoint_writer(path, SOURCE) as writer:
        for frame, time_s, people in frames:
            writer.write(frame, time_s, people)


@pytest.mark.parametrize("ext", [".json", ".csv"])
def test_round_trip(tmp_path, ext):
    path = tmp_path / f"keypoints{ext}"
    frames = sample_frames()
    write_all(path, frames)
    read = read_keypoint_export(path)
    written = [f for f in frames if len(f[2])]
    assert [f.frame for f in read] == [f[0] for f in written]
    for got, (frame, time_s, people) in zip(read, written):
        assert got.time_s == pytest.approx(time_s, abs=1e-6)
        np.testing.assert_allclose(got.people.keypoints[..., :2], people.keypoints[..., :2], atol=0.005)
        np.testing.assert_allclose(got.people.keypoints[..., 2], people.keypoints[..., 2], atol=5e-5)
        np.testing.assert_allclose(got.people.scores, people.scores, atol=5e-5)
        np.testing.assert_allclose(got.people.boxes, people.boxes, atol=0.005)
        if people.track_ids is None:
            assert got.people.track_ids is None
        else:
            np.testing.assert_array_equal(got.people.track_ids, people.track_ids)
    assert list(tmp_path.iterdir()) == [path]   # no temporary file left behind


def test_json_document_layout(tmp_path):
    path = tmp_path / "k.json"
    write_all(path, sample_frames())
    doc = json.loads(path.read_text())
    assert doc["schema"] == "posekit.keypoints" and doc["schema_version"] == SCHEMA_VERSION
    assert doc["source"] == SOURCE
    assert doc["keypoint_names"] == list(COCO_KEYPOINTS)
    assert doc["frames"] == 4
    assert len(doc["records"]) == 6
    assert doc["records"][2]["track_id"] is None and isinstance(doc["records"][0]["track_id"], int)


def test_csv_rows(tmp_path):
    path = tmp_path / "k.csv"
    write_all(path, sample_frames())
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 1 + 6 * 17
    assert rows[1][CSV_COLUMNS.index("keypoint_name")] == "nose"
    assert rows[2 * 17 + 1][CSV_COLUMNS.index("track_id")] == ""   # the untracked frame


def test_abort_leaves_no_file(tmp_path):
    path = tmp_path / "k.json"
    writer = open_keypoint_writer(path, SOURCE)
    writer.write(0, 0.0, sample_frames()[0][2])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_exception_inside_context_aborts(tmp_path, error):
    path = tmp_path / "k.csv"
    path.write_text("previous export")
    with pytest.raises(error):
        with open_keypoint_writer(path, SOURCE) as writer:
            writer.write(0, 0.0, sample_frames()[0][2])
            raise error()
    assert list(tmp_path.iterdir()) == [path]
    assert path.read_text() == "previous export"


def test_unknown_extension(tmp_path):
    with pytest.raises(InputError):
        open_keypoint_writer(tmp_path / "k.txt", SOURCE)
    with pytest.raises(InputError):
        read_keypoint_export(tmp_path / "k.xml")


def test_missing_folder_is_input_error(tmp_path):
    with pytest.raises(InputError):
        open_keypoint_writer(tmp_path / "missing" / "k.json", SOURCE)


def test_other_schema_version_is_refused(tmp_path):
    path = tmp_path / "k.json"
    write_all(path, sample_frames())
    doc = json.loads(path.read_text())
    doc["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="version"):
        read_keypoint_export(path)
