"""Per-video keypoint export: JSON or CSV with a versioned schema (docs/EXPORT_SCHEMA.md).

Writers stream one frame at a time so memory stays bounded for long videos, and
write to a temporary file in the target folder that `close()` renames into place:
an interrupted run never leaves a half-written export under the final name.
"""
import csv
import json
import os
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import InputError, PublishedOnSuccess
from .result import People
from .skeleton import COCO_KEYPOINTS, COCO_SKELETON, NUM_KEYPOINTS

SCHEMA_NAME = "posekit.keypoints"
SCHEMA_VERSION = 1
CSV_COLUMNS = (
    "schema_version", "frame", "time_s", "track_id", "person_score",
    "keypoint_id", "keypoint_name", "x", "y", "score",
    "box_x1", "box_y1", "box_x2", "box_y2",
)
# Written precision: pixels to 1/100, scores to 1e-4, times to the microsecond.
PIXEL_DECIMALS, SCORE_DECIMALS, TIME_DECIMALS = 2, 4, 6


class KeypointFrame(NamedTuple):
    """One frame read back from an export."""
    frame: int
    time_s: float
    people: People


def open_keypoint_writer(path, source_info: dict):
    """A JSON or CSV keypoint writer for `path`, chosen by its extension.

    source_info: what produced the keypoints (path, fps, width, height, model, ...);
    kept in the JSON header (the CSV has no place for it).
    """
    path = Path(path)
    writer_class = _WRITERS.get(path.suffix.lower())
    if writer_class is None:
        raise InputError(f"keypoint export must end in .json or .csv, not '{path.suffix or path.name}'")
    return writer_class(path, source_info)


