"""The seed network: shapes, stages, CondConv batching, ONNX export, weight files."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pose_core.backends import OnnxRunner
from pose_core.errors import WeightsError
from pose_core.export_onnx import export_onnx
from pose_core.models.bottomup import build_ldlc_openpose
from pose_core.models.condconv import CondConv2d, CondConvInvertedResidual
from pose_core.models.io import load_torch_weights, save_torch_weights
from pose_core.registry import get_spec


def image(batch, height, width, seed=0):
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.mark.parametrize("variant", ["t2", "t6"])
@pytest.mark.parametrize("height,width", [(64, 96), (72, 40)])
def test_eval_outputs_last_stage_maps_at_stride_8(variant, height, width):
    torch.manual_seed(0)
    model = build_ldlc_openpose(variant).eval()
    with torch.no_grad():
        heatmaps, pafs = model(image(2, height, width))
    assert heatmaps.shape == (2, 19, height // 8, width // 8)
    assert pafs.shape == (2, 38, height // 8, width // 8)


def test_train_mode_returns_every_stage():
    torch.manual_seed(0)
    model = build_ldlc_openpose("t2", num_refinement_stages=2).train()
    stages = model(image(2, 64, 64))
    assert len(stages) == 3
    assert all(h.shape == (2, 19, 8, 8) and p.shape == (2, 38, 8, 8) for h, p in stages)
    model.eval()
    with torch.no_grad():
        last = model(image(2, 64, 64))
    assert len(last) == 2 and last[0].shape == (2, 19, 8, 8)


def test_eval_stages_returns_an_earlier_stage_from_the_same_weights():
    torch.manual_seed(0)
    full = build_ldlc_openpose("t2").eval()
    fast = build_ldlc_openpose("t2", eval_stages=1)
    fast.load_state_dict(full.state_dict())
    x = image(1, 64, 64)
    with torch.no_grad():
        features = full.cpm(full.backbone(x / 127.5 - 1.0))
        expected = full.initial_stage(features)
        got = fast.eval()(x)
        last = full(x)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(got[0], last[0])


def test_variants_differ_in_expansion():
    t2, t6 = build_ldlc_openpose("t2"), build_ldlc_openpose("t6")
    assert t2.backbone.blocks[0].expand is not None  # the paper: 2x in every block
    assert t6.backbone.blocks[0].expand is None       # MobileNetV2: t = 1 in the first block
    assert t6.backbone.blocks[7].depthwise.conv.weight.shape == (4, 384, 1, 7, 7)
    assert t2.backbone.blocks[7].depthwise.conv.weight.shape == (4, 128, 1, 7, 7)


def _random_routing_block():
    torch.manual_seed(1)
    block = CondConvInvertedResidual(16, 16, expansion=2, kernel_size=7, dilation=2, num_experts=4)
    torch.nn.init.normal_(block.routing.fc.weight, std=2.0)  # routing that differs per sample
    for module in block.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.running_mean, -0.1, 0.1)
    return block.eval()


def test_condconv_batched_equals_each_sample_alone():
    block = _random_routing_block()
    x = torch.randn(3, 16, 10, 12)
    with torch.no_grad():
        batched = block(x)
        alone = torch.cat([block(x[i:i + 1]) for i in range(3)])
        assert not torch.allclose(block.routing(x)[0], block.routing(x)[1])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


def test_condconv_equals_mixing_the_expert_outputs():
    torch.manual_seed(2)
    conv = CondConv2d(6, 6, 3, num_experts=3, dilation=2, groups=6)
    x, routing = torch.randn(2, 6, 9, 9), torch.rand(2, 3)
    with torch.no_grad():
        mixed = torch.stack([
            sum(routing[b, e] * F.conv2d(x[b:b + 1], conv.weight[e], None, 1, 2, 2, 6) for e in range(3))[0]
            for b in range(2)])
        torch.testing.assert_close(conv(x, routing), mixed, rtol=1e-5, atol=1e-5)


def test_condconv_training_phase_split_equals_the_dilated_convolution():
    """Training computes a dilated CondConv on pixel phases (faster backward): same outputs."""
    torch.manual_seed(3)
    conv = CondConv2d(6, 6, 7, num_experts=4, dilation=2, groups=6)
    x, routing = torch.randn(2, 6, 16, 12), torch.rand(2, 4)
    with torch.no_grad():
        dilated = conv.eval()(x, routing)
        phased = conv.train()(x, routing)
    torch.testing.assert_close(phased, dilated, rtol=1e-5, atol=1e-5)


def test_onnx_export_matches_pytorch_at_other_sizes(tmp_path):
    torch.manual_seed(0)
    # Without the refinement stage (plain convs) to keep the trace short; the CLI export
    # of the full network runs the same ONNX Runtime check before writing the file.
    model = build_ldlc_openpose("t2", num_refinement_stages=0).eval()
    path = export_onnx(model, tmp_path / "net.onnx", height=64, width=96)
    assert not list(tmp_path.glob("*.tmp"))
    runner = OnnxRunner(path, threads=1)
    assert runner.input_name == "image" and runner.output_names == ["heatmaps", "pafs"]
    for height, width in ((64, 96), (80, 48)):
        x = image(1, height, width, seed=3)
        with torch.no_grad():
            expected = [t.numpy() for t in model(x)]
        got = runner(x.numpy())
        assert got[0].shape == (1, 19, height // 8, width // 8)
        for e, g in zip(expected, got):
            np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-4)


def test_weights_round_trip_in_fp16(tmp_path):
    spec = get_spec("ldlc-openpose")
    torch.manual_seed(0)
    model = spec.build().eval()
    path = tmp_path / "w.pt"
    save_torch_weights(model, path)
    state = torch.load(path, weights_only=True)
    assert state["cpm.align.conv.weight"].dtype == torch.float16
    loaded = load_torch_weights(spec, path)
    assert not loaded.training
    assert loaded.cpm.align.conv.weight.dtype == torch.float32
    x = image(1, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x)):
            torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_bad_weight_files_raise_weights_error(tmp_path):
    spec = get_spec("ldlc-openpose")
    with pytest.raises(WeightsError, match="not found"):
        load_torch_weights(spec, tmp_path / "missing.pt")
    good = tmp_path / "good.pt"
    save_torch_weights(torch.nn.Conv2d(3, 4, 3), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(WeightsError, match="truncated"):
        load_torch_weights(spec, truncated)
    with pytest.raises(WeightsError, match="do not fit") as info:
        load_torch_weights(spec, good)
    assert "\n" not in str(info.value)
    t6 = tmp_path / "t6.pt"
    save_torch_weights(build_ldlc_openpose("t6"), t6)
    with pytest.raises(WeightsError, match="mis-shaped"):
        load_torch_weights(spec, t6)
