"""Convert CenterNet's whole COCO detector (tfjs) into a PyTorch state dict for "centernet-person".

    python tools/convert_centernet_detector.py \
        --model-json cache/npm/package/models/centernet.json \
        --out cache/centernet_mnv3_detector.pt

The backbone's tensors are tools/convert_centernet_backbone.py's; the neck and heads
("CenternetHead/...") follow, keyed "<CenterNet layer>.weight" (OIHW; depthwise C1HW) and
"<CenterNet layer>.bias" (the folded BN offset, or the conv's own bias). All 80 classes and
the raw box head are kept: pose_core.models.centernet_person.load_centernet_detector takes the
person channel and rewrites the box head.
"""
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pose_core.models.centernet_person import head_layer_names  # noqa: E402
from tools.convert_centernet_backbone import convert_backbone  # noqa: E402
from tools.tfjs_weights import backbone_converter_main, torch_kernel  # noqa: E402


def tfjs_tensor_names(layer, kind):
    """(kernel, bias or None) tensor names of a CenterNet neck or head layer in the tfjs graph:
    folded convs live under "tower_0/" with a BN offset; depthwise kernels and the plain
    convs (the SE's second conv, the output heads) keep their own names."""
    if kind == "depthwise":
        return f"{layer}_weights", None
    if kind == "conv_nobias":
        return f"{layer}/weights", None
    if "_output/" in layer:
        return f"{layer}_weights", f"{layer.rsplit('/', 1)[0]}/biases"
    kind_name = "Conv2D" if "/1x1" in layer or "conv1x1_se" in layer else ""
    prefix = f"tower_0/{layer}/{kind_name}_" if kind_name else f"tower_0/{layer}_"
    return prefix + "weights", prefix + "bn_offset"


def convert_detector(tfjs_weights):
    """{tfjs tensor name: array} -> the backbone's state (convert_backbone) plus the neck's and heads'."""
    import torch

    state = convert_backbone(tfjs_weights)
    for layer, _, kind in head_layer_names():
        kernel_name, bias_name = tfjs_tensor_names(layer, kind)
        state[f"{layer}.weight"] = torch_kernel(tfjs_weights[kernel_name], depthwise=kind == "depthwise")
        if bias_name:
            state[f"{layer}.bias"] = torch.from_numpy(tfjs_weights[bias_name].astype(np.float32))
    return state


def main(argv=None):
    backbone_converter_main(__doc__.splitlines()[0], REPO_ROOT / "cache/npm/package/models/centernet.json",
                            REPO_ROOT / "cache/centernet_mnv3_detector.pt", convert_detector, argv)


if __name__ == "__main__":
    main()
