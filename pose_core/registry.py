"""One registry from model name to builder, weights and metadata.

It fills `main.py --list-models` and the GUI dropdown, and builds pipelines.
A model whose weights are missing is listed with the reason and refuses to run:
nothing ever runs a random-initialised network for a user.
"""
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .bottomup import DEFAULT_ZOOM
from .errors import InputError, ModelUnavailable, PoseError

REPO_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = REPO_ROOT / "weights"
# MoveNet teacher ONNX files, converted by tools/convert_movenet_teacher.py (git-ignored).
TEACHER_DIR = REPO_ROOT / "cache" / "teacher"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str                      # "bottom-up", "top-down" or "detector" (person boxes, no pose)
    description: str
    onnx_file: str                 # relative to weights/
    torch_file: Optional[str]      # relative to weights/; None when no PyTorch weights exist
    build: Optional[Callable]      # () -> torch.nn.Module (imports torch lazily)
    input_height: int = 256        # default network input height (bottom-up), crop height
                                   # (top-down) or longer input side (detector)
    layout: str = "openpose18"     # the network's own keypoint layout ("boxes": a detector)
    int8_file: Optional[str] = None  # relative to weights/: the int8 ONNX (tools/quantize_onnx.py)

    @property
    def onnx_path(self):
        return WEIGHTS_DIR / self.onnx_file

    @property
    def int8_path(self):
        return WEIGHTS_DIR / self.int8_file if self.int8_file else None

    @property
    def torch_path(self):
        return WEIGHTS_DIR / self.torch_file if self.torch_file else None


def _build_ldlc(variant, **options):
    def build():
        from .models.bottomup import build_ldlc_openpose
        return build_ldlc_openpose(variant, **options)
    return build


def _build_ldlc_fpn():
    from .models.multipose_fpn import LDLCOpenPoseFPN
    return LDLCOpenPoseFPN()


def _build_mobilenetv3_pose():
    from .models.mobilenetv3_pose import build_mobilenetv3_pose
    return build_mobilenetv3_pose()


def _build_mobilenetv3_pose_w075():
    from .models.mobilenetv3_pose import build_mobilenetv3_pose_w075
    return build_mobilenetv3_pose_w075()


def _build_mobilenetv2_pose():
    from .models.mobilenetv2_pose import build_mobilenetv2_pose
    return build_mobilenetv2_pose()


def _build_person_detector():
    from .models.person_detector import build_person_detector
    return build_person_detector()


def _build_centernet_person():
    from .models.centernet_person import build_centernet_person
    return build_centernet_person()


