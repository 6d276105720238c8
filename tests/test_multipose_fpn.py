"""ldlc-openpose-fpn's backbone: MoveNet MultiPose's whole feature extractor rebuilt in PyTorch.

The reference runs MultiPose's tfjs graph in NumPy (float64) from the tfjs weights: backbone
blocks with TF SAME padding (test_movenet_backbone's helpers), the feature pyramid with
TensorFlow's half-pixel-centre x2 bilinear resize, the keypoint heatmap head and its sigmoid.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from pose_core.errors import WeightsError  # noqa: E402
from pose_core.models.bottomup import MOBILENETV2_BLOCKS, LDLCOpenPose  # noqa: E402
from pose_core.models.multipose_fpn import (OUT_CHANNELS, LDLCOpenPoseFPN, fpn_layer_names,  # noqa: E402
                                            load_multipose_features)
from pose_core.train.common import build_model, load_heads  # noqa: E402
from conftest import PHOTO, tf_resize2_reference, tf_same_conv  # noqa: E402
from test_movenet_backbone import MULTIPOSE_JSON, tf_block, tf_conv, to_numpy, to_torch  # noqa: E402

from tools.convert_movenet_backbone import FPN_TENSORS, convert_backbone, main as convert_main  # noqa: E402
from tools.tfjs_weights import load_tfjs_model  # noqa: E402


@pytest.fixture(scope="module")
def tfjs():
    return load_tfjs_model(MULTIPOSE_JSON)[1]


@pytest.fixture(scope="module")
def state(tfjs):
    return convert_backbone(tfjs)


@pytest.fixture(scope="module")
def model(state):
    return load_multipose_features(LDLCOpenPoseFPN(), state).eval()


def separable_reference(x, layer, tfjs):
    """Depthwise 3x3 then pointwise + bias, from the converted tensors' tfjs originals."""
    weight, _ = FPN_TENSORS[f"{layer}/depthwise"]
    pointwise, bias = FPN_TENSORS[f"{layer}/pointwise"]
    y = tf_same_conv(x, tfjs[weight], depthwise=True)
    return tf_same_conv(y, tfjs[pointwise]) + tfjs[bias]


def graph_reference(pixels, tfjs):
    """(stride-8 map, stride-4 map, keypoint heatmaps) of MultiPose's graph, H x W x C each."""
    x = tf_conv(pixels / 127.5 - 1, "Conv1", tfjs, stride=2)
    taps = {}
    for index, (_, stride, _) in enumerate(MOBILENETV2_BLOCKS):
        name = "expanded_conv" if index == 0 else f"block_{index}"
        x = tf_block(x, name, tfjs, stride=stride, expand=index > 0)
        taps[index] = x
    x = tf_conv(x, "Conv_1", tfjs)

    def lateral(feature, name):
        weight, bias = FPN_TENSORS[name]
        return tf_same_conv(feature, tfjs[weight]) + tfjs[bias]

    top = lateral(x, "conv2d")
    maps = []
    for name, tap, merge in (("conv2d_1", 9, "separable_conv2d"), ("conv2d_2", 5, "separable_conv2d_1"),
                             ("conv2d_3", 2, "separable_conv2d_2")):
        upsampled = tf_resize2_reference(top, half_pixel_centers=True)
        top = np.maximum(separable_reference(upsampled + lateral(taps[tap], name), merge, tfjs), 0)
        maps.append(top)
    hidden = np.maximum(separable_reference(top, "kpt_heatmap_0", tfjs), 0)
    logits = lateral(hidden, "kpt_heatmap_0/output")
    return maps[1], maps[2], 1 / (1 + np.exp(-logits))


def test_converter_covers_every_pyramid_and_head_tensor(state, tmp_path):
    for layer, _, kind in fpn_layer_names():
        assert f"{layer}.weight" in state and (f"{layer}.bias" in state) == (kind == "conv")
    out = tmp_path / "multipose.pt"
    convert_main(["--model-json", str(MULTIPOSE_JSON), "--out", str(out)])
    assert torch.load(out, weights_only=True).keys() == state.keys()


def test_features_and_heatmaps_on_a_photo_match_the_graph(model, tfjs):
    """MultiPose's stride-8 and stride-4 maps and its 17 keypoint heatmaps on a real photo."""
    pixels = cv2.cvtColor(cv2.resize(cv2.imread(str(PHOTO)), (96, 64)), cv2.COLOR_BGR2RGB).astype(np.float64)
    stride8, stride4, heatmaps = graph_reference(pixels, tfjs)
    features = model.backbone
    with torch.no_grad():
        got8, got4 = features.pyramid(to_torch(pixels / 127.5 - 1))
        got_heatmaps = features.keypoint_heatmaps(got4)
    assert got8.shape == (1, 24, 8, 12) and got_heatmaps.shape == (1, 17, 16, 24)
    for got, expected in ((got8, stride8), (got4, stride4), (got_heatmaps, heatmaps)):
        np.testing.assert_allclose(to_numpy(got), expected, atol=1e-3 * np.abs(expected).max())


