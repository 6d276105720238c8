"""The person detector: decoding, targets, loss, the training script, ONNX export and the
registry, on synthetic data written here (no data, weights or cache files needed)."""
import csv
import json

import cv2
import numpy as np
import pytest

from pose_core import registry
from pose_core.errors import ModelUnavailable, WeightsError
from pose_core.person_detector import (PersonDetector, decode_detections, letterbox, nms, peak_mask,
                                       sigmoid)

torch = pytest.importorskip("torch")

from pose_core.train.detector_data import render_targets  # noqa: E402
from conftest import write_coco_json  # noqa: E402

STRIDE = 8


def logit(p):
    return float(np.log(p / (1 - p)))


def synthetic_maps(people, shape=(40, 40), background=0.01):
    """Network outputs for `people` [(cell x, cell y, offset x, offset y, w cells, h cells, score)]."""
    center = np.full(shape, logit(background), np.float32)
    size = np.zeros((2,) + shape, np.float32)
    offset = np.zeros((2,) + shape, np.float32)
    for x, y, ox, oy, w, h, score in people:
        center[y, x] = logit(score)
        size[:, y, x] = w, h
        offset[:, y, x] = ox, oy
    return center, size, offset


# ---------------------------------------------------------------- decoding


def test_two_peaks_give_two_boxes_at_the_right_places_and_sizes():
    center, size, offset = synthetic_maps([(10, 20, 0.5, 0.25, 4, 10, 0.9), (30, 5, 0.0, 0.5, 2, 6, 0.7)])
    center[21, 10] = logit(0.8)   # a neighbour of the first peak: not a peak itself
    boxes, scores = decode_detections(center, size, offset, STRIDE, top_k=20, score_threshold=0.3)
    np.testing.assert_allclose(scores, [0.9, 0.7], rtol=1e-5)
    cx, cy = (10 + 0.5) * STRIDE, (20 + 0.25) * STRIDE
    np.testing.assert_allclose(boxes[0], [cx - 16, cy - 40, cx + 16, cy + 40], atol=1e-4)
    cx, cy = 30 * STRIDE, 5.5 * STRIDE
    np.testing.assert_allclose(boxes[1], [cx - 8, cy - 24, cx + 8, cy + 24], atol=1e-4)


