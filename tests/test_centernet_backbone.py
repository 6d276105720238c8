"""CenterNet's MobileNetV3-Large 0.75 backbone: conversion from tfjs, initialisation of
"mnv3-hwloss-w075", its ONNX export, its registry entry and the training script's loading.

References run CenterNet's tfjs graph in NumPy (float64) as the graph computes it: the
weights and constants as stored (the 1 / 255 input scaling folded into the stem, hard-swish
and SE gate constants in fp16), the strides from the graph's own nodes, TF SAME padding.
They share no code with the PyTorch path, whose 1 / 6 is exact: hence fp16 tolerances.
"""
import base64
import sys

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pose_core import registry  # noqa: E402
from pose_core.errors import WeightsError  # noqa: E402
from pose_core.models.mobilenetv3_pose import (build_mobilenetv3_pose_w075, centernet_layer_names,  # noqa: E402
                                               load_centernet_backbone)
from pose_core.registry import REPO_ROOT  # noqa: E402
from conftest import PHOTO, tf_same_conv  # noqa: E402

sys.path.insert(0, str(REPO_ROOT))
from tools.convert_centernet_backbone import convert_backbone, main as convert_main  # noqa: E402
from tools.tfjs_weights import load_tfjs_model  # noqa: E402

MODEL_JSON = REPO_ROOT / "cache/npm/package/models/centernet.json"
NUM_BLOCKS = 15


@pytest.fixture(scope="module")
def graph():
    """(model.json graph, tfjs weights); skipped without the npm cache."""
    if not MODEL_JSON.is_file():
        pytest.skip(f"{MODEL_JSON.relative_to(REPO_ROOT)} missing (`make test` fetches the npm models)")
    return load_tfjs_model(MODEL_JSON)


@pytest.fixture(scope="module")
def tfjs(graph):
    return graph[1]


@pytest.fixture(scope="module")
def strides(graph):
    """{kernel tensor name: stride} from the graph's backbone conv nodes, which all pad SAME."""
    found = {}
    for node in graph[0]["modelTopology"]["node"]:
        attr = node.get("attr", {})
        if "strides" in attr and ("MobilenetV3/" in node["name"] or "extern1/" in node["name"]):
            assert base64.b64decode(attr["padding"]["s"]) == b"SAME"
            for name in node["input"]:
                found[name] = int(attr["strides"]["list"]["i"][1])
    return found


@pytest.fixture(scope="module")
def state(tfjs):
    return convert_backbone(tfjs)


@pytest.fixture(scope="module")
def backbone(state):
    return load_centernet_backbone(build_mobilenetv3_pose_w075(), state).eval().backbone


def hard_swish(y, layer, tfjs):
    """The graph's hard_swish: (y * c) * relu6(y + a) with its stored constants (c ~ 1/6)."""
    scope = f"tower_0/{layer}/hard_swish"
    return (y * tfjs[f"{scope}/mul_1/y"]) * np.clip(y + tfjs[f"{scope}/add/y"], 0, 6)


def graph_conv(x, layer, tfjs, strides, act=True):
    """A BN-folded conv of the graph: TF SAME conv + offset, then its hard_swish where the
    graph has one, else its fused ReLU (`act`; the projections have none)."""
    kind = "depthwise" if layer.endswith("depthwise") else "Conv2D"
    kernel = f"tower_0/{layer}/{kind}_weights"
    y = tf_same_conv(x, tfjs[kernel], strides[kernel], depthwise=kind == "depthwise")
    y = y + tfjs[f"tower_0/{layer}/{kind}_bn_offset"]
    if not act:
        return y
    return hard_swish(y, layer, tfjs) if f"tower_0/{layer}/hard_swish/add/y" in tfjs else np.maximum(y, 0)


def graph_se(x, scope, tfjs):
    """x * relu6(conv(relu(conv(mean x))) + a) * c, the graph's squeeze-excite."""
    hidden = x.mean((0, 1)) @ tfjs[f"{scope}/squeeze_excite/Conv/weights"][0, 0]
    hidden = np.maximum(hidden + tfjs[f"{scope}/squeeze_excite/Conv/biases"], 0)
    gate = hidden @ tfjs[f"{scope}/squeeze_excite/Conv_1/weights"][0, 0]
    gate = gate + tfjs[f"{scope}/squeeze_excite/Conv_1/biases"]
    gate = np.clip(gate + tfjs[f"tower_0/{scope}/squeeze_excite/Conv_1/add/y"], 0, 6)
    return x * (gate * tfjs[f"tower_0/{scope}/squeeze_excite/Conv_1/mul/y"])


