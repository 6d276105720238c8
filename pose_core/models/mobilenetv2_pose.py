"""Top-down "mnv2-hwloss": the heatmap-weighting-loss network of Li & Xiang with a
MobileNetV2 1.0 backbone initialised from MoveNet Lightning.

The backbone swap is this project's choice, not the paper's: the paper's MobileNetV3-Large
(models/mobilenetv3_pose.py, registered as "mnv3-hwloss", kept exact) needs pretrained
weights to learn anything in CPU hours (a random-initialised heatmap model stayed at 0 AP
here, a MoveNet-initialised MobileNetV2 reached about 0.14 AP in 15 CPU minutes), and no
pretrained MobileNetV3-Large 1.0 is available offline, while MoveNet Lightning's
MobileNetV2 (Apache-2.0, tools/convert_movenet_backbone.py) is. Everything after the
backbone follows the paper: the light deconvolution head, the attention block and the 17
heatmaps at stride 4 (`TopDownPoseNet`), the heatmap-weighting loss and its targets
(train/topdown_targets.py), the box padding, flip test and decoding (topdown.py).

Backbone (the MobileNetV2 pieces of models/bottomup.py): stem conv 3x3 s2 to 32, blocks
0..16 with expansion 6 (1 in block 0), channels 16-24-32-64-96-160-320, strides to output
stride 32 exactly as MoveNet's own graph runs them (blocks 7..12 not dilated: the dilation
is the bottom-up model's output-stride-8 change), ReLU6, linear bottlenecks, then
MobileNetV2's final conv 1x1 320 -> 1280 + ReLU6 ("Conv_1", MoveNet's pretrained out_relu;
the analogue of the paper's added final conv 160 -> 960). Stride-2 convolutions pad like
TensorFlow SAME, as MoveNet was trained, with pad sizes that follow the input size so that
the ONNX file is right for any crop size. 8 x 6 features for a 256 x 192 crop.

Input: float32 NCHW RGB 0..255, normalised inside as MoveNet's backbone expects,
x / 127.5 - 1 (the bottom-up t6 model's convention, bottomup.MOVENET_MEAN_RGB / STD).
Output: heatmaps (B, 17, H/4, W/4).
"""
from .bottomup import (FINAL_CONV_CHANNELS, MOBILENETV2_BLOCKS, MOVENET_MEAN_RGB, MOVENET_STD_RGB,
                       MobileNetV2Backbone)
from .mobilenetv3_pose import TopDownPoseNet


def build_mobilenetv2_backbone():
    """Plain MobileNetV2 1.0 at output stride 32 with the final 1280-channel conv."""
    return MobileNetV2Backbone(expansion=6, first_expansion=1, blocks=MOBILENETV2_BLOCKS,
                               final_channels=FINAL_CONV_CHANNELS, dynamic_pad=True)


def build_mobilenetv2_pose():
    backbone = build_mobilenetv2_backbone()
    return TopDownPoseNet(backbone, backbone.out_channels, MOVENET_MEAN_RGB, MOVENET_STD_RGB)