class _KeypointWriter(PublishedOnSuccess):
    """Temporary-file lifecycle shared by the formats; subclasses write the content."""

    def __init__(self, path: Path, source_info: dict):
        self.path = path
        self.frames = 0
        # A unique hidden name beside the target, so os.replace stays on one file system;
        # open() rather than mkstemp so the file gets the user's usual permissions.
        self._tmp_path = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
        try:
            self._file = open(self._tmp_path, "x", encoding="utf-8", newline="")
        except OSError as e:
            raise InputError(f"cannot write keypoints to {path}: {e.strerror}") from None
        self._write_header(source_info)

    def write(self, frame_index: int, time_s: float, people: People):
        if self._file is None:
            raise RuntimeError("keypoint writer is already closed")
        self._write_frame(int(frame_index), round(float(time_s), TIME_DECIMALS), people)
        self.frames += 1

    def close(self):
        """Finish the file and move it to its final name. Does nothing once closed or aborted."""
        if self._file is None:
            return
        self._write_footer()
        self._file.close()
        self._file = None
        os.replace(self._tmp_path, self.path)

    def abort(self):
        """Drop the temporary file; the final path is left untouched."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        self._tmp_path.unlink(missing_ok=True)

    def _write_header(self, source_info):
        pass

    def _write_footer(self):
        pass

    def _write_frame(self, frame_index, time_s, people):
        raise NotImplementedError


class JsonKeypointWriter(_KeypointWriter):
    """One JSON document; records are streamed between a hand-written header and footer."""

    def _write_header(self, source_info):
        header = {
            "schema": SCHEMA_NAME,
            "schema_version": SCHEMA_VERSION,
            "source": source_info,
            "keypoint_names": list(COCO_KEYPOINTS),
            "skeleton": [list(link) for link in COCO_SKELETON],
        }
        # Drop the closing brace so the records array can follow.
        self._file.write(json.dumps(header, default=str)[:-1] + ', "records": [')
        self._first_record = True

    def _write_frame(self, frame_index, time_s, people):
        for row in _person_rows(people):
            record = {"frame": frame_index, "time_s": time_s, **row}
            self._file.write(("\n" if self._first_record else ",\n") + json.dumps(record))
            self._first_record = False

    def _write_footer(self):
        self._file.write(f'\n], "frames": {self.frames}}}\n')


class CsvKeypointWriter(_KeypointWriter):
    """A header row, then one row per frame x person x keypoint."""

    def _write_header(self, source_info):
        self._csv = csv.writer(self._file)
        self._csv.writerow(CSV_COLUMNS)

    def _write_frame(self, frame_index, time_s, people):
        for row in _person_rows(people):
            track_id = "" if row["track_id"] is None else row["track_id"]
            person = [SCHEMA_VERSION, frame_index, time_s, track_id, row["score"]]
            self._csv.writerows([*person, k, COCO_KEYPOINTS[k], *kp, *row["box"]]
                                for k, kp in enumerate(row["keypoints"]))


_WRITERS = {".json": JsonKeypointWriter, ".csv": CsvKeypointWriter}


def _person_rows(people: People):
    """Rounded, JSON-ready values per person (float64 first so 0.1 is written as 0.1)."""
    keypoints = people.keypoints.astype(np.float64)
    keypoints[..., :2] = np.round(keypoints[..., :2], PIXEL_DECIMALS)
    keypoints[..., 2] = np.round(keypoints[..., 2], SCORE_DECIMALS)
    boxes = np.round(people.boxes.astype(np.float64), PIXEL_DECIMALS).tolist()
    scores = np.round(people.scores.astype(np.float64), SCORE_DECIMALS).tolist()
    ids = [None] * len(people) if people.track_ids is None else people.track_ids.tolist()
    return [{"track_id": ids[i], "score": scores[i], "box": boxes[i], "keypoints": keypoints[i].tolist()}
            for i in range(len(people))]


# ---------------------------------------------------------------- reading


def read_keypoint_export(path):
    """Load a JSON or CSV export into a list of KeypointFrame, in frame order.

    Only frames with at least one person appear (neither format has rows for empty frames).
    """
    path = Path(path)
    reader = {".json": _read_json_rows, ".csv": _read_csv_rows}.get(path.suffix.lower())
    if reader is None:
        raise InputError(f"keypoint export must end in .json or .csv, not '{path.suffix or path.name}'")
    try:
        rows = reader(path)
    except OSError as e:
        raise InputError(f"cannot read keypoints from {path}: {e.strerror}") from None
    except (ValueError, KeyError, IndexError, TypeError):
        raise InputError(f"{path} is not a valid {SCHEMA_NAME} export") from None
    return _group_frames(rows)


def _read_json_rows(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    _check_version(path, doc.get("schema"), doc.get("schema_version"))
    return [(r["frame"], r["time_s"], r["track_id"], r["score"], r["box"], r["keypoints"]) for r in doc["records"]]


def _read_csv_rows(path):
    """CSV rows -> one (frame, time_s, track_id, score, box, keypoints) per person."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or tuple(reader.fieldnames) != CSV_COLUMNS:
            raise ValueError("unexpected columns")
        rows = list(reader)
    if len(rows) % NUM_KEYPOINTS:
        raise ValueError("incomplete person")
    persons = []
    for start in range(0, len(rows), NUM_KEYPOINTS):
        person = rows[start:start + NUM_KEYPOINTS]
        first = person[0]
        _check_version(path, SCHEMA_NAME, int(first["schema_version"]))
        if [int(r["keypoint_id"]) for r in person] != list(range(NUM_KEYPOINTS)):
            raise ValueError("keypoints out of order")
        track_id = int(first["track_id"]) if first["track_id"] else None
        box = [float(first[c]) for c in ("box_x1", "box_y1", "box_x2", "box_y2")]
        keypoints = [[float(r["x"]), float(r["y"]), float(r["score"])] for r in person]
        persons.append((int(first["frame"]), float(first["time_s"]), track_id,
                        float(first["person_score"]), box, keypoints))
    return persons


def _check_version(path, schema, version):
    if schema != SCHEMA_NAME or version != SCHEMA_VERSION:
        raise InputError(f"{path} has schema {schema} version {version}; "
                         f"this version reads {SCHEMA_NAME} version {SCHEMA_VERSION}")


def _group_frames(rows):
    """Person rows (already in frame order as written) -> one KeypointFrame per frame."""
    by_frame = {}
    for frame, time_s, track_id, score, box, keypoints in rows:
        by_frame.setdefault(int(frame), (float(time_s), []))[1].append((track_id, score, box, keypoints))
    frames = []
    for frame in sorted(by_frame):
        time_s, persons = by_frame[frame]
        ids = [p[0] for p in persons]
        keypoints, scores, boxes = (np.array([p[k] for p in persons]) for k in (3, 1, 2))
        people = People(keypoints, scores, boxes, None if None in ids else ids)
        frames.append(KeypointFrame(frame, time_s, people))
    return frames
