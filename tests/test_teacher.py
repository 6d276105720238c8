"""MoveNet teacher pipelines without the converted teacher: decoding, letterbox mapping,
crops, and the pipelines on tiny stand-in ONNX models that answer a fixed output."""
import numpy as np
import pytest

from pose_core import registry
from pose_core.errors import ModelUnavailable
from pose_core.result import People
from pose_core.teacher import (MoveNetMultiPose, MoveNetTeacher, MoveNetThunder, decode_multipose,
                               letterbox, square_crop)


def _multipose_output(people):
    """(1, 6, 56) array: people is a list of (keypoints (17, 3) as y, x, score, box, score)."""
    out = np.zeros((1, 6, 56), np.float32)
    for slot, (yxs, box, score) in enumerate(people):
        out[0, slot, :51] = np.asarray(yxs, np.float32).reshape(-1)
        out[0, slot, 51:55] = box
        out[0, slot, 55] = score
    return out


def _constant_model(path, input_shape, output):
    """A tiny ONNX model: RGB int32 NHWC in, `output` out (plus 0 x the input's mean)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Cast", ["input"], ["as_float"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["as_float"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
             helper.make_node("Add", ["answer", "nothing"], ["output"])]
    graph = helper.make_graph(
        nodes, "constant",
        [helper.make_tensor_value_info("input", TensorProto.INT32, input_shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(output.shape))],
        [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(output, "answer")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_letterbox_pads_to_multiples_of_32_and_scales_longer_side():
    frame = np.full((100, 200, 3), (10, 20, 30), np.uint8)   # BGR
    image, scale = letterbox(frame, 256)
    assert scale == pytest.approx(1.28)
    assert image.shape == (1, 128, 256, 3)
    assert image.dtype == np.int32
    assert tuple(image[0, 0, 0]) == (30, 20, 10)            # RGB
    tall, _ = letterbox(np.zeros((300, 100, 3), np.uint8), 256)
    assert tall.shape == (1, 256, 96, 3)                    # 85 px wide, padded to 96
    assert not tall[0, :, 90:].any()


def test_decode_multipose_maps_back_to_image_pixels():
    # A 400 x 200 (h x w) frame letterboxed to 256: scale 0.64, input 256 x 128.
    yxs = np.zeros((17, 3), np.float32)
    yxs[:, 0], yxs[:, 1], yxs[:, 2] = 0.5, 0.25, 0.8      # y = 128 px, x = 32 px in the input
    box = (0.25, 0.125, 0.75, 0.5)                        # ymin, xmin, ymax, xmax
    weak = (np.zeros((17, 3)), (0, 0, 0, 0), 0.05)
    people = decode_multipose(_multipose_output([weak, (yxs, box, 0.3), (yxs, box, 0.9)]),
                              (256, 128), 0.64, min_score=0.1)
    assert len(people) == 2
    np.testing.assert_allclose(people.scores, [0.9, 0.3])  # best first, the weak slot dropped
    np.testing.assert_allclose(people.keypoints[0, :, 0], 32 / 0.64, rtol=1e-5)
    np.testing.assert_allclose(people.keypoints[0, :, 1], 128 / 0.64, rtol=1e-5)
    np.testing.assert_allclose(people.keypoints[0, :, 2], 0.8)
    np.testing.assert_allclose(people.boxes[0], [16 / 0.64, 64 / 0.64, 64 / 0.64, 192 / 0.64], rtol=1e-5)


def test_square_crop_is_centred_on_the_box():
    x0, y0, side = square_crop((10, 20, 50, 120), padding=1.2)
    assert side == pytest.approx(120)
    assert (x0 + side / 2, y0 + side / 2) == pytest.approx((30, 70))
    # stays centred even when it leaves the frame
    x0, y0, side = square_crop((-5, 0, 15, 40), padding=1.0)
    assert (x0, y0, side) == pytest.approx((-15, 0, 40))


def test_multipose_pipeline_on_a_stand_in_model(tmp_path):
    yxs = np.tile(np.float32([0.5, 0.5, 0.7]), (17, 1))
    out = _multipose_output([(yxs, (0.25, 0.25, 0.75, 0.75), 0.6)])
    path = _constant_model(tmp_path / "mp.onnx", [1, "h", "w", 3], out)
    frame = np.zeros((240, 320, 3), np.uint8)               # input 192 x 256 (scale 0.8)
    people = MoveNetMultiPose(path, size=256)(frame)
    assert len(people) == 1 and {"preprocess", "network", "grouping"} <= set(people.timings)
    np.testing.assert_allclose(people.keypoints[0, 0], [160, 120, 0.7], rtol=1e-5)
    np.testing.assert_allclose(people.boxes[0], [80, 60, 240, 180], rtol=1e-5)


def test_teacher_runs_thunder_on_each_person_crop(tmp_path):
    mp_yxs = np.tile(np.float32([0.5, 0.5, 0.7]), (17, 1))
    mp_out = _multipose_output([(mp_yxs, (0.25, 0.25, 0.75, 0.75), 0.6)])
    mp_path = _constant_model(tmp_path / "mp.onnx", [1, "h", "w", 3], mp_out)
    thunder_out = np.zeros((1, 1, 17, 3), np.float32)
    thunder_out[..., 0], thunder_out[..., 1], thunder_out[..., 2] = 0.25, 0.75, 0.5
    th_path = _constant_model(tmp_path / "th.onnx", [1, 256, 256, 3], thunder_out)
    frame = np.zeros((256, 256, 3), np.uint8)
    teacher = MoveNetTeacher(MoveNetMultiPose(mp_path, 256), MoveNetThunder(th_path, padding=1.0))
    people = teacher(frame)
    # MultiPose box 64..192 (side 128), so Thunder's (y 0.25, x 0.75) is (x 160, y 96).
    np.testing.assert_allclose(people.keypoints[0, :, :2], np.tile([160, 96], (17, 1)), rtol=1e-5)
    assert people.scores[0] == pytest.approx(0.6 * 0.5)
    assert {"detect", "network"} <= set(people.timings)


def test_registry_lists_teachers_and_says_how_to_convert(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    for name in ("movenet-multipose", "movenet-teacher"):
        spec = registry.MODELS[name]
        missing = registry.ModelSpec(**{**spec.__dict__, "onnx_file": str(tmp_path / "absent.onnx")})
        assert registry.weights_status(missing) == "not converted: run tools/convert_movenet_teacher.py"
        assert registry.weights_status(spec, "torch") == "no torch weights for this model"
    with pytest.raises(ModelUnavailable):
        registry.load_pipeline("movenet-teacher", backend="torch")


# ----------------------------------------------------------------- tools/pseudo_label.py
def _load_pseudo_label():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "tools" / "pseudo_label.py"
    spec = importlib.util.spec_from_file_location("pseudo_label", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pseudo_label = _load_pseudo_label()


def _standing_person(cx, top, height, score=0.9):
    """(17, 3) x, y, score of an upright person facing the camera (COCO order)."""
    u = height / 10
    offsets = [(0, 0.5), (-0.3, 0.3), (0.3, 0.3), (-0.6, 0.4), (0.6, 0.4), (-1.5, 2), (1.5, 2),
               (-2, 3.5), (2, 3.5), (-2.2, 5), (2.2, 5), (-1, 5.5), (1, 5.5), (-1, 7.5), (1, 7.5),
               (-1, 9.5), (1, 9.5)]
    kp = np.array([(cx + dx * u, top + dy * u, score) for dx, dy in offsets], np.float32)
    kp[1::2, 0], kp[2::2, 0] = cx + np.abs(kp[1::2, 0] - cx), cx - np.abs(kp[2::2, 0] - cx)  # left on image right
    return kp


class _FakeTeacher:
    """Stands in for MoveNetTeacher: fixed detections and a fixed Thunder answer."""

    def __init__(self, people, thunder_keypoints):
        self.people = people
        self.thunder = lambda frame, box: thunder_keypoints.copy()

    def __call__(self, frame, size=None):
        return self.people


def test_multipose_size_does_not_upscale_small_images():
    assert pseudo_label.multipose_size(183, 275) == 256
    assert pseudo_label.multipose_size(240, 320) == 320
    assert pseudo_label.multipose_size(480, 640) == 384


def test_lsp_joints_map_to_coco_order():
    joints = np.zeros((14, 3), np.float32)
    joints[:, 0], joints[:, 1], joints[:, 2] = np.arange(14) * 10 + 5, 50, 1
    joints[7, 2] = 0                              # right elbow invisible: no coordinates
    person = pseudo_label.lsp_person(joints)
    kp = person["keypoints"]
    assert kp[16, 0] == 5 and kp[14, 0] == 15     # right ankle, right knee
    assert kp[5, 0] == 95 and kp[6, 0] == 85      # left shoulder, right shoulder
    assert kp[8, 2] == 0                          # the invisible right elbow stays unlabelled
    assert not kp[:5, 2].any()                    # no face keypoints in LSP
    assert person["box"][0] < 5 and person["box"][2] > 135   # the head top widens the box


def test_lspet_labels_are_mirrored_or_rescaled_to_match_the_teacher():
    teacher_kp = _standing_person(100, 20, 150)
    labels = teacher_kp.copy()
    labels[:, 2] = 2
    mirrored = labels[pseudo_label.COCO_FLIP_INDEX]
    person = pseudo_label.real_person(mirrored, (60, 10, 140, 180), noisy_labels=True)
    fixed, fix = pseudo_label.align_lsp_labels(person, [teacher_kp], (300, 250))
    assert fix == "mirrored"
    np.testing.assert_allclose(fixed["keypoints"], labels)

    unscaled = labels.copy()
    unscaled[:, :2] *= 1.3                        # joints in the original image's pixels
    person = pseudo_label.real_person(unscaled, (78, 13, 182, 234), noisy_labels=True)
    fixed, fix = pseudo_label.align_lsp_labels(person, [teacher_kp], (400, 300))
    assert fix == "rescaled"
    np.testing.assert_allclose(fixed["keypoints"][:, :2], labels[:, :2], rtol=1e-4)
    # the same labels on an image below the 400 px cap are not in doubt: kept as they are
    kept, fix = pseudo_label.align_lsp_labels(person, [teacher_kp], (300, 250))
    assert fix == ""
    np.testing.assert_array_equal(kept["keypoints"], unscaled)

    scrambled = labels.copy()
    scrambled[:, :2] = np.random.default_rng(0).uniform(0, 400, (17, 2))
    person = pseudo_label.real_person(scrambled, (0, 0, 400, 400), noisy_labels=True)
    assert pseudo_label.align_lsp_labels(person, [teacher_kp], (400, 300)) == (None, "dropped")


def test_pseudo_label_coco_file(tmp_path):
    from pycocotools.coco import COCO

    labelled_kp = _standing_person(100, 20, 150)
    other_kp = _standing_person(250, 40, 120)
    other_kp[0, 2] = 0.1                          # one unconfident teacher joint
    other_kp[16, 0] = 490                         # one confident joint beyond the image (480 wide)
    detections = People.from_keypoints(np.stack([labelled_kp, other_kp]), [0.8, 0.7])
    thunder = labelled_kp.copy()
    thunder[:, :2] += 3                           # Thunder is a bit off on the labelled person
    thunder[3, 2] = 0.2
    real_kp = np.zeros((17, 3), np.float32)
    real_kp[5:] = labelled_kp[5:]
    real_kp[5:, 2] = 2
    real_kp[7, 2] = 1                             # labelled but occluded
    real = [pseudo_label.real_person(real_kp, (70, 20, 130, 170)),
            pseudo_label.real_person(np.zeros((17, 3)), (400, 10, 430, 60))]   # no keypoints
    frame = np.zeros((240, 480, 3), np.uint8)
    people, dropped = pseudo_label.label_image(_FakeTeacher(detections, thunder), frame, real, 256)
    assert dropped == 0
    annotations = [pseudo_label.person_annotation(i + 1, 7, p, (240, 480), 0.3) for i, p in enumerate(people)]
    document = pseudo_label.coco_document([{"id": 7, "file_name": "a.jpg", "width": 480, "height": 240}],
                                          annotations, "test")
    path = tmp_path / "test.json"
    path.write_text(__import__("json").dumps(document))
    coco = COCO(str(path))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[7]))
    assert len(anns) == 3                         # the other person, the labelled one, the keypoint-free box
    for ann in anns:
        assert {"bbox", "area", "num_keypoints", "keypoints", "keypoint_scores", "teacher_score"} <= set(ann)
        assert len(ann["keypoints"]) == 51 and len(ann["keypoint_scores"]) == 17
        v = np.array(ann["keypoints"]).reshape(17, 3)[:, 2]
        assert ann["num_keypoints"] == int((v > 0).sum())
    other, labelled, box_only = sorted(anns, key=lambda a: a["id"])
    kp = np.array(other["keypoints"]).reshape(17, 3)
    assert kp[0].tolist() == [0, 0, 0] and kp[16].tolist() == [0, 0, 0]
    assert (kp[1:16, 2] == 2).all()                 # v=2 only where confident and in the image
    kp = np.array(labelled["keypoints"]).reshape(17, 3)
    np.testing.assert_allclose(kp[5:, :2], labelled_kp[5:, :2], atol=0.01)   # real labels win
    assert kp[7, 2] == 1 and kp[6, 2] == 2
    np.testing.assert_allclose(kp[0, :2], thunder[0, :2], atol=0.01)         # the teacher fills the face
    assert kp[3, 2] == 0                                                      # unconfident teacher joint
    assert labelled["keypoint_scores"][5] == 1.0
    assert box_only["num_keypoints"] == 0 and box_only["bbox"] == [400, 10, 30, 50]
