"""Export a registered network's PyTorch weights to ONNX, or print its size and cost.

    python -m pose_core.export_onnx --model ldlc-openpose-t6 [--weights W.pt] [--out W.onnx]
    python -m pose_core.export_onnx --model ldlc-openpose-t6 --info

The ONNX file takes "image" (1, 3, H, W) float32 RGB 0..255 with H and W dynamic
(multiples of 8) and returns "heatmaps" and "pafs" of the last stage. The batch is
fixed at 1 because CondConv's per-sample kernels fold the batch into conv groups.
A top-down model (--height 256, width 3/4 of it by default) takes "image" (B, 3, H, W)
with a dynamic batch, all person crops of a frame at once, and returns "heatmaps" only.
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


def _sample_image(height, width, seed=0, batch=1):
    import torch

    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 255


def export_onnx(model, out_path, height=256, width=456, atol=1e-3, output_names=OUTPUT_NAMES,
                dynamic_batch=False):
    """Write `model` (eval mode) to `out_path` atomically, after ONNX Runtime reproduces PyTorch.

    `dynamic_batch` also makes the batch axis dynamic, checked with a batch of 2.
    """
    import onnxruntime as ort
    import torch

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
            dynamic_axes={"image": {**batch_axis, 2: "height", 3: "width"},
                          **{name: {**batch_axis, 2: "height_8", 3: "width_8"} for name in output_names}})
    try:
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
                raise PoseError(f"ONNX export differs from PyTorch by {diff:.2e} at {h}x{w}")
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
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, help="default 456, or 3/4 of the height for a top-down model")
    parser.add_argument("--info", action="store_true", help="print parameters and GFLOPs, write nothing")
    args = parser.parse_args(argv)
    try:
        spec = get_spec(args.model)
        top_down = spec.kind == "top-down"
        width = args.width or (args.height * 3 // 4 if top_down else 456)
        if args.height % 8 or width % 8:
            raise PoseError("--height and --width must be multiples of 8")
        if args.info:
            params, macs = model_info(spec.build(), args.height, width)
            print(f"{spec.name}: {params / 1e6:.3f}M parameters, {macs / 1e9:.3f} GMACs = "
                  f"{2 * macs / 1e9:.3f} GFLOPs (1 MAC = 2 FLOPs) at {args.height}x{width}")
            return 0
        from .models.io import load_torch_weights

        model = load_torch_weights(spec, args.weights or spec.torch_path)
        out = export_onnx(model, args.out or spec.onnx_path, args.height, width,
                          output_names=TOPDOWN_OUTPUT_NAMES if top_down else OUTPUT_NAMES,
                          dynamic_batch=top_down)
        print(f"wrote {out}")
        return 0
    except PoseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
