"""Top-down network of Li & Xiang, "Lightweight Human Pose Estimation Using Heatmap-Weighting
Loss" (ICPR 2022 workshop): MobileNetV3-Large -> lightweight deconvolution head -> attention
-> 17 COCO heatmaps at stride 4 (64 x 48 for a 256 x 192 crop).

Layout from the spec (ARCHITECTURES.md 4.1, 4.2; the authors' mmpose code):
- backbone: mmpose's MobileNetV3 "big" (its stride-2 5x5 block is the second of the three
  exp-672 blocks, not the first as in the MobileNetV3 paper), the expand 1x1 present in every
  block, a linear projection, plus the added final conv 1x1 160 -> 960 + BN + HSwish;
- head: 3 x (depthwise ConvTranspose 4x4 stride 2 + BN + ReLU -> pointwise 1x1 + BN + ReLU)
  with 256 channels, the attention block after the last pointwise conv, then a 1x1 to 17;
- HSigmoid is relu6(x + 3) / 6 (mmcv >= 1.4.4; the spec's choice, the repo pins no version).
Where the paper and the authors' code disagree, the paper wins: its equations (5) and (6)
have no activation between the two convolutions of the channel and spatial attention
branches, so neither has one here (the code puts a ReLU in both).

Input: float32 NCHW RGB 0..255, normalised inside with the ImageNet mean and std (spec 0.3).
Output: heatmaps (B, 17, H/4, W/4), in training and in eval mode.

`TopDownPoseNet` is the network around any stride-32 backbone: the head and attention
here, the backbone given; `build_mobilenetv3_pose` gives it the paper's MobileNetV3,
models/mobilenetv2_pose.py a MoveNet-initialised MobileNetV2.
"""
import torch
from torch import nn

from ..skeleton import NUM_KEYPOINTS

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)

