"""centernet-person: CenterNet's whole COCO detector rebuilt in PyTorch and narrowed to people.

The reference runs CenterNet's tfjs graph in NumPy (float64), backbone blocks as in
test_centernet_backbone, neck and heads written here from the graph's nodes: separable convs,
TensorFlow's legacy x2 bilinear resize, the squeeze-excite gate, the 80-class head and the
box head's (l, t, r, b) x 16 distances from 4 (gx, gy).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from pose_core.models.centernet_person import (STRIDE, box_head_from_distances, build_centernet_person,  # noqa: E402
                                               load_centernet_detector, upsample2_tf_legacy)
from pose_core.person_detector import PersonDetector, decode_detections  # noqa: E402
from conftest import PHOTO, tf_resize2_reference, tf_same_conv  # noqa: E402
from test_centernet_backbone import (MODEL_JSON, NUM_BLOCKS, graph, graph_block, graph_conv, strides,  # noqa: E402,F401
                                     tfjs)

from tools.convert_centernet_detector import convert_detector, main as convert_main  # noqa: E402


@pytest.fixture(scope="module")
def state(tfjs):
    return convert_detector(tfjs)


@pytest.fixture(scope="module")
def model(state):
    return load_centernet_detector(build_centernet_person(), state).eval()


def separable_reference(x, scope, tfjs, root="CenternetHead"):
    depthwise = tf_same_conv(x, tfjs[f"{root}/{scope}/depthwise_weights"], depthwise=True)
    return tf_same_conv(depthwise, tfjs[f"tower_0/{root}/{scope}/separable_conv2d_weights"]) + \
        tfjs[f"tower_0/{root}/{scope}/separable_conv2d_bn_offset"]


def graph_reference(rgb, tfjs, strides):
    """(class logits H/4 x W/4 x 80, boxes H/4 x W/4 x 4 as x1y1x2y2 input pixels) of the graph."""
    x = graph_conv(rgb, "MobilenetV3/Conv", tfjs, strides)
    taps = {}
    for index in range(NUM_BLOCKS):
        if index in (3, 5):
            taps[index] = graph_conv(x, f"MobilenetV3/expanded_conv_{index}/expand", tfjs, strides)
        x = graph_block(x, index, tfjs, strides)
        if index == 11:
            taps[11] = x
    x = graph_conv(x, "extern1", tfjs, strides)

    def lateral(feature, name):
        reduced = tf_same_conv(feature, tfjs[f"tower_0/CenternetHead/{name}/1x1/Conv2D_weights"])
        reduced = np.maximum(reduced + tfjs[f"tower_0/CenternetHead/{name}/1x1/Conv2D_bn_offset"], 0)
        return separable_reference(reduced, f"{name}/3x3", tfjs)

    for step, (tap, name) in zip(("c5", "c4", "c3"), ((11, "c4_reverse"), (5, "c3_reverse"), (3, "c2_reverse"))):
        up = sum(separable_reference(x, f"{step}_upsample/branch_{b}_upsample_resize", tfjs) for b in "xy")
        upsampled = tf_resize2_reference(up, half_pixel_centers=False)
        x = np.maximum(np.concatenate([lateral(taps[tap], name), upsampled], axis=-1), 0)
    hidden = x.mean((0, 1)) @ tfjs["tower_0/CenternetHead/conv1x1_se_a/Conv2D_weights"][0, 0]
    hidden = np.maximum(hidden + tfjs["tower_0/CenternetHead/conv1x1_se_a/Conv2D_bn_offset"], 0)
    x = x / (1 + np.exp(-(hidden @ tfjs["CenternetHead/conv1x1_se_b/weights"][0, 0])))

    def head(name):
        y = tf_same_conv(x, tfjs[f"CenternetHead/{name}/depthwise_weights"], depthwise=True)
        return tf_same_conv(y, tfjs[f"CenternetHead/{name}/pointwise_weights"]) + tfjs[f"CenternetHead/{name}/biases"]

    ltrb = head("centernet_wh_output") * tfjs["tower_0/mul/y"]
    gy, gx = np.indices(x.shape[:2]) * 4.0
    boxes = np.stack([gx - ltrb[..., 0], gy - ltrb[..., 1], gx + ltrb[..., 2], gy + ltrb[..., 3]], axis=-1)
    return head("centernet_cls_output"), boxes


def decoded_boxes(size, offset):
    """Every cell's box from (size, offset) maps (2, h, w) as pose_core.person_detector decodes them."""
    gy, gx = np.indices(size.shape[1:]).astype(np.float64)
    cx, cy = (gx + offset[0]) * STRIDE, (gy + offset[1]) * STRIDE
    half_w, half_h = size[0] * STRIDE / 2, size[1] * STRIDE / 2
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