MODELS = {spec.name: spec for spec in (
    ModelSpec(
        name="ldlc-openpose-t6",
        kind="bottom-up",
        description="Seed network (CondConv MobileNetV2, expansion 6) initialised from MoveNet "
                    "Lightning's backbone",
        onnx_file="ldlc-openpose-t6.onnx", torch_file="ldlc-openpose-t6.pt",
        build=_build_ldlc("t6")),
    ModelSpec(
        name="ldlc-openpose-t6-fast",
        kind="bottom-up",
        description="ldlc-openpose-t6's weights without the refinement stage: about half the "
                    "network time, lower accuracy",
        onnx_file="ldlc-openpose-t6-fast.onnx", torch_file="ldlc-openpose-t6.pt",
        build=_build_ldlc("t6", eval_stages=1), int8_file="ldlc-openpose-t6-fast.int8.onnx"),
    ModelSpec(
        name="ldlc-openpose-t6w15",
        kind="bottom-up",
        description="Seed network on a MobileNetV2 1.5 initialised from MoveNet MultiPose's backbone "
                    "(trained on whole multi-person frames), CPM and initial stage (no refinement "
                    "stage: as -fast)",
        onnx_file="ldlc-openpose-t6w15.onnx", torch_file="ldlc-openpose-t6w15.pt",
        build=_build_ldlc("t6w15", num_refinement_stages=0), int8_file="ldlc-openpose-t6w15.int8.onnx"),
    ModelSpec(
        name="ldlc-openpose-fpn",
        kind="bottom-up",
        description="Seed network's CPM and initial stage on MoveNet MultiPose's whole feature extractor "
                    "(MobileNetV2 1.5 + feature pyramid + keypoint heatmaps, as trained, no CondConv)",
        onnx_file="ldlc-openpose-fpn.onnx", torch_file="ldlc-openpose-fpn.pt",
        build=_build_ldlc_fpn, int8_file="ldlc-openpose-fpn.int8.onnx"),
    ModelSpec(
        name="ldlc-openpose",
        kind="bottom-up",
        description="Seed network as in the paper (CondConv MobileNetV2, expansion 2), from scratch",
        onnx_file="ldlc-openpose.onnx", torch_file="ldlc-openpose.pt",
        build=_build_ldlc("t2")),
    ModelSpec(
        name="mnv3-hwloss",
        kind="top-down",
        description="MobileNetV3 + light deconvolution head with attention, heatmap-weighting loss "
                    "(Li & Xiang), 256x192 crops of the person detector's boxes",
        onnx_file="mnv3-hwloss.onnx", torch_file="mnv3-hwloss.pt",
        build=_build_mobilenetv3_pose, input_height=256, layout="coco17"),
    ModelSpec(
        name="mnv2-hwloss",
        kind="top-down",
        description="mnv3-hwloss's head, attention and loss on a MobileNetV2 backbone initialised "
                    "from MoveNet Lightning, 256x192 crops of the person detector's boxes",
        onnx_file="mnv2-hwloss.onnx", torch_file="mnv2-hwloss.pt",
        build=_build_mobilenetv2_pose, input_height=256, layout="coco17", int8_file="mnv2-hwloss.int8.onnx"),
    ModelSpec(
        name="mnv3-hwloss-w075",
        kind="top-down",
        description="mnv3-hwloss's head, attention and loss on a MobileNetV3-Large 0.75 initialised "
                    "from CenterNet (COCO detector), 256x192 crops of the person detector's boxes",
        onnx_file="mnv3-hwloss-w075.onnx", torch_file="mnv3-hwloss-w075.pt",
        build=_build_mobilenetv3_pose_w075, input_height=256, layout="coco17"),
    ModelSpec(
        name="person-detector",
        kind="detector",
        description="Person boxes for the top-down models: CenterNet-style one-class detector, "
                    "MobileNetV2 initialised from MoveNet Lightning, stride-8 neck, 320 px longer side",
        onnx_file="person-detector.onnx", torch_file="person-detector.pt",
        build=_build_person_detector, input_height=320, layout="boxes", int8_file="person-detector.int8.onnx"),
    ModelSpec(
        name="centernet-person",
        kind="detector",
        description="Person boxes for the top-down models: CenterNet's COCO detector (MobileNetV3-Large 0.75) "
                    "narrowed to people and fine-tuned on them, stride-4 neck, 416 px longer side",
        onnx_file="centernet-person.onnx", torch_file="centernet-person.pt",
        build=_build_centernet_person, input_height=416, layout="boxes"),
    # onnx_file is absolute for the teachers: WEIGHTS_DIR / an absolute path is that path.
    ModelSpec(
        name="movenet-multipose",
        kind="bottom-up",
        description="Google's MoveNet MultiPose (teacher, converted to ONNX; up to 6 people)",
        onnx_file=str(TEACHER_DIR / "movenet_multipose.onnx"), torch_file=None, build=None,
        input_height=256, layout="movenet"),
    ModelSpec(
        name="movenet-teacher",
        kind="top-down",
        description="MoveNet MultiPose boxes (input 384) refined by MoveNet Thunder per person",
        onnx_file=str(TEACHER_DIR / "movenet_thunder.onnx"), torch_file=None, build=None,
        input_height=384, layout="movenet"),
)}

# Measured best on coco_val_dev at this stage of training (README, stop 21): 0.275 AP int8
# against ldlc-openpose-t6w15's 0.236, at about twice its frame rate on two cores.
DEFAULT_MODEL = "ldlc-openpose-fpn"
# The top-down models' person detector when its weights exist; else the default bottom-up
# model's people (topdown.BottomUpBoxes). Measured (README): mnv2-hwloss reaches 0.359 AP with
# centernet-person's boxes at 416, 0.349 with person-detector's (int8, 320, twice as fast).
DEFAULT_DETECTOR = "centernet-person"
# ONNX Runtime runs a model's int8 file when it has one, unless asked for fp32: int8 measured
# about half the network time at an AP within 0.01 of fp32 (README, weights/MANIFEST.json).
PRECISIONS = ("int8", "fp32")
DEFAULT_PRECISION = "int8"


