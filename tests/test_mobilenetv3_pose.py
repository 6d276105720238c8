"""The top-down network (MobileNetV3 + light deconvolution head + attention), its ONNX export
with a dynamic batch, and its registry entry (listed without weights, refuses to run)."""
import numpy as np
import pytest

from pose_core import registry
from pose_core.errors import ModelUnavailable
from pose_core.skeleton import NUM_KEYPOINTS

torch = pytest.importorskip("torch")

from pose_core.export_onnx import TOPDOWN_OUTPUT_NAMES, export_onnx  # noqa: E402
from pose_core.models.mobilenetv3_pose import build_mobilenetv3_pose  # noqa: E402


@pytest.fixture(scope="module")
def model():
    """TEST-ONLY: random weights, BN statistics from one training-mode pass over random
    images (with the initial statistics the heatmaps are all ~1e-24)."""
    torch.manual_seed(0)
    net = build_mobilenetv3_pose()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None   # the running statistics become this batch's
    with torch.no_grad():
        net.train()(torch.rand(4, 3, 256, 192) * 255)
    return net.eval()


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("mnv3") / "untrained-mnv3.onnx", 256, 192,
                       output_names=TOPDOWN_OUTPUT_NAMES, dynamic_batch=True)


def test_heatmaps_shape_and_size(model):
    with torch.no_grad():
        heatmaps = model(torch.rand(2, 3, 256, 192) * 255)
    assert heatmaps.shape == (2, NUM_KEYPOINTS, 64, 48)
    # spec ARCHITECTURES.md 4.2 [measured]: backbone 2.635M + head 0.443M parameters
    assert sum(p.numel() for p in model.backbone.parameters()) == 2_634_526
    assert sum(p.numel() for p in model.parameters()) == 3_077_882


def test_normalisation_is_inside_the_network(model):
    """An image equal to the ImageNet mean is the zero input of the backbone."""
    mean = model.mean.expand(1, 3, 256, 192)
    with torch.no_grad():
        assert torch.allclose(model.backbone((mean - model.mean) / model.std),
                              model.backbone(torch.zeros(1, 3, 256, 192)))
        expected = model.final(model.attention(model.deconv(model.backbone(torch.zeros(1, 3, 256, 192)))))
        assert torch.allclose(model(mean), expected, atol=1e-6)


def test_onnx_matches_pytorch_on_a_batch(model, onnx_path):
    from pose_core.backends import OnnxRunner

    batch = np.random.default_rng(0).uniform(0, 255, (3, 3, 256, 192)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    (got,) = OnnxRunner(onnx_path, threads=1)(batch)
    assert got.shape == (3, NUM_KEYPOINTS, 64, 48)
    assert expected.std() > 1e-3   # the comparison below is not between two near-zero maps
    np.testing.assert_allclose(got, expected, atol=1e-4 * float(np.abs(expected).max()))


def test_registered_without_weights_and_refuses_to_run():
    spec = registry.get_spec("mnv3-hwloss")
    assert spec.kind == "top-down" and spec.input_height == 256
    if not spec.onnx_path.is_file():
        assert registry.weights_status(spec, "onnx").startswith("no trained weights")
        with pytest.raises(ModelUnavailable, match="cannot run"):
            registry.load_pipeline("mnv3-hwloss")


def test_load_pipeline_builds_a_topdown_pipeline(onnx_path):
    """TEST-ONLY random ONNX weights: checks the mechanics (batch, shapes, types), not poses."""
    boxes = np.array([[20, 10, 80, 120], [100, 30, 150, 110]], np.float32)
    pipeline = registry.load_pipeline("mnv3-hwloss", weights=onnx_path, threads=1,
                                      detector=lambda frame: (boxes, np.array([0.9, 0.8], np.float32)))
    assert pipeline.kind == "top-down" and pipeline.input_size == (256, 192)
    people = pipeline(np.random.default_rng(0).integers(0, 255, (160, 200, 3), dtype=np.uint8))
    assert 1 <= len(people) <= 2 and people.keypoints.shape[1:] == (NUM_KEYPOINTS, 3)
    assert np.isfinite(people.keypoints).all()
