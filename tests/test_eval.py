"""pose_core.eval on a tiny synthetic COCO set: perfect, shifted and empty predictions."""
import json

import cv2
import numpy as np
import pytest

from pose_core.eval import GroundTruthBoxes, evaluate, main
from pose_core.result import People
from conftest import write_coco_json

# image id -> (height, width); the fake pipelines recognise an image by its size.
IMAGES = {1: (240, 320), 2: (200, 300)}


def _person(cx, cy, scale):
    """17 plausible keypoints (x, y, v=2) around (cx, cy)."""
    offsets = np.array([[0, -4], [-1, -4.5], [1, -4.5], [-2, -4], [2, -4], [-3, -2], [3, -2],
                        [-4, 0], [4, 0], [-4.5, 2], [4.5, 2], [-2, 2], [2, 2], [-2, 5], [2, 5],
                        [-2, 8], [2, 8]], dtype=np.float32)
    kp = np.zeros((17, 3), np.float32)
    kp[:, :2] = offsets * scale + (cx, cy)
    kp[:, 2] = 2
    return kp


GROUND_TRUTH = {1: [_person(100, 90, 10), _person(220, 100, 9)], 2: [_person(150, 80, 8)]}


@pytest.fixture
def coco_set(tmp_path):
    images, annotations = [], []
    for image_id, (h, w) in IMAGES.items():
        name = f"{image_id:04d}.png"
        cv2.imwrite(str(tmp_path / name), np.full((h, w, 3), 40 * image_id, np.uint8))
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        for kp in GROUND_TRUTH[image_id]:
            x1, y1 = kp[:, :2].min(0)
            x2, y2 = kp[:, :2].max(0)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                "area": float((x2 - x1) * (y2 - y1)), "num_keypoints": 17,
                "keypoints": kp.reshape(-1).tolist()})
    return write_coco_json(tmp_path / "person_keypoints.json", images, annotations), tmp_path


def _pipeline_returning(keypoints_for_image):
    size_to_id = {size: image_id for image_id, size in IMAGES.items()}

    def pipeline(frame):
        kps = keypoints_for_image(size_to_id[frame.shape[:2]])
        if not kps:
            return People.empty()
        kps = np.stack(kps).copy()
        kps[:, :, 2] = 0.9  # the score slot, not COCO visibility
        return People.from_keypoints(kps, np.full(len(kps), 0.9))
    return pipeline


def test_ground_truth_scores_ap_one(coco_set):
    ann, image_dir = coco_set
    result = evaluate(_pipeline_returning(GROUND_TRUTH.get), ann, image_dir, progress=False)
    assert result["AP"] == pytest.approx(1.0)
    assert result["images"] == 2
    assert len(result["stats"]) == 10


def test_shifted_keypoints_score_lower(coco_set):
    ann, image_dir = coco_set

    def shifted(image_id):
        return [kp + np.array([6, 5, 0], np.float32) for kp in GROUND_TRUTH[image_id]]

    result = evaluate(_pipeline_returning(shifted), ann, image_dir, progress=False)
    assert 0.0 < result["AP"] < 0.9


def test_no_detections_score_zero(coco_set):
    ann, image_dir = coco_set
    result = evaluate(_pipeline_returning(lambda image_id: []), ann, image_dir, progress=False)
    assert result["AP"] == 0.0
    assert result["images"] == 2


def test_limit_evaluates_only_the_first_image_ids(coco_set):
    ann, image_dir = coco_set
    only_first = _pipeline_returning(lambda image_id: GROUND_TRUTH[1] if image_id == 1 else [])
    assert evaluate(only_first, ann, image_dir, progress=False)["AP"] < 1.0
    limited = evaluate(only_first, ann, image_dir, limit=1, progress=False)
    assert limited["images"] == 1
    assert limited["AP"] == pytest.approx(1.0)


def test_results_file_is_coco_format(coco_set, tmp_path):
    ann, image_dir = coco_set
    out = tmp_path / "results.json"
    evaluate(_pipeline_returning(GROUND_TRUTH.get), ann, image_dir, progress=False, results_file=out)
    records = json.loads(out.read_text())
    assert len(records) == 3
    assert {r["image_id"] for r in records} == {1, 2}
    assert all(r["category_id"] == 1 and len(r["keypoints"]) == 51 for r in records)


def test_cli_unknown_model_is_one_line_error(coco_set, capsys):
    ann, image_dir = coco_set
    assert main(["--model", "no-such-model", "--ann", str(ann), "--images", str(image_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_ground_truth_boxes_follow_the_evaluated_image(coco_set, tmp_path):
    """--gt-boxes: evaluate() tells the detector which image comes; a pipeline that returns
    the person whose box it was given scores AP 1. Crowd boxes and people without keypoints
    are not boxes."""
    ann, image_dir = coco_set
    data = json.loads(ann.read_text())
    data["annotations"].append({"id": 50, "image_id": 1, "category_id": 1, "iscrowd": 1, "num_keypoints": 0,
                                "bbox": [0, 0, 30, 30], "area": 900.0, "keypoints": [0] * 51})
    data["annotations"].append({"id": 51, "image_id": 2, "category_id": 1, "iscrowd": 0, "num_keypoints": 0,
                                "bbox": [5, 5, 20, 40], "area": 800.0, "keypoints": [0] * 51})
    ann = tmp_path / "with_unlabelled.json"
    ann.write_text(json.dumps(data))
    by_box = {tuple(np.round(a["bbox"], 3)): np.asarray(a["keypoints"], np.float32).reshape(17, 3)
              for a in data["annotations"] if a["num_keypoints"]}

    class BoxEcho:
        detector = GroundTruthBoxes(ann)
        seen = []

        def __call__(self, frame):
            boxes, scores = self.detector(frame)
            self.seen.append(len(boxes))
            kps = np.stack([by_box[tuple(np.round([x1, y1, x2 - x1, y2 - y1], 3))] for x1, y1, x2, y2 in boxes])
            kps[:, :, 2] = 0.9
            return People.from_keypoints(kps, scores)

    pipeline = BoxEcho()
    assert evaluate(pipeline, ann, image_dir, progress=False)["AP"] == pytest.approx(1.0)
    assert pipeline.seen == [2, 1]


def test_cli_gt_boxes_is_for_top_down_models(coco_set, capsys):
    ann, image_dir = coco_set
    assert main(["--model", "ldlc-openpose-t6", "--gt-boxes", "--ann", str(ann), "--images", str(image_dir)]) == 2
    assert "top-down" in capsys.readouterr().err


def test_cli_gt_boxes_runs_a_top_down_model(coco_set, tmp_path, capsys):
    """TEST-ONLY random weights: the mechanics of `--model mnv2-hwloss --gt-boxes`, not accuracy."""
    torch = pytest.importorskip("torch")
    from pose_core.export_onnx import TOPDOWN_OUTPUT_NAMES, export_onnx
    from pose_core.models.mobilenetv2_pose import build_mobilenetv2_pose

    ann, image_dir = coco_set
    torch.manual_seed(0)
    onnx = export_onnx(build_mobilenetv2_pose(), tmp_path / "untrained-mnv2.onnx", 256, 192,
                       output_names=TOPDOWN_OUTPUT_NAMES, dynamic_batch=True)
    assert main(["--model", "mnv2-hwloss", "--gt-boxes", "--weights", str(onnx), "--ann", str(ann),
                 "--images", str(image_dir)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("AP=")