def graph_block(x, index, tfjs, strides):
    """expanded_conv[_index]: expand (where the graph has one), depthwise, SE (where it has
    one), linear projection, residual when the shapes match."""
    scope = "MobilenetV3/expanded_conv" + (f"_{index}" if index else "")
    has_expand = f"tower_0/{scope}/expand/Conv2D_weights" in tfjs
    y = graph_conv(x, f"{scope}/expand", tfjs, strides) if has_expand else x
    y = graph_conv(y, f"{scope}/depthwise", tfjs, strides)
    if f"{scope}/squeeze_excite/Conv/weights" in tfjs:
        y = graph_se(y, scope, tfjs)
    y = graph_conv(y, f"{scope}/project", tfjs, strides, act=False)
    return x + y if y.shape == x.shape else y


def to_torch(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32))


def to_numpy(t):
    return t[0].detach().numpy().transpose(1, 2, 0)


def assert_close_fp16(got, expected, tolerance=2e-3):
    """Within the graph's fp16 constants (its 1/6 is 0.16663, 0.02% low), relative and to the
    largest value."""
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * float(np.abs(expected).max()))


def test_converted_layers_are_oihw_and_cover_the_backbone(state, tfjs):
    assert state["MobilenetV3/Conv.weight"].shape == (16, 3, 3, 3)
    assert state["MobilenetV3/expanded_conv/depthwise.weight"].shape == (16, 1, 3, 3)
    assert "MobilenetV3/expanded_conv/expand.weight" not in state  # expansion 1: no expand conv
    assert state["MobilenetV3/expanded_conv_3/squeeze_excite/Conv.weight"].shape == (24, 72, 1, 1)
    assert state["MobilenetV3/expanded_conv_12/depthwise.weight"].shape == (528, 1, 5, 5)
    assert state["MobilenetV3/expanded_conv_14/squeeze_excite/Conv_1.bias"].shape == (720,)
    assert state["extern1.weight"].shape == (480, 120, 1, 1)
    # every backbone tensor of the graph is converted: 124, a kernel and a bias per conv
    backbone_tensors = [n for n, a in tfjs.items() if ("MobilenetV3/" in n or "extern1/" in n) and a.ndim]
    assert len(state) == len([n for n in backbone_tensors if "reduction_indices" not in n]) == 124


def test_stem_and_first_blocks_match_the_graph(tfjs, strides, backbone):
    """Raw pixels into the graph, pixels / 255 into ours (the converter unfolds the stem's
    1/255). Odd height, even width: TF SAME pads the stem (1, 1) rows but (0, 1) columns,
    the 5x5 of block 3 (on 10 x 13) (1, 2) rows and (2, 2) columns."""
    pixels = np.random.default_rng(0).uniform(0, 255, size=(37, 50, 3))
    stem = graph_conv(pixels, "MobilenetV3/Conv", tfjs, strides)
    expected = [stem]
    for index in range(4):  # no expand; strided 3x3; plain; strided 5x5 with SE
        expected.append(graph_block(expected[-1], index, tfjs, strides))
    with torch.no_grad():
        got = [backbone[0](to_torch(pixels / 255))]
        for index in range(4):
            got.append(backbone[index + 1](got[-1]))
    assert [g.shape[2:] for g in got] == [(19, 25), (19, 25), (10, 13), (10, 13), (5, 7)]
    for g, e in zip(got, expected):
        assert_close_fp16(to_numpy(g), e)


def test_last_blocks_and_extern1_match_the_graph(tfjs, strides, backbone):
    """Block 12 (the stride-2 5x5 with SE on an even width: pads (1, 2)), 13, 14 and the
    final conv extern1 with its hard-swish."""
    x = np.random.default_rng(1).normal(size=(9, 8, 88))
    expected = x
    for index in (12, 13, 14):
        expected = graph_block(expected, index, tfjs, strides)
    expected = graph_conv(expected, "extern1", tfjs, strides)
    with torch.no_grad():
        got = to_numpy(torch.nn.Sequential(*list(backbone)[13:])(to_torch(x)))
    assert got.shape == (5, 4, 480)
    assert_close_fp16(got, expected)


