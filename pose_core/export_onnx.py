"""Export a registered network's PyTorch weights to ONNX, or print its size and cost.

    python -m pose_core.export_onnx --model ldlc-openpose-t6 [--weights W.pt] [--out W.onnx]
                                    [--fp32-weights]
    python -m pose_core.export_onnx --model ldlc-openpose-t6 --info

The ONNX file takes "image" (1, 3, H, W) float32 RGB 0..255 with H and W dynamic
(multiples of 8) and returns "heatmaps" and "pafs" of the last stage (ldlc-openpose-fpn also
"keypoint_heatmaps", MultiPose's stride-4 heatmaps: models/multipose_fpn.py). The batch is
fixed at 1 because CondConv's per-sample kernels fold the batch into conv groups.
A top-down model (--height 256, width 3/4 of it by default) takes "image" (B, 3, H, W)
with a dynamic batch, all person crops of a frame at once, and returns "heatmaps" only.
A detector (person-detector, centernet-person; traced at its input size) takes "image"
(B, 3, H, W), H and W dynamic (multiples of 32 at inference), and returns "center",
"size" and "offset" at stride 8 or 4 (models/person_detector.py, models/centernet_person.py).

Weight storage (the command's default; --fp32-weights opts out): every large float
initializer is stored as float16, followed by a Cast to float32, which halves the file.
The graph still computes in float32: ONNX Runtime folds the Casts when it creates the
session, so inference speed is unchanged. The .pt files are fp16 already, so fp16 storage
loses nothing if BatchNorm is not folded into the convolutions at export (a folded weight
w * gamma / sqrt(var + eps) is not an fp16 value): this export keeps BatchNormalization
nodes, and ONNX Runtime fuses them into the convolutions at session creation, in float32.
"""
import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from .errors import PoseError
from .registry import get_spec, MODELS

OPSET = 17
OUTPUT_NAMES = ("heatmaps", "pafs")
TOPDOWN_OUTPUT_NAMES = ("heatmaps",)
DETECTOR_OUTPUT_NAMES = ("center", "size", "offset")
# Float initializers with at least this many elements are stored in fp16 (the convolution,
# CondConv expert and linear weights: >99% of the bytes); smaller ones stay float32.
FP16_MIN_ELEMENTS = 1024
FP16_MAX = 65504.0


def _sample_image(height, width, seed=0, batch=1):
    import torch

    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 255


def store_weights_fp16(onnx_model, min_elements=FP16_MIN_ELEMENTS):
    """Rewrite an onnx.ModelProto in place: each float32 initializer with >= `min_elements`
    elements (and values inside the fp16 range) becomes a float16 initializer named
    NAME + "_fp16" followed by a Cast node that outputs NAME in float32, so every consumer,
    the graph's inputs and outputs are unchanged. Returns the number of initializers stored."""
    from onnx import TensorProto, helper, numpy_helper

    graph = onnx_model.graph
    graph_inputs = {i.name for i in graph.input}  # an initializer that is also an input is overridable
    taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    casts = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or init.name in graph_inputs:
            continue
        array = numpy_helper.to_array(init)
        if array.size < min_elements or not np.isfinite(array).all() or np.abs(array).max() > FP16_MAX:
            continue
        name, half_name = init.name, init.name + "_fp16"
        while half_name in taken:
            half_name += "_"
        taken.add(half_name)
        init.CopyFrom(numpy_helper.from_array(array.astype(np.float16), half_name))
        casts.append(helper.make_node("Cast", [half_name], [name], name=half_name + "_to_fp32",
                                      to=TensorProto.FLOAT))
    nodes = casts + list(graph.node)  # the Casts read initializers only: first is topological
    del graph.node[:]
    graph.node.extend(nodes)
    return len(casts)


