""""person-detector": a one-class CenterNet-style person detector for the top-down models.

Backbone: mnv2-hwloss's MobileNetV2 1.0 (models/mobilenetv2_pose.py, the MoveNet
Lightning-initialisable MobileNetV2Backbone at output stride 32, TF SAME padding that
follows the input size) without the final 1280-channel conv, which the neck does not
need. MoveNet was trained on COCO people, so its features are person-aware.

Neck (an FPN-like top-down path to output stride 8, NECK_CHANNELS channels): the stride-32
features (block 16, 320 ch) projected 1x1, upsampled x2 (nearest, to the lateral's size)
and added to a 1x1 projection of the stride-16 features (block 12, 96 ch), a
depthwise-separable 3x3 conv; the same again with the stride-8 features (block 5, 32 ch).

Heads (each a depthwise-separable 3x3 conv, then a 1x1 conv), at stride 8:
- "center": person-centre heatmap logits (1 channel; the bias starts at -2.19, CenterNet's
  focal-loss prior of 0.1); the sigmoid is the decoder's (person_detector.py), which
  applies it to the peaks only (max-pool NMS on logits equals NMS on probabilities);
- "size": box width and height in stride-8 cells, plain (CenterNet's L1 on sizes);
- "offset": the sub-cell position of the box centre in its cell, x and y in cells.

Input: float32 NCHW RGB 0..255, normalised inside as MoveNet expects (x / 127.5 - 1);
any H and W (multiples of 32 keep every stride exact: pose_core.person_detector pads
the letterboxed frame right and bottom to one). Outputs (center, size, offset):
(B, 1, H/8, W/8), (B, 2, H/8, W/8), (B, 2, H/8, W/8).
"""
import torch
import torch.nn.functional as F
from torch import nn

from .bottomup import (MOBILENETV2_BLOCKS, MOVENET_MEAN_RGB, MOVENET_STD_RGB, ConvBNAct,
                       MobileNetV2Backbone)

STRIDE = 8
NECK_CHANNELS = 64
# Blocks 0..5 end at stride 8 (32 ch), 6..12 at stride 16 (96 ch), 13..16 at stride 32 (320 ch).
STRIDE8_END, STRIDE16_END = 6, 13
CENTER_PRIOR_BIAS = -2.19      # sigmoid(-2.19) = 0.1 (CenterNet, Focal Loss)
OUTPUT_NAMES = ("center", "size", "offset")


def separable(channels, out_channels=None):
    """Depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU."""
    return nn.Sequential(ConvBNAct(channels, channels, 3, groups=channels),
                         ConvBNAct(channels, out_channels or channels, 1))


def build_detector_backbone():
    """mnv2-hwloss's MobileNetV2 1.0 at output stride 32, without the final 1280-ch conv."""
    return MobileNetV2Backbone(expansion=6, first_expansion=1, blocks=MOBILENETV2_BLOCKS,
                               final_channels=None, dynamic_pad=True)


class PersonDetectorNet(nn.Module):
    stride = STRIDE

    def __init__(self, channels=NECK_CHANNELS):
        super().__init__()
        self.register_buffer("mean", torch.tensor(MOVENET_MEAN_RGB).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(MOVENET_STD_RGB).view(1, 3, 1, 1) * 255, persistent=False)
        self.backbone = build_detector_backbone()
        c8 = MOBILENETV2_BLOCKS[STRIDE8_END - 1][0]
        c16 = MOBILENETV2_BLOCKS[STRIDE16_END - 1][0]
        c32 = MOBILENETV2_BLOCKS[-1][0]
        self.top = ConvBNAct(c32, channels, 1)
        self.lateral16 = ConvBNAct(c16, channels, 1, act=None)
        self.lateral8 = ConvBNAct(c8, channels, 1, act=None)
        self.smooth16 = separable(channels)
        self.smooth8 = separable(channels)
        self.center = nn.Sequential(separable(channels), nn.Conv2d(channels, 1, 1))
        self.size = nn.Sequential(separable(channels), nn.Conv2d(channels, 2, 1))
        self.offset = nn.Sequential(separable(channels), nn.Conv2d(channels, 2, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for head in (self.center, self.size, self.offset):
            nn.init.normal_(head[-1].weight, std=0.01)
        nn.init.constant_(self.center[-1].bias, CENTER_PRIOR_BIAS)

    def forward(self, image):
        backbone = self.backbone
        x = backbone.stem((image - self.mean) / self.std)
        f8 = backbone.blocks[:STRIDE8_END](x)
        f16 = backbone.blocks[STRIDE8_END:STRIDE16_END](f8)
        f32 = backbone.blocks[STRIDE16_END:](f16)
        lateral = self.lateral16(f16)
        x = self.smooth16(lateral + F.interpolate(self.top(f32), size=lateral.shape[-2:], mode="nearest"))
        lateral = self.lateral8(f8)
        x = self.smooth8(lateral + F.interpolate(x, size=lateral.shape[-2:], mode="nearest"))
        return self.center(x), self.size(x), self.offset(x)


def build_person_detector():
    return PersonDetectorNet()