def add_precision_argument(parser):
    """The --precision option of the commands that run models (main.py, bench, the evals)."""
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                        help="ONNX Runtime: a model's int8 file when it has one (default), or fp32")


def add_bottom_up_arguments(parser):
    """--multi-scale, --zoom and --longer-side, the bottom-up options of the commands that run
    models (main.py, bench, eval); bottom_up_options turns them into load_pipeline options."""
    parser.add_argument("--multi-scale", type=int, nargs="+", metavar="H",
                        help="bottom-up models: also run the network at these input heights and merge the "
                             "people (e.g. --multi-scale 512: more accurate on small people, about 5x the "
                             "network time)")
    parser.add_argument("--zoom", type=float, nargs="?", const=DEFAULT_ZOOM, metavar="F",
                        help=f"bottom-up models: run the network again at F x the scale (default {DEFAULT_ZOOM:g}) "
                             "on the regions around the small people it found, and merge the people: more "
                             "accurate on small people, at a cost that grows with their number")
    parser.add_argument("--longer-side", type=int, metavar="N",
                        help="bottom-up models: resize each frame so that its longer side is N network pixels "
                             "(MoveNet MultiPose's convention: a portrait frame gets more rows) instead of "
                             "its height being --height")


def bottom_up_options(models, multi_scale=None, zoom=None, longer_side=None):
    """The load_pipeline options of --multi-scale, --zoom and --longer-side for the models named
    `models`; InputError when a value is out of range or a model is not bottom-up."""
    bottom_up = all(get_spec(m).kind == "bottom-up" for m in models)
    options = {}
    if multi_scale:
        if not bottom_up or any(not 32 <= h <= 2048 for h in multi_scale):
            raise InputError("--multi-scale takes heights between 32 and 2048 and is for bottom-up models")
        options["extra_heights"] = tuple(multi_scale)
    if zoom is not None:
        if not bottom_up or not 1 < zoom <= 4:
            raise InputError("--zoom takes a factor above 1 and up to 4 and is for bottom-up models")
        options["zoom"] = zoom
    if longer_side is not None:
        if not bottom_up or not 32 <= longer_side <= 2048:
            raise InputError("--longer-side takes a size between 32 and 2048 and is for bottom-up models")
        options["longer_side"] = longer_side
    return options


def get_spec(name):
    try:
        return MODELS[name]
    except KeyError:
        raise ModelUnavailable(f"unknown model '{name}'; known: {', '.join(MODELS)}") from None


def weights_status(spec, backend="onnx"):
    """'ready', or why the model cannot run on that backend."""
    path = spec.onnx_path if backend == "onnx" else spec.torch_path
    if path is None:
        return f"no {backend} weights for this model"
    if not path.is_file() and spec.layout == "movenet":
        return "not converted: run tools/convert_movenet_teacher.py"
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    if not path.is_file() and backend == "onnx" and spec.torch_path is not None and spec.torch_path.is_file():
        return (f"no ONNX file ({shown}): export it with python -m pose_core.export_onnx --model {spec.name}, "
                f"or use --backend torch")
    if not path.is_file():
        return f"no trained weights ({shown} missing)"
    if backend == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            return "PyTorch is not installed (pip install -e .[train])"
    return "ready"


def onnx_weights(spec, precision=DEFAULT_PRECISION):
    """The registered ONNX file that runs at `precision`: the int8 file when asked for and
    present, else the fp32 one."""
    if precision not in PRECISIONS:
        raise PoseError(f"unknown precision '{precision}'; use {' or '.join(PRECISIONS)}")
    if precision == "int8" and spec.int8_path is not None and spec.int8_path.is_file():
        return spec.int8_path
    return spec.onnx_path


def make_runner(spec, backend="onnx", weights=None, threads=None, precision=DEFAULT_PRECISION):
    """A runner for the model's network; `weights` overrides the registered file."""
    from .backends import OnnxRunner, TorchRunner

    if backend == "onnx":
        return OnnxRunner(weights or onnx_weights(spec, precision), threads)
    if backend == "torch":
        from .models.io import load_torch_weights
        return TorchRunner(load_torch_weights(spec, weights or spec.torch_path), threads)
    raise PoseError(f"unknown backend '{backend}'; use onnx or torch")


