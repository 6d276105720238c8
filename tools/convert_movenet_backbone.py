"""Convert a MoveNet MobileNetV2 backbone (tfjs) into a PyTorch state dict.

    python tools/convert_movenet_backbone.py \
        --model-json cache/npm/package/models/movenet-lightning.json \
        --out cache/movenet_lightning_backbone.pt
    python tools/convert_movenet_backbone.py \
        --model-json cache/npm/package/models/movenet-multipose.json \
        --out cache/movenet_multipose_backbone.pt

Lightning's is a MobileNetV2 1.0, MultiPose's a MobileNetV2 1.5 (same layer names).
Keys are "<MoveNet layer>.weight" (OIHW; depthwise C1HW) and "<MoveNet layer>.bias"
(the BN offset, MoveNet's BN being folded into its convs) for the whole MobileNetV2:
the stem, blocks 0..16 and the final 1x1 conv "Conv_1" (1280 channels); MultiPose's also
its feature pyramid and keypoint heatmap head, for ldlc-openpose-fpn (FPN_TENSORS).
pose_core.models.bottomup.load_movenet_backbone loads what a network has of them: the
stem and blocks 0..12 into the bottom-up "t6" model (MultiPose's into "t6w15"), all of
them into "mnv2-hwloss"; pose_core.models.multipose_fpn.load_multipose_features loads all of
MultiPose's, pyramid and heatmap head included, into "ldlc-openpose-fpn".
"""
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pose_core.models.bottomup import MOBILENETV2_BLOCKS, movenet_layer_names  # noqa: E402
from tools.tfjs_weights import backbone_converter_main, torch_kernel  # noqa: E402

FEATURE_PREFIX = "StatefulPartitionedCall/center_net_mobile_net_v2fpn_feature_extractor/model_1/"
LAYER_PREFIX = f"{FEATURE_PREFIX}model/"   # the MobileNetV2 inside the feature extractor
HEAD_PREFIX = "StatefulPartitionedCall/kpt_heatmap_0/"
# MultiPose's pyramid and keypoint heatmap head (pose_core.models.multipose_fpn.fpn_layer_names):
# layer -> tfjs tensor names of (weight, bias); bias None for a depthwise conv.
FPN_TENSORS = {
    **{name: (f"{FEATURE_PREFIX}{name}/Conv2D/ReadVariableOp", f"{FEATURE_PREFIX}{name}/BiasAdd/ReadVariableOp")
       for name in ("conv2d", "conv2d_1", "conv2d_2", "conv2d_3")},
    **{f"{name}/{part}": tensors for name in ("separable_conv2d", "separable_conv2d_1", "separable_conv2d_2")
       for part, tensors in (
           ("depthwise", (f"{FEATURE_PREFIX}{name}/separable_conv2d/ReadVariableOp", None)),
           ("pointwise", (f"{FEATURE_PREFIX}{name}/separable_conv2d_weights",
                          f"{FEATURE_PREFIX}{name}/separable_conv2d_bn_offset")))},
    "kpt_heatmap_0/depthwise": (f"{HEAD_PREFIX}separable_conv2d_6/separable_conv2d/ReadVariableOp", None),
    "kpt_heatmap_0/pointwise": (f"{HEAD_PREFIX}separable_conv2d_6/separable_conv2d/ReadVariableOp_1",
                                f"{HEAD_PREFIX}separable_conv2d_6/BiasAdd/ReadVariableOp"),
    "kpt_heatmap_0/output": (f"{HEAD_PREFIX}conv2d_7/Conv2D/ReadVariableOp", f"{HEAD_PREFIX}conv2d_7/BiasAdd/ReadVariableOp"),
}


def convert_backbone(tfjs_weights):
    """{tfjs tensor name: array} -> {"<layer>.weight"/"<layer>.bias": float32 torch tensor}; with
    MultiPose's weights also its pyramid and keypoint heatmap head (FPN_TENSORS)."""
    import torch

    state = {}
    if all(weight in tfjs_weights for weight, _ in FPN_TENSORS.values()):  # MultiPose's graph
        for layer, (weight, bias) in FPN_TENSORS.items():
            state[f"{layer}.weight"] = torch_kernel(tfjs_weights[weight], depthwise=bias is None)
            if bias is not None:
                state[f"{layer}.bias"] = torch.from_numpy(tfjs_weights[bias].astype(np.float32))
    for layer, _ in movenet_layer_names(len(MOBILENETV2_BLOCKS), final_conv=True):
        depthwise = layer.endswith("depthwise")
        kind = "depthwise" if depthwise else "Conv2D"
        state[f"{layer}.weight"] = torch_kernel(tfjs_weights[f"{LAYER_PREFIX}{layer}/{kind}_weights"], depthwise)
        state[f"{layer}.bias"] = torch.from_numpy(
            tfjs_weights[f"{LAYER_PREFIX}{layer}/{kind}_bn_offset"].astype(np.float32))
    return state


def main(argv=None):
    backbone_converter_main(__doc__.splitlines()[0], REPO_ROOT / "cache/npm/package/models/movenet-lightning.json",
                            REPO_ROOT / "cache/movenet_lightning_backbone.pt", convert_backbone, argv)


if __name__ == "__main__":
    main()