def test_any_input_size_is_padded_to_32_and_cropped_back(model):
    """H, W off multiples of 32: the stride-8 output of the zero-padded normalised input, cropped;
    the network's third output is MultiPose's stride-4 heatmaps, cropped the same way."""
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.uniform(0, 255, size=(1, 3, 72, 104)).astype(np.float32))
    padded = torch.nn.functional.pad(pixels / 127.5 - 1, [0, 24, 0, 24])
    with torch.no_grad():
        got = model.backbone_features(pixels)
        whole = model.backbone(padded)
        whole_heatmaps = model.backbone.keypoint_heatmaps(model.backbone.pyramid(padded)[1])
        heatmaps, pafs, keypoint_heatmaps = model(pixels)
    assert got.shape == (1, OUT_CHANNELS, 9, 13) and whole.shape == (1, OUT_CHANNELS, 12, 16)
    torch.testing.assert_close(got, whole[:, :, :9, :13])
    assert heatmaps.shape == (1, 19, 9, 13) and pafs.shape == (1, 38, 9, 13)
    torch.testing.assert_close(keypoint_heatmaps, whole_heatmaps[:, :, :18, :26])


def test_inference_applies_the_cpms_first_conv_to_the_unfolded_maps_with_the_same_result(state):
    """LDLCOpenPoseFPN's eval forward (no fold, concatenation or crop of 188 channels) against
    LDLCOpenPose's (the CPM on the backbone's output, as in training), with random heads and
    batch-norm statistics, at a size off multiples of 32."""
    torch.manual_seed(0)
    model = load_multipose_features(LDLCOpenPoseFPN(), state)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    model.eval()
    pixels = torch.from_numpy(np.random.default_rng(1).uniform(0, 255, (1, 3, 72, 104)).astype(np.float32))
    with torch.no_grad():
        heatmaps, pafs, _ = model(pixels)
        expected_heatmaps, expected_pafs = LDLCOpenPose.forward(model, pixels)
    torch.testing.assert_close(heatmaps, expected_heatmaps, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pafs, expected_pafs, atol=1e-4, rtol=1e-4)


def test_backbone_swap_takes_the_other_models_heads_but_the_cpm_input(tmp_path, state):
    """--init-backbone (MultiPose's converted weights) with --resume-weights t6w15's: the
    pyramid is MultiPose's, every head tensor t6w15's except the CPM's first conv (188 inputs)."""
    init = tmp_path / "multipose.pt"
    torch.save(state, init)
    model = build_model("ldlc-openpose-fpn", init)
    conv = model.backbone.laterals["conv2d_1"]
    torch.testing.assert_close(conv.weight, state["conv2d_1.weight"])
    heads = build_model("ldlc-openpose-t6w15").state_dict()
    load_heads(model, heads, "t6w15")
    own = model.state_dict()
    for key, value in heads.items():
        if key.startswith(("cpm.", "initial_stage.")) and not key.startswith("cpm.align.conv"):
            torch.testing.assert_close(own[key], value)
    assert own["cpm.align.conv.weight"].shape[1] == OUT_CHANNELS


def test_lightning_weights_are_refused():
    lightning = convert_backbone(load_tfjs_model(MULTIPOSE_JSON.with_name("movenet-lightning.json"))[1])
    with pytest.raises(WeightsError):
        load_multipose_features(LDLCOpenPoseFPN(), lightning)


def test_onnx_export_matches_pytorch_off_multiples_of_32(model, tmp_path):
    """export_onnx checks ONNX Runtime against PyTorch at the traced size and at +8, +16 rows
    and columns: the padding to 32 and the crop are shape arithmetic, not traced constants."""
    from pose_core.export_onnx import export_onnx

    out = export_onnx(model, tmp_path / "fpn.onnx", height=256, width=344)
    assert out.exists()


def test_heatmap_teacher_is_multiposes_frozen_feature_extractor_and_only_for_the_fpn_model(tmp_path, state, model):
    from pose_core.errors import InputError
    from pose_core.train.train_bottomup import load_heatmap_teacher

    weights = tmp_path / "multipose.pt"
    torch.save(state, weights)
    teacher = load_heatmap_teacher("ldlc-openpose-fpn", weights, torch.device("cpu"))
    x = torch.rand(1, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), model.backbone(x))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    # t6w15 loads MultiPose's backbone too, but its features carry no heatmaps to hold
    with pytest.raises(InputError, match="needs a model on MultiPose's feature extractor"):
        load_heatmap_teacher("ldlc-openpose-t6w15", weights, torch.device("cpu"))
