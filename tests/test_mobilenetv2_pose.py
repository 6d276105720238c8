"""The MoveNet-initialisable top-down network "mnv2-hwloss": its MobileNetV2 backbone against
the bottom-up t6 backbone it shares layers with, MoveNet initialisation of blocks 13..16 and
Conv_1, the input convention, the ONNX export at any crop size, and its registry entry.
No cache or data needed: the "converted" MoveNet weights here are random tensors under
the converter's names (tests/test_movenet_backbone.py checks the real conversion)."""
import numpy as np
import pytest

from pose_core import registry
from pose_core.errors import ModelUnavailable
from pose_core.skeleton import NUM_KEYPOINTS

torch = pytest.importorskip("torch")

from pose_core.export_onnx import TOPDOWN_OUTPUT_NAMES, export_onnx  # noqa: E402
from pose_core.models.bottomup import (BACKBONE_BLOCKS, MOBILENETV2_BLOCKS, build_ldlc_openpose,  # noqa: E402
                                       load_movenet_backbone, movenet_layer_names)
from pose_core.models.mobilenetv2_pose import build_mobilenetv2_pose  # noqa: E402
from pose_core.models.mobilenetv3_pose import TopDownPoseNet, build_mobilenetv3_pose  # noqa: E402


def randomise_batchnorm(module, generator):
    """Non-trivial BN statistics, so that a wrongly placed layer shows."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


def fake_movenet_state(generator):
    """Random tensors under the converter's keys and shapes, for the full MobileNetV2."""
    backbone = build_mobilenetv2_pose().backbone
    state = {}
    for name, path in movenet_layer_names(len(MOBILENETV2_BLOCKS), final_conv=True):
        conv = backbone.get_submodule(path).conv
        state[f"{name}.weight"] = torch.randn(conv.weight.shape, generator=generator) * 0.2
        state[f"{name}.bias"] = torch.randn(conv.out_channels, generator=generator) * 0.1
    return state