def export_onnx(model, out_path, height=256, width=456, atol=1e-3, output_names=None,
                dynamic_batch=False, fp16_weights=False):
    """Write `model` (eval mode) to `out_path` atomically, after ONNX Runtime reproduces PyTorch.

    `output_names` default: the model's `onnx_output_names`, else OUTPUT_NAMES (bottom-up).
    `dynamic_batch` also makes the batch axis dynamic, checked with a batch of 2.
    `fp16_weights` stores the large float initializers in fp16 (see the module docstring);
    the check against PyTorch then runs on the fp16-stored file, so weights that fp16 cannot
    hold closely enough (not from an fp16 .pt) fail with the usual error.
    """
    import onnxruntime as ort
    import torch

    output_names = output_names or getattr(model, "onnx_output_names", OUTPUT_NAMES)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    model = model.eval()
    batch_axis = {0: "batch"} if dynamic_batch else {}
    with warnings.catch_warnings():
        # Shape arithmetic (TF SAME pads, the CondConv batch) is traced as constants: valid
        # for batch 1 and any H, W that are multiples of 8, which the dynamic axes promise.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (_sample_image(height, width),), str(tmp), dynamo=False, opset_version=OPSET,
            input_names=["image"], output_names=list(output_names),
            # PRESERVE (the model is in eval mode) exports the same inference graph as EVAL
            # but without folding BatchNorm into the convolutions, so the weights stay the
            # module's own (fp16) values; ONNX Runtime fuses Conv + BN when it loads the file.
            training=torch.onnx.TrainingMode.PRESERVE if fp16_weights else torch.onnx.TrainingMode.EVAL,
            dynamic_axes={"image": {**batch_axis, 2: "height", 3: "width"},
                          **{name: {**batch_axis, 2: f"{name}_height", 3: f"{name}_width"} for name in output_names}})
    try:
        if fp16_weights:
            import onnx

            onnx_model = onnx.load(str(tmp))
            store_weights_fp16(onnx_model)
            onnx.checker.check_model(onnx_model)
            onnx.save(onnx_model, str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        for h, w in ((height, width), (height + 8, width + 16)):  # the traced size and another
            image = _sample_image(h, w, seed=1, batch=2 if dynamic_batch else 1)
            with torch.no_grad():
                expected = model(image)
            if isinstance(expected, torch.Tensor):  # a single-output model
                expected = (expected,)
            expected = [t.numpy() for t in expected]
            got = session.run(list(output_names), {"image": image.numpy()})
            diff = max(float(np.abs(a - b).max()) for a, b in zip(expected, got))
            if diff > atol:
                hint = " (weights not fp16 values? try --fp32-weights)" if fp16_weights else ""
                raise PoseError(f"ONNX export differs from PyTorch by {diff:.2e} at {h}x{w}{hint}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out_path)
    return out_path


def model_info(model, height=256, width=456):
    """(parameter count, multiply-accumulates) of one eval forward at height x width."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(_sample_image(height, width))
    return params, counter.get_total_flops() // 2  # the counter reports 2 FLOPs per MAC


def main(argv=None):
    parser = argparse.ArgumentParser(description="Export a network to ONNX, or print its size and cost.")
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--weights", type=Path, help="PyTorch weights (default: the registered file)")
    parser.add_argument("--out", type=Path, help="ONNX file (default: the registered file)")
    parser.add_argument("--height", type=int, help="default 256, or a detector's input size")
    parser.add_argument("--width", type=int, help="default 456, 3/4 of the height for a top-down model, "
                                                  "the height for a detector")
    parser.add_argument("--fp32-weights", action="store_true",
                        help="store the weights in float32 (default: fp16 storage, float32 compute; half the file)")
    parser.add_argument("--info", action="store_true", help="print parameters and GFLOPs, write nothing")
    args = parser.parse_args(argv)
    try:
        spec = get_spec(args.model)
        top_down, detector = spec.kind == "top-down", spec.kind == "detector"
        height = args.height or (spec.input_height if detector else 256)
        width = args.width or (height * 3 // 4 if top_down else height if detector else 456)
        if height % 8 or width % 8:
            raise PoseError("--height and --width must be multiples of 8")
        if args.info:
            params, macs = model_info(spec.build(), height, width)
            print(f"{spec.name}: {params / 1e6:.3f}M parameters, {macs / 1e9:.3f} GMACs = "
                  f"{2 * macs / 1e9:.3f} GFLOPs (1 MAC = 2 FLOPs) at {height}x{width}")
            return 0
        from .models.io import load_torch_weights

        model = load_torch_weights(spec, args.weights or spec.torch_path)
        output_names = TOPDOWN_OUTPUT_NAMES if top_down else DETECTOR_OUTPUT_NAMES if detector else None
        out = export_onnx(model, args.out or spec.onnx_path, height, width, output_names=output_names,
                          dynamic_batch=top_down or detector, fp16_weights=not args.fp32_weights)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, "
              f"{'fp32' if args.fp32_weights else 'fp16'}-stored weights)")
        return 0
    except PoseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