def test_zero_people_and_fifty_people_capped_by_top_k():
    center, size, offset = synthetic_maps([])
    boxes, scores = decode_detections(center, size, offset, STRIDE, top_k=20, score_threshold=0.3)
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    people = [(2 + 4 * (i % 10), 2 + 8 * (i // 10), 0.5, 0.5, 2, 4, 0.5 + 0.009 * i) for i in range(50)]
    center, size, offset = synthetic_maps(people)
    boxes, scores = decode_detections(center, size, offset, STRIDE, top_k=20, score_threshold=0.3)
    assert len(boxes) == 20
    np.testing.assert_allclose(scores, sorted([p[-1] for p in people], reverse=True)[:20], rtol=1e-5)
    boxes, _ = decode_detections(center, size, offset, STRIDE, top_k=100, score_threshold=0.3)
    assert len(boxes) == 50


def test_iou_nms_drops_the_weaker_of_two_overlapping_boxes():
    center, size, offset = synthetic_maps([(10, 10, 0, 0, 8, 16, 0.9), (12, 10, 0, 0, 8, 16, 0.6),
                                           (30, 30, 0, 0, 4, 4, 0.5)])
    boxes, scores = decode_detections(center, size, offset, STRIDE, score_threshold=0.3, nms_iou=0.5)
    np.testing.assert_allclose(scores, [0.9, 0.5], rtol=1e-5)
    boxes, _ = decode_detections(center, size, offset, STRIDE, score_threshold=0.3, nms_iou=None)
    assert len(boxes) == 3
    assert list(nms(np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32),
                    np.array([0.5, 0.9, 0.1]), 0.5)) == [1, 2]


def test_peak_mask_and_sigmoid():
    heat = np.zeros((5, 5), np.float32)
    heat[2, 2], heat[2, 3] = 2.0, 1.0
    mask = peak_mask(heat)
    assert mask[2, 2] and not mask[2, 3]
    assert abs(sigmoid(0.0) - 0.5) < 1e-12


class FakeRunner:
    """Returns fixed maps at `stride` for a letterboxed batch (one person centred on cell (12.5, 7.5),
    5 x 10 cells)."""

    def __init__(self, stride=STRIDE):
        self.batches, self.stride = [], stride

    def __call__(self, batch):
        self.batches.append(batch)
        h, w = batch.shape[2] // self.stride, batch.shape[3] // self.stride
        center, size, offset = synthetic_maps([(12, 7, 0.5, 0.5, 5, 10, 0.8)], (h, w))
        return center[None, None], size[None], offset[None]


@pytest.mark.parametrize("stride", [8, 4])
def test_detector_letterboxes_and_maps_boxes_back_to_frame_pixels(stride):
    frame = np.zeros((480, 640, 3), np.uint8)
    runner = FakeRunner(stride)
    boxes, scores = PersonDetector(runner, input_size=320)(frame)
    assert runner.batches[0].shape == (1, 3, 256, 320)      # 240 padded to a multiple of 32
    assert (runner.batches[0][0, :, 240:] > 100).all()     # PAD_RGB below the image
    cx, cy = 12.5 * stride * 2, 7.5 * stride * 2           # input pixels x 640 / 320
    half_w, half_h = 2.5 * stride * 2, 5 * stride * 2
    np.testing.assert_allclose(boxes, [[cx - half_w, cy - half_h, cx + half_w, cy + half_h]], atol=1e-3)
    np.testing.assert_allclose(scores, [0.8], rtol=1e-5)
    with pytest.raises(WeightsError, match="not person-detector maps"):
        PersonDetector(FakeRunner(16), input_size=320)(frame)   # a stride no detector has
    batch, scale = letterbox(np.zeros((100, 50, 3), np.uint8), 320)
    assert batch.shape == (1, 3, 320, 160) and scale == (160 / 50, 320 / 100)


# ---------------------------------------------------------------- targets and loss


def test_targets_peak_at_the_centre_cell_with_size_and_offset_only_there():
    boxes = np.array([[40, 80, 120, 240], [200, 16, 232, 80]], np.float32)
    t = render_targets(boxes, np.zeros((0, 4)), (320, 320))
    assert t["heatmap"].shape == (1, 40, 40)
    cells = [(int(160 / 8), int(80 / 8)), (int(48 / 8), int(216 / 8))]   # centre cells (y, x)
    for (y, x), (x1, y1, x2, y2) in zip(cells, boxes):
        assert t["heatmap"][0, y, x] == 1.0 and t["reg_mask"][0, y, x] == 1.0
        np.testing.assert_allclose(t["size"][:, y, x], [(x2 - x1) / 8, (y2 - y1) / 8])
        np.testing.assert_allclose(t["offset"][:, y, x], [(x1 + x2) / 16 - x, (y1 + y2) / 16 - y])
    assert (t["heatmap"] == 1).sum() == 2 and t["reg_mask"].sum() == 2
    assert (t["size"][:, t["reg_mask"][0] == 0] == 0).all() and (t["offset"][:, t["reg_mask"][0] == 0] == 0).all()
    assert 0 < t["heatmap"][0, cells[0][0], cells[0][1] + 1] < 1    # a Gaussian around the centre
    assert (t["heat_weight"] == 1).all()


def test_crowd_boxes_are_masked_out_of_the_heatmap_loss():
    t = render_targets(np.array([[0, 0, 64, 64]], np.float32), np.array([[160, 160, 240, 320]]), (320, 320))
    assert (t["heat_weight"][0, 20:40, 20:30] == 0).all()
    assert t["heat_weight"][0].sum() == 1600 - 20 * 10
    assert t["heatmap"][0, 20:, 20:].sum() == 0 and t["reg_mask"].sum() == 1


def test_focal_loss_ignores_masked_pixels_and_rewards_confident_centres():
    from pose_core.train.train_detector import focal_loss

    target = torch.zeros(1, 1, 8, 8)
    target[0, 0, 3, 3] = 1.0
    weight = torch.ones_like(target)
    good = torch.full_like(target, -6.0)
    good[0, 0, 3, 3] = 6.0
    bad = -good
    assert focal_loss(good, target, weight) < 0.01 < focal_loss(bad, target, weight)
    weight[0, 0, 5, 5] = 0
    spiked = good.clone()
    spiked[0, 0, 5, 5] = 6.0
    assert torch.isclose(focal_loss(spiked, target, weight), focal_loss(good, target, weight))


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    from pose_core.models.person_detector import build_person_detector
    from pose_core.train.train_detector import detector_loss, train_step

    torch.manual_seed(0)
    model = build_person_detector().train()
    rng = np.random.default_rng(0)
    images, targets = [], []
    for i in range(2):
        image = rng.integers(0, 60, (64, 64, 3), dtype=np.uint8)
        box = np.array([8 + 16 * i, 8, 40 + 16 * i, 60], np.float32)
        image[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = (200, 180, 160)
        images.append(torch.from_numpy(image.transpose(2, 0, 1).copy()).float())
        targets.append({k: torch.from_numpy(v) for k, v in render_targets(box[None], np.zeros((0, 4)), (64, 64)).items()})
    batch = {"image": torch.stack(images), **{k: torch.stack([t[k] for t in targets]) for k in targets[0]}}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.no_grad():
        before = detector_loss(model(batch["image"]), batch)[0].item()
    for _ in range(6):
        train_step(model, optimizer, batch)
    with torch.no_grad():
        after = detector_loss(model(batch["image"]), batch)[0].item()
    assert np.isfinite(before) and after < before


# ---------------------------------------------------------------- training script


def write_coco(folder, count=3, size=(96, 128)):
    """images/<id>.png with bright rectangles as people, ann.json with their boxes; image 1
    also has a crowd box and a person without keypoints."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        image = np.full((size[0], size[1], 3), 40, np.uint8)
        for k, (x, y, w, h) in enumerate([(10 + 5 * image_id, 20, 20, 50), (70, 10, 30, 70)]):
            cv2.rectangle(image, (x, y), (x + w, y + h), (200, 150, 100), -1)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                "num_keypoints": 0 if k else 5, "bbox": [x, y, w, h], "area": w * h,
                                "keypoints": [0] * 51})
        cv2.imwrite(str(folder / "images" / f"{image_id}.png"), image)
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": size[0], "width": size[1]})
    annotations.append({"id": 99, "image_id": 1, "category_id": 1, "iscrowd": 1, "num_keypoints": 0,
                        "bbox": [0, 0, 12, 12], "area": 144, "keypoints": [0] * 51})
    return write_coco_json(folder / "ann.json", images, annotations)


def test_dataset_keeps_every_non_crowd_box_and_masks_crowds(tmp_path):
    from pose_core.train.data import Source
    from pose_core.train.detector_data import DetectorDataset

    ann = write_coco(tmp_path)
    dataset = DetectorDataset([Source(str(ann), str(tmp_path / "images"))], size=128)
    assert len(dataset) == 3
    assert len(dataset.samples[0][1]) == 2 and len(dataset.samples[0][2]) == 1
    item = dataset.sample(0)          # the inference letterbox: scale 1, top-left
    assert item["image"].shape == (3, 128, 128) and item["reg_mask"].sum() == 2
    assert item["heat_weight"][0, 0, 0] == 0 and item["heat_weight"].sum() < 16 * 16
    augmented = dataset[(0, 7)]
    assert augmented["image"].shape == (3, 128, 128) and augmented["heatmap"].shape == (1, 16, 16)


def run_script(tmp_path, ann, *extra):
    from pose_core.train import train_detector

    train_detector.main(["--source", f"{ann}:{tmp_path / 'images'}:1", "--crop", "64", "--batch", "2",
                         "--workers", "0", "--threads", "1", "--log", str(tmp_path / "log.csv"),
                         "--log-every", "1", *map(str, extra)])


def test_training_script_checkpoints_and_resumes(tmp_path, capsys):
    ann = write_coco(tmp_path)
    ckpt, weights = tmp_path / "det.ckpt", tmp_path / "det.pt"
    run_script(tmp_path, ann, "--max-steps", 2, "--ckpt", ckpt, "--save-weights", weights)
    assert ckpt.is_file() and weights.is_file()
    progress = json.loads(weights.with_suffix(".progress.json").read_text())
    assert progress["step"] == 2 and progress["model"] == "person-detector"
    run_script(tmp_path, ann, "--max-steps", 3, "--ckpt", ckpt)
    assert "resumed" in capsys.readouterr().out
    assert torch.load(ckpt, weights_only=False)["step"] == 3
    run_script(tmp_path, ann, "--max-steps", 4, "--resume-weights", weights, "--ckpt", tmp_path / "other.ckpt")
    assert torch.load(tmp_path / "other.ckpt", weights_only=False)["step"] == 4
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert rows and all(r["variant"] == "person-detector" and np.isfinite(float(r["loss"])) for r in rows)


# ---------------------------------------------------------------- export and registry


@pytest.fixture(scope="module")
def untrained_detector(tmp_path_factory):
    """TEST-ONLY random weights of person-detector, .pt and fp16-stored .onnx."""
    from pose_core.export_onnx import DETECTOR_OUTPUT_NAMES, export_onnx
    from pose_core.models.io import load_torch_weights, save_torch_weights

    folder = tmp_path_factory.mktemp("untrained_detector")
    torch.manual_seed(0)
    spec = registry.get_spec("person-detector")
    save_torch_weights(spec.build(), folder / "person-detector.pt")
    model = load_torch_weights(spec, folder / "person-detector.pt")
    export_onnx(model, folder / "person-detector.onnx", 128, 128, output_names=DETECTOR_OUTPUT_NAMES,
                dynamic_batch=True, fp16_weights=True)
    return folder


def test_onnx_export_equals_pytorch(untrained_detector):
    from pose_core.backends import OnnxRunner, TorchRunner
    from pose_core.models.io import load_torch_weights

    spec = registry.get_spec("person-detector")
    onnx_runner = OnnxRunner(untrained_detector / "person-detector.onnx", threads=1)
    torch_runner = TorchRunner(load_torch_weights(spec, untrained_detector / "person-detector.pt"), threads=1)
    batch = np.random.default_rng(0).uniform(0, 255, (1, 3, 96, 160)).astype(np.float32)
    for a, b in zip(onnx_runner(batch), torch_runner(batch)):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-3
    # untrained maps are nearly flat (ties decide which peaks are kept): compare the scores only
    frame = np.random.default_rng(1).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    loose = dict(input_size=160, score_threshold=0.0, top_k=5)
    (ba, sa), (bb, sb) = PersonDetector(onnx_runner, **loose)(frame), PersonDetector(torch_runner, **loose)(frame)
    assert ba.shape == bb.shape and len(sa) > 0
    np.testing.assert_allclose(sa, sb, atol=1e-3)


def test_registry_lists_the_detector_and_keeps_it_out_of_pose_models(untrained_detector, monkeypatch):
    spec = registry.get_spec("person-detector")
    assert spec.kind == "detector" and spec.input_height == 320
    assert spec.onnx_file == "person-detector.onnx" and spec.torch_file == "person-detector.pt"
    assert "person-detector" not in registry.pose_models() and registry.DEFAULT_MODEL in registry.pose_models()
    with pytest.raises(ModelUnavailable, match="person detector"):
        registry.load_pipeline("person-detector", weights=untrained_detector / "person-detector.onnx")
    monkeypatch.setattr(registry, "WEIGHTS_DIR", untrained_detector)
    monkeypatch.setattr(registry, "DEFAULT_DETECTOR", "person-detector")
    assert isinstance(registry.make_detector(None, threads=1), PersonDetector)
    detector = registry.load_detector(threads=1)
    boxes, scores = detector(np.zeros((48, 64, 3), np.uint8))
    assert boxes.shape == (len(scores), 4) and "detect" in detector.timings
    with pytest.raises(ModelUnavailable, match="not a person detector"):
        registry.load_detector("mnv2-hwloss")
    monkeypatch.setattr(registry, "WEIGHTS_DIR", registry.REPO_ROOT / "weights" / "absent-in-this-test")
    with pytest.raises(ModelUnavailable, match=registry.DEFAULT_MODEL):   # the fallback: bottom-up boxes
        registry.make_detector(None)
    fake = lambda frame: (np.zeros((0, 4)), np.zeros(0))  # noqa: E731
    assert registry.make_detector(fake) is fake


def test_gui_choices_leave_the_detector_out():
    main_window = pytest.importorskip("app.main_window")
    names = [c.name for c in main_window.registry_choices()]
    assert "person-detector" not in names and registry.DEFAULT_MODEL in names


def test_cli_lists_the_detector_and_refuses_it_as_a_pose_model(tmp_path):
    from conftest import run_main

    result = run_main("--list-models")
    rows = dict((r.split("\t")[0], r.split("\t")[1]) for r in result.stdout.splitlines())
    assert rows["person-detector"] == "detector"
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    result = run_main("--image", image, "--model", "ldlc-openpose-t6-fast", "--detector", "person-detector")
    assert result.returncode == 2 and "--detector is for the top-down models" in result.stderr
