"""MoveNet backbones: conversion from tfjs and initialisation of a "t6" network (Lightning's
MobileNetV2 1.0) and a "t6w15" one (MultiPose's MobileNetV2 1.5).

References are computed from the tfjs weights directly, in NumPy, with TensorFlow
'SAME' padding, so they share no code with the PyTorch path.
"""
import sys

import numpy as np
import pytest
import torch

from pose_core.errors import WeightsError
from pose_core.models.bottomup import build_ldlc_openpose, load_movenet_backbone
from pose_core.models.condconv import CondConvInvertedResidual
from pose_core.registry import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from tools.convert_movenet_backbone import LAYER_PREFIX, convert_backbone, main as convert_main  # noqa: E402
from tools.tfjs_weights import load_tfjs_model  # noqa: E402
from conftest import tf_same_conv  # noqa: E402

MODEL_JSON = REPO_ROOT / "cache/npm/package/models/movenet-lightning.json"
MULTIPOSE_JSON = REPO_ROOT / "cache/npm/package/models/movenet-multipose.json"


@pytest.fixture(scope="module")
def tfjs():
    return load_tfjs_model(MODEL_JSON)[1]


@pytest.fixture(scope="module")
def state(tfjs):
    return convert_backbone(tfjs)


def tf_conv(x, layer, tfjs, stride=1, dilation=1, act=True):
    """TF SAME conv (or depthwise conv) + folded-BN offset (+ ReLU6) on an H x W x C array."""
    depthwise = layer.endswith("depthwise")
    kind = "depthwise" if depthwise else "Conv2D"
    y = tf_same_conv(x, tfjs[f"{LAYER_PREFIX}{layer}/{kind}_weights"], stride, dilation, depthwise)
    y = y + tfjs[f"{LAYER_PREFIX}{layer}/{kind}_bn_offset"]
    return np.clip(y, 0, 6) if act else y


def tf_block(x, name, tfjs, stride=1, dilation=1, expand=True):
    y = tf_conv(x, f"{name}_expand", tfjs) if expand else x
    y = tf_conv(y, f"{name}_depthwise", tfjs, stride, dilation)
    y = tf_conv(y, f"{name}_project", tfjs, act=False)
    return x + y if y.shape == x.shape and stride == 1 else y


def to_torch(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32))


def to_numpy(t):
    return t[0].detach().numpy().transpose(1, 2, 0)


@pytest.fixture(scope="module")
def model(state):
    return load_movenet_backbone(build_ldlc_openpose("t6"), state, noise_std=0.0).eval()


def test_converted_layers_are_oihw(state):
    assert state["Conv1.weight"].shape == (32, 3, 3, 3)
    assert state["expanded_conv_depthwise.weight"].shape == (32, 1, 3, 3)
    assert state["block_6_project.weight"].shape == (64, 192, 1, 1)
    assert state["block_12_depthwise.weight"].shape == (576, 1, 3, 3)
    assert state["block_12_project.bias"].shape == (96,)
    assert state["block_16_project.weight"].shape == (320, 960, 1, 1)
    assert state["Conv_1.weight"].shape == (1280, 320, 1, 1)
    assert len(state) == 2 * (1 + 2 + 3 * 16 + 1)  # stem, blocks 0..16, Conv_1


@pytest.fixture(scope="module", params=["lightning-t6", "multipose-t6w15"])
def case(request, tfjs, model):
    """(tfjs weights, the network initialised from them) for each backbone a variant loads."""
    if request.param == "lightning-t6":
        return tfjs, model
    weights = load_tfjs_model(MULTIPOSE_JSON)[1]
    return weights, load_movenet_backbone(build_ldlc_openpose("t6w15"), convert_backbone(weights),
                                          noise_std=0.0).eval()