def pose_models():
    """The registered pose models (what the GUI offers): every kind but "detector"."""
    return {name: spec for name, spec in MODELS.items() if spec.kind != "detector"}


def load_detector(name=None, backend="onnx", height=None, weights=None, threads=None,
                  precision=DEFAULT_PRECISION, **options):
    """A registered person detector (DEFAULT_DETECTOR when `name` is None), frame -> (boxes
    (N, 4) x1y1x2y2, scores (N,))."""
    spec = get_spec(name or DEFAULT_DETECTOR)
    if spec.kind != "detector":
        raise ModelUnavailable(f"model '{spec.name}' is a {spec.kind} pose model, not a person detector")
    if weights is None:
        status = weights_status(spec, backend)
        if status != "ready":
            raise ModelUnavailable(f"detector '{spec.name}' cannot run: {status}")
    from .person_detector import PersonDetector
    return PersonDetector(make_runner(spec, backend, weights, threads, precision), height or spec.input_height,
                          **options)


def make_detector(detector=None, backend="onnx", threads=None, precision=DEFAULT_PRECISION):
    """The person detector of a top-down pipeline: a callable is used as it is; a registry
    name is a detector model or a bottom-up model (its people's boxes, topdown.BottomUpBoxes);
    None is DEFAULT_DETECTOR when its weights are ready on `backend`, else the default
    bottom-up model's people."""
    if callable(detector):
        return detector
    if detector is None:
        ready = weights_status(get_spec(DEFAULT_DETECTOR), backend) == "ready"
        detector = DEFAULT_DETECTOR if ready else DEFAULT_MODEL
    spec = get_spec(detector)
    if spec.kind == "detector":
        return load_detector(detector, backend, threads=threads, precision=precision)
    if spec.kind == "bottom-up":
        from .topdown import BottomUpBoxes
        return BottomUpBoxes(load_pipeline(detector, backend, threads=threads, precision=precision))
    raise ModelUnavailable(f"'{detector}' is a {spec.kind} model: a person detector is a detector "
                           f"or a bottom-up model")


def _refuse_unknown_options(name, pipeline_class, options):
    """A user's option that the model's pipeline does not take (--detector for a bottom-up
    model, --upsample for a top-down one) is an error, not a traceback."""
    unknown = [key for key in options if key not in inspect.signature(pipeline_class).parameters]
    if unknown:
        raise ModelUnavailable(f"model '{name}' takes no {', '.join(unknown)} option")


def load_pipeline(name, backend="onnx", height=None, weights=None, threads=None, precision=DEFAULT_PRECISION,
                  **options):
    """Build the frame -> People pipeline of a registered model; `precision` picks its (and its
    detector's) ONNX file (onnx_weights)."""
    spec = get_spec(name)
    if spec.kind == "detector":
        raise ModelUnavailable(f"model '{name}' is a person detector, not a pose model: it serves the "
                               f"top-down models (their detector option)")
    if weights is None:
        status = weights_status(spec, backend)
        if status != "ready":
            raise ModelUnavailable(f"model '{name}' cannot run: {status}")
    if spec.layout == "movenet":
        if options:  # the teachers' pipelines take no options
            raise ModelUnavailable(f"model '{name}' takes no {', '.join(options)} option")
        from .teacher import build_pipeline
        return build_pipeline(spec, backend, height, weights, threads)
    runner = make_runner(spec, backend, weights, threads, precision)
    if spec.kind == "bottom-up":
        from .bottomup import BottomUpPipeline
        _refuse_unknown_options(name, BottomUpPipeline, options)
        return BottomUpPipeline(runner, height=height or spec.input_height, **options)
    if spec.kind == "top-down":
        # `height` is the crop height; `detector` (a callable frame -> boxes, scores, or a
        # registry name) defaults to make_detector's choice.
        from .topdown import TopDownPipeline
        _refuse_unknown_options(name, TopDownPipeline, options)
        detector = make_detector(options.pop("detector", None), backend, threads, precision)
        crop_height = height or spec.input_height
        return TopDownPipeline(detector, runner, (crop_height, crop_height * 3 // 4), **options)
    raise ModelUnavailable(f"model '{name}': no pipeline for kind {spec.kind}")