def test_upsample_is_tensorflows_legacy_bilinear_resize():
    x = np.random.default_rng(0).normal(size=(5, 7, 3))
    got = upsample2_tf_legacy(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))[0].numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(got, tf_resize2_reference(x, half_pixel_centers=False), atol=1e-12)


def test_box_head_rewrite_is_exact():
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(4, 6, 1, 1, generator=generator), torch.randn(4, generator=generator)
    features = torch.randn(1, 6, 3, 5, generator=generator)
    ltrb = (torch.nn.functional.conv2d(features, weight, bias) * 16)[0].numpy().transpose(1, 2, 0)
    new_weight, new_bias = box_head_from_distances(weight, bias)
    out = torch.nn.functional.conv2d(features, new_weight, new_bias)[0].numpy()
    gy, gx = np.indices((3, 5)) * 4.0
    expected = np.stack([gx - ltrb[..., 0], gy - ltrb[..., 1], gx + ltrb[..., 2], gy + ltrb[..., 3]], axis=-1)
    np.testing.assert_allclose(decoded_boxes(out[:2], out[2:]), expected, atol=1e-4)


def test_converter_covers_every_head_tensor(state, tfjs, tmp_path):
    head_tensors = [n for n, a in tfjs.items() if "CenternetHead/" in n and a.ndim
                    and "reduction_indices" not in n and "up_sampling2d" not in n and "/axis" not in n]
    assert len([k for k in state if k.startswith("CenternetHead/")]) == len(head_tensors) == 42
    assert len(state) == 124 + 42
    out = tmp_path / "detector.pt"
    convert_main(["--model-json", str(MODEL_JSON), "--out", str(out)])
    assert torch.load(out, weights_only=True).keys() == state.keys()


def test_whole_detector_on_a_photo_matches_the_graph(model, tfjs, strides):
    """The person channel and every cell's box of the PyTorch model against the graph on a real
    photo (odd multiples of 32: every SAME pad and resize edge is exercised)."""
    rgb = cv2.cvtColor(cv2.resize(cv2.imread(str(PHOTO)), (160, 96)), cv2.COLOR_BGR2RGB).astype(np.float64)
    logits, boxes = graph_reference(rgb, tfjs, strides)
    with torch.no_grad():
        center, size, offset = (o[0].numpy() for o in model(torch.from_numpy(rgb.transpose(2, 0, 1)[None]).float()))
    assert center.shape == (1, 24, 40) and size.shape == offset.shape == (2, 24, 40)
    scale = np.abs(logits[..., 0]).max()
    np.testing.assert_allclose(center[0], logits[..., 0], atol=1e-2 * scale)
    # The graph's fp16 hard-swish 1/6 (0.02% low) compounds over 30 activations and the box
    # head scales by 16: a few cells near a ReLU's kink differ by a few pixels.
    error = np.abs(decoded_boxes(size, offset) - boxes) / np.abs(boxes).max()
    assert np.median(error) < 1e-4 and (error > 1e-2).mean() < 2e-3 and error.max() < 5e-2


def test_detects_the_two_players_through_onnx(model, tmp_path):
    """Exported to ONNX and run by PersonDetector (stride 4 read from the maps): the bundled
    photo's two players, each box around its player."""
    from pose_core.backends import OnnxRunner
    from pose_core.export_onnx import DETECTOR_OUTPUT_NAMES, export_onnx

    path = tmp_path / "centernet-person.onnx"
    export_onnx(model, path, 320, 320, output_names=DETECTOR_OUTPUT_NAMES, dynamic_batch=True)
    boxes, scores = PersonDetector(OnnxRunner(path, threads=1))(cv2.imread(str(PHOTO)))
    confident = boxes[scores > 0.4]
    assert len(confident) == 2
    left, right = sorted(confident.tolist())
    assert left[0] < 100 and left[2] < 250 and right[0] > 350 and right[2] > 550   # 640 x 480 photo
    assert all(b[3] - b[1] > 300 for b in (left, right))                             # whole people
    raw = decode_detections(*(o[0] for o in OnnxRunner(path, threads=1)(
        np.zeros((1, 3, 320, 320), np.float32))), stride=STRIDE)
    assert len(raw[0]) == 0                                                          # nobody in grey
