"""int8 quantisation (pose_core.quantize): same-function graph rewrites, int8 close to fp32."""
import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from conftest import CLIP, PHOTO  # noqa: E402
from pose_core import quantize  # noqa: E402
from pose_core.backends import OnnxRunner  # noqa: E402
from pose_core.bottomup import BottomUpPipeline  # noqa: E402
from pose_core.errors import PoseError  # noqa: E402
from pose_core.export_onnx import export_onnx  # noqa: E402
from pose_core.models.bottomup import build_ldlc_openpose  # noqa: E402
from pose_core.registry import DEFAULT_MODEL, MODELS, get_spec, load_pipeline, onnx_weights  # noqa: E402

SPEC = get_spec(DEFAULT_MODEL)
SMALL_HEIGHT = 96


def sqnr_db(reference, approximation):
    return 10 * np.log10((reference ** 2).sum() / ((reference - approximation) ** 2).sum())


def network_inputs(frames, height=None):
    preprocess = quantize.pipeline_preprocess(SPEC, height)
    return [preprocess(frame, None) for frame in frames]


@pytest.fixture(scope="module")
def clip_frames():
    capture = cv2.VideoCapture(str(CLIP))
    frames = [capture.read()[1] for _ in range(40)][::5]
    capture.release()
    return frames


@pytest.fixture(scope="module")
def small_export(clip_frames, tmp_path_factory):
    """TEST-ONLY: a small random bottom-up network (no refinement stage) whose CondConv
    depthwise experts look like the trained ones (the 7x7 ring ~100x smaller than the 3x3
    centre, a few channels 30x larger than the rest) and whose BatchNorm statistics are those
    of the clip's frames, so that its outputs depend on the image."""
    torch.manual_seed(0)
    model = build_ldlc_openpose("t2", num_refinement_stages=0)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if name.endswith("depthwise.conv.weight") and weight.dim() == 5:
                ring = torch.ones_like(weight)
                ring[..., 2:5, 2:5] = 0
                weight.mul_(1 - 0.99 * ring)
                weight[:, :3].mul_(30)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # a plain average over the batch below
        model.train()(torch.from_numpy(np.concatenate(network_inputs(clip_frames, SMALL_HEIGHT))))
    return export_onnx(model.eval(), tmp_path_factory.mktemp("quantize") / "small.onnx", height=64, width=96)


def test_prepare_fp32_keeps_the_function(small_export, tmp_path):
    prepared = quantize.prepare_fp32(small_export, tmp_path / "prepared.onnx")
    graph = onnx.load(str(prepared)).graph
    # blocks 7-12: expand, depthwise ring, project and the split-off depthwise centre
    assert len(quantize._dynamic_kernel_convs(graph)) == 6 * 4
    assert sum("_equalized_" in name for node in graph.node for name in node.input) == 6 * 3 * 2
    [x] = network_inputs([cv2.imread(str(PHOTO))], SMALL_HEIGHT)
    for expected, got in zip(OnnxRunner(small_export)(x), OnnxRunner(prepared)(x)):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_int8_default_model_is_close_to_fp32_on_a_real_image(clip_frames, tmp_path):
    fp32 = quantize.prepare_fp32(SPEC.onnx_path, tmp_path / "fp32.onnx")
    int8 = quantize.quantize(fp32, tmp_path / "int8.onnx", network_inputs(clip_frames),
                             quantize.KEEP_FLOAT[SPEC.name])
    frame = cv2.imread(str(PHOTO))
    [x] = network_inputs([frame])
    heatmaps, pafs, *keypoint_heatmaps = (sqnr_db(a, b) for a, b in zip(OnnxRunner(fp32)(x), OnnxRunner(int8)(x)))
    # measured 32.0, 18.8 and (MultiPose's keypoint heatmaps, ldlc-openpose-fpn) 14.6 dB; for
    # ldlc-openpose-t6-fast 30.7 and 19.7, without equalize/split_dynamic_depthwise 21.0 and 10.2
    assert heatmaps > 25 and pafs > 15 and all(db > 10 for db in keypoint_heatmaps)
    assert_same_people(*(BottomUpPipeline(OnnxRunner(path))(frame) for path in (fp32, int8)))


def assert_same_people(first, second, min_score=0.1):
    """Every person scored >= min_score by either pipeline is in the other's output at any
    score (a fragment scored near the cut may fall on either side of it): the other person
    with the most keypoints within 8 px (half a network cell on the photo) of its own
    keypoints above 0.2 has at least half of them, at any confidence (a keypoint near 0.2 may
    fall on either side too), and about the same score. The best person's keypoints move
    under 2 px (median; measured 0.6, 3.0 without the rewrites)."""
    assert (first.scores >= min_score).sum() >= 1
    for people, others in ((first, second), (second, first)):
        confident = np.flatnonzero(people.scores >= min_score)
        for index in confident[np.argsort(-people.scores[confident])]:
            keypoints = people.keypoints[index]
            visible = (keypoints[None, :, 2] > 0.2) & (others.keypoints[:, :, 2] > 0)
            shift = np.linalg.norm(keypoints[None, :, :2] - others.keypoints[:, :, :2], axis=-1)
            close = ((shift < 8.0) & visible).sum(1)
            match = int(np.argmax(close))
            assert close[match] >= 0.5 * (keypoints[:, 2] > 0.2).sum()
            assert abs(others.scores[match] - people.scores[index]) < 0.05
            if people.scores[index] == people.scores.max():
                assert np.median(shift[match][visible[match]]) < 2.0


def test_a_float_conv_between_quantised_ones_is_refused(small_export, clip_frames, tmp_path):
    prepared = quantize.prepare_fp32(small_export, tmp_path / "prepared.onnx")
    with pytest.raises(PoseError, match="blocks.0/depthwise"):
        quantize.quantize(prepared, tmp_path / "int8.onnx", network_inputs(clip_frames[:2], SMALL_HEIGHT),
                          keep_float=[r"blocks\.0/depthwise/"])
    assert not (tmp_path / "int8.onnx").exists()


@pytest.mark.parametrize("name", [n for n, s in MODELS.items() if s.int8_file])
def test_int8_files_are_committed_and_chosen_by_precision(name):
    spec = get_spec(name)
    assert spec.int8_path.is_file(), f"{spec.int8_file} missing: run tools/quantize_onnx.py --model {name}"
    assert onnx_weights(spec, "int8") == spec.int8_path
    assert onnx_weights(spec, "fp32") == spec.onnx_path
    with pytest.raises(PoseError, match="unknown precision"):
        onnx_weights(spec, "int4")


def test_the_committed_int8_default_model_finds_the_people_fp32_finds():
    frame = cv2.imread(str(PHOTO))
    assert_same_people(*(load_pipeline(DEFAULT_MODEL, precision=p)(frame) for p in ("fp32", "int8")))