def test_each_variant_has_its_backbone_width(case):
    tfjs, model = case
    stem_channels = model.backbone.stem.conv.out_channels
    assert stem_channels == tfjs[f"{LAYER_PREFIX}Conv1/Conv2D_weights"].shape[-1]
    assert (stem_channels, model.backbone.out_channels) in ((32, 96), (48, 144))


def test_stem_and_first_blocks_match_tf_same_reference(case):
    tfjs, model = case
    # Odd height and even width: TF SAME pads (1, 1) rows but (0, 1) columns at stride 2.
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, size=(37, 50, 3))
    x = pixels / 127.5 - 1
    stem = tf_conv(x, "Conv1", tfjs, stride=2)
    block0 = tf_block(stem, "expanded_conv", tfjs, expand=False)
    block1 = tf_block(block0, "block_1", tfjs, stride=2)
    block2 = tf_block(block1, "block_2", tfjs)
    backbone = model.backbone
    with torch.no_grad():
        got_stem = backbone.stem(to_torch(x))
        got_block0 = backbone.blocks[0](got_stem)
        got_block2 = backbone.blocks[2](backbone.blocks[1](got_block0))
    np.testing.assert_allclose(to_numpy(got_stem), stem, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(to_numpy(got_block0), block0, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(to_numpy(got_block2), block2, rtol=1e-4, atol=1e-3)


def test_condconv_block_starts_as_the_pretrained_dilated_block(case):
    tfjs, model = case
    block = model.backbone.blocks[8]
    assert isinstance(block, CondConvInvertedResidual)
    x = np.random.default_rng(1).normal(size=(11, 13, block.project.conv.out_channels)) * 2
    expected = tf_block(x, "block_8", tfjs, dilation=2)
    with torch.no_grad():
        assert torch.allclose(block.routing(to_torch(x)).sum(), torch.tensor(1.0))
        got = to_numpy(block(to_torch(x)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


def test_noise_breaks_expert_symmetry_only_slightly(state):
    net = load_movenet_backbone(build_ldlc_openpose("t6"), state, noise_std=1e-3,
                                generator=torch.Generator().manual_seed(0))
    experts = net.backbone.blocks[10].depthwise.conv.weight.detach()
    pretrained = state["block_10_depthwise.weight"]
    assert not torch.equal(experts[0], experts[1])
    centre = experts[:, :, :, 2:5, 2:5]
    torch.testing.assert_close(centre, pretrained.expand_as(centre), rtol=0, atol=1e-2 * pretrained.std().item())


def test_t2_model_rejects_movenet_weights(state):
    with pytest.raises(WeightsError, match="t6"):
        load_movenet_backbone(build_ldlc_openpose("t2"), state)


def test_converter_writes_the_state_dict(tmp_path, state):
    out = tmp_path / "backbone.pt"
    convert_main(["--model-json", str(MODEL_JSON), "--out", str(out)])
    saved = torch.load(out, weights_only=True)
    assert saved.keys() == state.keys()
    assert saved["Conv1.weight"].dtype == torch.float32


def test_blocks_13_to_16_and_conv_1_match_tf_same_reference(tfjs, state):
    """The top-down MobileNetV2 ("mnv2-hwloss") takes the rest of MoveNet's backbone: block 13
    strided (odd input: TF SAME pads one pixel on each side), 14-16, and Conv_1 (ReLU6)."""
    from pose_core.models.mobilenetv2_pose import build_mobilenetv2_pose

    backbone = load_movenet_backbone(build_mobilenetv2_pose(), state).eval().backbone
    x = np.random.default_rng(2).normal(size=(9, 7, 96))
    expected = tf_block(x, "block_13", tfjs, stride=2)
    for i in (14, 15, 16):
        expected = tf_block(expected, f"block_{i}", tfjs)
    expected = tf_conv(expected, "Conv_1", tfjs)
    with torch.no_grad():
        got = to_numpy(backbone.final(backbone.blocks[13:](to_torch(x))))
    assert got.shape == (5, 4, 1280)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