@pytest.fixture(scope="module")
def model():
    """TEST-ONLY: random weights, BN statistics randomised (not a trained network)."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = build_mobilenetv2_pose()
    randomise_batchnorm(net, generator)
    return net.eval()


def test_shapes_parameters_and_shared_head(model):
    assert isinstance(model, TopDownPoseNet)
    with torch.no_grad():
        heatmaps = model(torch.rand(2, 3, 256, 192) * 255)
        features = model.backbone(torch.zeros(1, 3, 256, 192))
    assert heatmaps.shape == (2, NUM_KEYPOINTS, 64, 48)
    assert features.shape == (1, 1280, 8, 6)   # output stride 32, MobileNetV2's final conv
    assert sum(p.numel() for p in model.backbone.parameters()) == 2_223_872  # MobileNetV2 1.0 without its classifier
    head = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    paper = {k: v.shape for k, v in build_mobilenetv3_pose().state_dict().items() if not k.startswith("backbone.")}
    assert head.keys() == paper.keys()   # the same head and attention, only the input width differs
    assert [k for k in head if head[k] != paper[k]] == ["deconv.0.0.weight", "deconv.0.1.weight", "deconv.0.1.bias",
                                                        "deconv.0.1.running_mean", "deconv.0.1.running_var",
                                                        "deconv.0.3.weight"]


def test_input_is_normalised_as_the_bottomup_t6_model():
    net = build_mobilenetv2_pose()
    x = torch.rand(1, 3, 8, 8) * 255
    torch.testing.assert_close((x - net.mean) / net.std, x / 127.5 - 1, rtol=0, atol=1e-6)


def test_backbone_agrees_with_the_t6_backbone_on_their_shared_blocks():
    """Same weights in both: stem and blocks 0..5 are identical layers; from block 6 on the
    bottom-up backbone runs at output stride 8 (block 6 unstrided, blocks 7..12 dilated by
    2), which on the odd pixels is exactly the plain network at stride 16. A wrong stride,
    dilation, SAME padding side or block order breaks the equalities."""
    generator = torch.Generator().manual_seed(1)
    t6 = build_ldlc_openpose("t6", condconv_blocks=())
    randomise_batchnorm(t6, generator)
    net = build_mobilenetv2_pose()
    missing, unexpected = net.backbone.load_state_dict(t6.backbone.state_dict(), strict=False)
    assert not unexpected and missing and all(k.split(".")[1] in ("13", "14", "15", "16") or k.startswith("final.")
                                              for k in missing)
    t6, net = t6.eval(), net.eval()
    x = torch.rand(2, 3, 96, 64, generator=generator) * 2 - 1
    with torch.no_grad():
        a, b = net.backbone.stem(x), t6.backbone.stem(x)
        torch.testing.assert_close(a, b)
        for i in range(len(BACKBONE_BLOCKS)):
            a, b = net.backbone.blocks[i](a), t6.backbone.blocks[i](b)
            expected = b if i < 6 else b[..., 1::2, 1::2]
            torch.testing.assert_close(a, expected, rtol=1e-4, atol=1e-4)
    assert a.shape == (2, 96, 6, 4) and a.abs().max() > 0.1


def test_movenet_initialisation_fills_blocks_13_to_16_and_conv_1():
    generator = torch.Generator().manual_seed(2)
    state = fake_movenet_state(generator)
    net = load_movenet_backbone(build_mobilenetv2_pose(), state).eval()
    backbone = net.backbone
    assert torch.equal(backbone.blocks[13].depthwise.conv.weight, state["block_13_depthwise.weight"])
    assert torch.equal(backbone.blocks[16].project.conv.weight, state["block_16_project.weight"])
    assert torch.equal(backbone.final.conv.weight, state["Conv_1.weight"])
    # folded BN: conv + offset, so block 16's project is a plain conv with the offset as bias
    x = torch.randn(1, 960, 5, 3, generator=generator)
    with torch.no_grad():
        got = backbone.blocks[16].project(x)
    expected = torch.nn.functional.conv2d(x, state["block_16_project.weight"], state["block_16_project.bias"])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the bottom-up model takes the stem and blocks 0..12 of the same state, nothing more
    t6 = load_movenet_backbone(build_ldlc_openpose("t6", condconv_blocks=()), state)
    assert torch.equal(t6.backbone.blocks[12].expand.conv.weight, backbone.blocks[12].expand.conv.weight)


def test_onnx_export_takes_any_crop_size_and_batch(model, tmp_path):
    """export_onnx checks 256x192 and 264x208 (odd sizes at strides 8..32) with batch 2: the
    TF SAME pads follow the input size in the ONNX graph."""
    from pose_core.backends import OnnxRunner

    path = export_onnx(model, tmp_path / "untrained-mnv2.onnx", 256, 192, output_names=TOPDOWN_OUTPUT_NAMES,
                       dynamic_batch=True)
    batch = np.random.default_rng(0).uniform(0, 255, (3, 3, 224, 160)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    (got,) = OnnxRunner(path, threads=1)(batch)
    assert got.shape == (3, NUM_KEYPOINTS, 56, 40) and expected.std() > 1e-4
    np.testing.assert_allclose(got, expected, atol=1e-4 * float(np.abs(expected).max()))


def test_registered_as_a_topdown_model():
    spec = registry.get_spec("mnv2-hwloss")
    assert spec.kind == "top-down" and spec.layout == "coco17" and spec.input_height == 256
    assert spec.onnx_file == "mnv2-hwloss.onnx" and spec.torch_file == "mnv2-hwloss.pt"
    assert registry.get_spec("mnv3-hwloss").build is not spec.build
    if not spec.onnx_path.is_file():
        with pytest.raises(ModelUnavailable, match="cannot run"):
            registry.load_pipeline("mnv2-hwloss")