STEM_CHANNELS = 16
# (kernel, expanded (mid) channels, out channels, squeeze-excite, activation, stride)
BACKBONE_BLOCKS = (
    (3, 16, 16, False, nn.ReLU, 1),
    (3, 64, 24, False, nn.ReLU, 2),
    (3, 72, 24, False, nn.ReLU, 1),
    (5, 72, 40, True, nn.ReLU, 2),
    (5, 120, 40, True, nn.ReLU, 1),
    (5, 120, 40, True, nn.ReLU, 1),
    (3, 240, 80, False, nn.Hardswish, 2),
    (3, 200, 80, False, nn.Hardswish, 1),
    (3, 184, 80, False, nn.Hardswish, 1),
    (3, 184, 80, False, nn.Hardswish, 1),
    (3, 480, 112, True, nn.Hardswish, 1),
    (3, 672, 112, True, nn.Hardswish, 1),
    (5, 672, 160, True, nn.Hardswish, 1),
    (5, 672, 160, True, nn.Hardswish, 2),
    (5, 960, 160, True, nn.Hardswish, 1),
)
BACKBONE_OUT_CHANNELS = 960   # the added final conv
HEAD_CHANNELS = 256
HEAD_LAYERS = 3
ATTENTION_RATIO = 4


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BN -> activation (none when act is None)."""

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, groups=1, act=nn.ReLU):
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                            groups=groups, bias=False),
                  nn.BatchNorm2d(out_channels)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Backbone SE: x * hsigmoid(conv(relu(conv(GAP x)))), squeeze to channels / 4."""

    def __init__(self, channels, ratio=4):
        super().__init__()
        self.squeeze = nn.Conv2d(channels, channels // ratio, 1)
        self.excite = nn.Conv2d(channels // ratio, channels, 1)

    def forward(self, x):
        w = torch.relu(self.squeeze(x.mean((2, 3), keepdim=True)))
        return x * nn.functional.hardsigmoid(self.excite(w))


class InvertedResidual(nn.Module):
    """expand 1x1 -> depthwise k x k -> (SE) -> linear project 1x1; residual when shapes allow."""

    def __init__(self, in_channels, kernel_size, mid_channels, out_channels, se, act, stride):
        super().__init__()
        self.expand = ConvBNAct(in_channels, mid_channels, act=act)
        self.depthwise = ConvBNAct(mid_channels, mid_channels, kernel_size, stride, groups=mid_channels, act=act)
        self.se = SqueezeExcite(mid_channels) if se else nn.Identity()
        self.project = ConvBNAct(mid_channels, out_channels, act=None)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class MobileNetV3Large(nn.Sequential):
    """Stride-32 backbone ending in the added 1x1 conv to 960 channels."""

    def __init__(self):
        layers = [ConvBNAct(3, STEM_CHANNELS, 3, 2, act=nn.Hardswish)]
        channels = STEM_CHANNELS
        for kernel, mid, out, se, act, stride in BACKBONE_BLOCKS:
            layers.append(InvertedResidual(channels, kernel, mid, out, se, act, stride))
            channels = out
        layers.append(ConvBNAct(channels, BACKBONE_OUT_CHANNELS, act=nn.Hardswish))
        super().__init__(*layers)


class DeconvLayer(nn.Sequential):
    """x2 upsampling: depthwise ConvTranspose 4x4 + BN + ReLU -> pointwise 1x1 (bias) + BN + ReLU."""

    def __init__(self, in_channels, out_channels):
        super().__init__(
            nn.ConvTranspose2d(in_channels, in_channels, 4, stride=2, padding=1, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels), nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, 1),
            nn.BatchNorm2d(out_channels), nn.ReLU())


class Attention(nn.Module):
    """x + channel(x) + spatial(x) (paper eq. 5-7), the two branches without inner activation.

    channel(x) = x * hsigmoid(conv1x1(conv1x1(GAP x))), squeeze to channels / 4;
    spatial(x) = x * hsigmoid(conv3x3(conv1x1 to one channel(x))).
    """

    def __init__(self, channels, ratio=ATTENTION_RATIO):
        super().__init__()
        self.channel_squeeze = nn.Conv2d(channels, channels // ratio, 1)
        self.channel_excite = nn.Conv2d(channels // ratio, channels, 1)
        self.spatial_squeeze = nn.Conv2d(channels, 1, 1)
        self.spatial_conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        pooled = x.mean((2, 3), keepdim=True)
        channel = nn.functional.hardsigmoid(self.channel_excite(self.channel_squeeze(pooled)))
        spatial = nn.functional.hardsigmoid(self.spatial_conv(self.spatial_squeeze(x)))
        return x + x * channel + x * spatial


class TopDownPoseNet(nn.Module):
    """Crop (B, 3, H, W) RGB 0..255 -> heatmaps (B, 17, H/4, W/4).

    `backbone`: a module from the normalised image to stride-32 features of
    `backbone_channels` channels; `input_mean` and `input_std` (RGB, in 0..1 units) are the
    normalisation its weights expect.
    """

    def __init__(self, backbone, backbone_channels, input_mean=IMAGENET_MEAN_RGB, input_std=IMAGENET_STD_RGB,
                 num_keypoints=NUM_KEYPOINTS):
        super().__init__()
        self.register_buffer("mean", torch.tensor(input_mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(input_std).view(1, 3, 1, 1) * 255, persistent=False)
        self.backbone = backbone
        channels = [backbone_channels] + [HEAD_CHANNELS] * HEAD_LAYERS
        self.deconv = nn.Sequential(*(DeconvLayer(a, b) for a, b in zip(channels, channels[1:])))
        self.attention = Attention(HEAD_CHANNELS)
        self.final = nn.Conv2d(HEAD_CHANNELS, num_keypoints, 1)
        self._init_weights()

    def _init_weights(self):
        # mmpose (spec 4.1, 4.2): Kaiming for the backbone convs; normal(0.001) for the head's
        # deconvs and final conv; BN weight 1, bias 0. The head's pointwise convs and the
        # attention keep PyTorch's default init. (A pretrained backbone is loaded afterwards.)
        for m in self.backbone.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in [m for m in self.deconv.modules() if isinstance(m, nn.ConvTranspose2d)] + [self.final]:
            nn.init.normal_(m.weight, std=0.001)
        nn.init.zeros_(self.final.bias)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, image):
        x = self.backbone((image - self.mean) / self.std)
        return self.final(self.attention(self.deconv(x)))


def build_mobilenetv3_pose():
    """The paper's network: MobileNetV3-Large (+ final conv to 960), ImageNet normalisation."""
    return TopDownPoseNet(MobileNetV3Large(), BACKBONE_OUT_CHANNELS)
