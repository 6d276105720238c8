"""fp16-stored ONNX weights: half the file, float32 compute, the same outputs as PyTorch."""
import collections

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, numpy_helper  # noqa: E402

from pose_core import export_onnx as export_module  # noqa: E402
from pose_core.backends import OnnxRunner  # noqa: E402
from pose_core.export_onnx import FP16_MIN_ELEMENTS, export_onnx, main  # noqa: E402
from pose_core.models.bottomup import build_ldlc_openpose  # noqa: E402


def image(height, width, seed=0):
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.fixture(scope="module")
def fp16_model():
    """TEST-ONLY: a small random network whose BatchNorms have non-trivial statistics (so a
    BN folded into a convolution at export would not be an fp16 value), every parameter and
    buffer rounded to fp16 as the committed .pt files are."""
    torch.manual_seed(0)
    model = build_ldlc_openpose("t2", num_refinement_stages=0).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                torch.nn.init.uniform_(module.weight, 0.5, 1.5)
                torch.nn.init.uniform_(module.bias, -0.2, 0.2)
                torch.nn.init.uniform_(module.running_mean, -0.2, 0.2)
                torch.nn.init.uniform_(module.running_var, 0.3, 3.0)
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return model


@pytest.fixture(scope="module")
def exports(fp16_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fp16_export")
    return (export_onnx(fp16_model, folder / "fp32.onnx", height=64, width=96),
            export_onnx(fp16_model, folder / "fp16.onnx", height=64, width=96, fp16_weights=True))


def _io(path):
    model = onnx.load(str(path))

    def describe(values):
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]
    return describe(model.graph.input), describe(model.graph.output)


def test_fp16_storage_matches_pytorch_and_the_fp32_file(fp16_model, exports):
    fp32_path, fp16_path = exports
    runners = OnnxRunner(fp32_path, threads=1), OnnxRunner(fp16_path, threads=1)
    for height, width in ((64, 96), (80, 48)):
        x = image(height, width, seed=3)
        with torch.no_grad():
            expected = [t.numpy() for t in fp16_model(x)]
        got32, got16 = (runner(x.numpy()) for runner in runners)
        for e, a, b in zip(expected, got32, got16):
            scale = float(np.abs(e).max())
            # float32 rounding only (measured ~6e-7 of the scale); fp16 storage of BN-folded
            # Conv weights would give ~5e-5 here (~1e-3 with the trained t6 weights)
            np.testing.assert_allclose(b, e, rtol=0, atol=5e-6 * scale)
            np.testing.assert_allclose(b, a, rtol=0, atol=5e-6 * scale)


def test_large_initializers_are_fp16_and_the_file_is_about_half(exports):
    fp32_path, fp16_path = exports
    model = onnx.load(str(fp16_path))
    init = {i.name: i for i in model.graph.initializer}
    large = [i for i in init.values() if np.prod(i.dims) >= FP16_MIN_ELEMENTS]
    assert large and all(i.data_type == TensorProto.FLOAT16 for i in large)
    assert not any(i.data_type == TensorProto.FLOAT for i in large)
    nbytes = collections.Counter()
    for i in init.values():
        nbytes[i.data_type] += numpy_helper.to_array(i).nbytes
    assert nbytes[TensorProto.FLOAT16] > 0.95 * sum(nbytes.values())
    # every fp16 initializer feeds exactly one Cast to float32 and nothing else
    casts = {n.input[0]: n for n in model.graph.node if n.op_type == "Cast"}
    for i in large:
        assert casts[i.name].attribute[0].i == TensorProto.FLOAT
        assert sum(i.name in n.input for n in model.graph.node) == 1
    assert fp16_path.stat().st_size < 0.55 * fp32_path.stat().st_size
    assert _io(fp16_path) == _io(fp32_path)  # same names, dtypes and dynamic axes


def _optimised_kernels(path, out):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(out)
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    model = onnx.load(str(out))
    init = {i.name: i for i in model.graph.initializer}
    return collections.Counter(
        (n.op_type, n.domain,
         tuple(sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in n.attribute
                      if a.type != onnx.AttributeProto.TENSOR)),
         tuple((tuple(init[i].dims), init[i].data_type) if i in init else None for i in n.input))
        for n in model.graph.node)


def test_onnx_runtime_folds_the_casts_into_the_same_fp32_graph(exports, tmp_path):
    """Speed is unchanged: after ONNX Runtime's session-creation optimisations both files are
    the same kernels (no Cast left, Conv + BN fused, float32 weights of the same shapes)."""
    fp32_path, fp16_path = exports
    kernels16 = _optimised_kernels(fp16_path, tmp_path / "fp16.opt.onnx")
    assert not any(k[0] in ("Cast", "BatchNormalization") and k[3][0] for k in kernels16)
    assert kernels16 == _optimised_kernels(fp32_path, tmp_path / "fp32.opt.onnx")


def test_cli_stores_fp16_by_default_and_fp32_on_request(untrained_t6, tmp_path, capsys, monkeypatch):
    args = ["--model", "ldlc-openpose-t6", "--weights", str(untrained_t6.pt), "--height", "64", "--width", "64"]
    assert main(args + ["--out", str(tmp_path / "a.onnx")]) == 0
    assert "fp16-stored" in capsys.readouterr().out
    large = [i for i in onnx.load(str(tmp_path / "a.onnx")).graph.initializer if np.prod(i.dims) >= FP16_MIN_ELEMENTS]
    assert large and all(i.data_type == TensorProto.FLOAT16 for i in large)
    # --fp32-weights: the plain export (BN folded, float32 initializers) that test_network.py checks
    calls = []

    def fake_export(model, out_path, *args, **kwargs):
        calls.append(kwargs)
        out_path.write_bytes(b"")
        return out_path
    monkeypatch.setattr(export_module, "export_onnx", fake_export)
    assert main(args + ["--out", str(tmp_path / "b.onnx"), "--fp32-weights"]) == 0
    assert calls[0]["fp16_weights"] is False