def test_whole_backbone_on_a_photo_matches_the_graph_with_live_features(tfjs, strides, backbone):
    """The whole converted backbone against the whole graph reference on a real crop, and
    features that are not trivial: the pretrained net responds to the image."""
    rgb = cv2.cvtColor(cv2.resize(cv2.imread(str(PHOTO)), (96, 128)), cv2.COLOR_BGR2RGB).astype(np.float64)
    expected = graph_conv(rgb, "MobilenetV3/Conv", tfjs, strides)
    for index in range(NUM_BLOCKS):
        expected = graph_block(expected, index, tfjs, strides)
    expected = graph_conv(expected, "extern1", tfjs, strides)
    with torch.no_grad():
        got = to_numpy(backbone(to_torch(rgb / 255)))
        flat = to_numpy(backbone(torch.full((1, 3, 128, 96), 0.5)))
    assert got.shape == (4, 3, 480)
    assert_close_fp16(got, expected, tolerance=1e-2)  # the fp16 1/6 compounds over 30 activations: 0.4%
    # (a random-initialised backbone gives ~1e-9 everywhere; this one: 22%, 77%, 1.2)
    assert 0.05 < (got > 0.01).mean() < 0.6                     # sparse positive hard-swish outputs
    assert (got.std((0, 1)) > 0.1).mean() > 0.5                  # channels that vary over the image
    assert np.abs(got - flat).mean() > 0.5 * np.abs(got).mean()  # and differ from a grey image's


def test_converter_writes_the_state_dict(tmp_path, state):
    out = tmp_path / "backbone.pt"
    convert_main(["--model-json", str(MODEL_JSON), "--out", str(out)])
    saved = torch.load(out, weights_only=True)
    assert saved.keys() == state.keys()
    assert all(t.dtype == torch.float32 for t in saved.values())


def test_backbone_exports_to_onnx_with_tf_same_padding_at_any_size(state, tmp_path):
    """The network up to the pretrained features (normalisation, backbone): ONNX Runtime
    reproduces PyTorch at the traced 256x192 and at 264x208, where the SAME pads differ."""
    from pose_core.export_onnx import export_onnx

    net = load_centernet_backbone(build_mobilenetv3_pose_w075(), state).eval()
    net.deconv, net.attention, net.final = torch.nn.Identity(), torch.nn.Identity(), torch.nn.Identity()
    export_onnx(net, tmp_path / "features.onnx", 256, 192, output_names=("features",), dynamic_batch=True)


def fake_centernet_backbone(path):
    """Random weights in the converted layout (no npm cache needed)."""
    backbone, generator = build_mobilenetv3_pose_w075().backbone, torch.Generator().manual_seed(0)
    state = {}
    for name, module_path in centernet_layer_names(backbone):
        module = backbone.get_submodule(module_path)
        conv = module if isinstance(module, torch.nn.Conv2d) else module[0]
        state[f"{name}.weight"] = torch.randn(conv.weight.shape, generator=generator) * 0.1
        state[f"{name}.bias"] = torch.randn(conv.out_channels, generator=generator)
    torch.save(state, path)
    return state


def test_training_loads_the_backbone_file_with_folded_bn(tmp_path):
    from pose_core.train.common import build_model

    state = fake_centernet_backbone(tmp_path / "backbone.pt")
    model = build_model("mnv3-hwloss-w075", tmp_path / "backbone.pt")
    stem_conv, stem_bn = model.backbone[0][0], model.backbone[0][1]
    assert torch.equal(stem_conv.weight, state["MobilenetV3/Conv.weight"])
    assert torch.equal(stem_bn.bias, state["MobilenetV3/Conv.bias"]) and torch.all(stem_bn.weight == 1)
    se = model.backbone[4].se  # expanded_conv_3's SE convs keep their own biases
    assert torch.equal(se.squeeze.bias, state["MobilenetV3/expanded_conv_3/squeeze_excite/Conv.bias"])
    x = torch.randn(1, 16, 5, 5)
    with torch.no_grad():  # eval-mode BN is x + offset
        torch.testing.assert_close(stem_bn.eval()(x), x + state["MobilenetV3/Conv.bias"].view(1, -1, 1, 1))
    with pytest.raises(WeightsError, match="mnv3-hwloss-w075"):
        build_model("mnv3-hwloss", tmp_path / "backbone.pt")  # the paper's width-1.0 backbone


def test_registered_without_weights():
    spec = registry.get_spec("mnv3-hwloss-w075")
    assert spec.kind == "top-down" and spec.input_height == 256 and spec.layout == "coco17"
    assert (spec.onnx_file, spec.torch_file) == ("mnv3-hwloss-w075.onnx", "mnv3-hwloss-w075.pt")
    with torch.no_grad():
        assert spec.build().eval()(torch.rand(1, 3, 256, 192) * 255).shape == (1, 17, 64, 48)
    if not spec.onnx_path.is_file():
        assert registry.weights_status(spec, "onnx").startswith("no trained weights")
