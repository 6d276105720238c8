"""The seed bottom-up network: Lightweight dynamic large convolution OpenPose (Liu et al.).

Backbone (MobileNetV2, ReLU6, linear bottlenecks) -> CPM -> initial stage ->
refinement stage(s), each stage predicting 19 heatmaps and 38 PAFs at stride 8
(OpenPose-18 order, pose_core.skeleton).

Backbone blocks are numbered as MoveNet/Keras name them: 0 = expanded_conv,
1..12 = block_1..block_12. Output stride 8: block_6 (the former stride-16 step)
runs at stride 1 and blocks 7-12 are dilated by 2 (as DeepLab's output-stride
rule and Lightweight OpenPose's conv4_2 change).

Choices the paper leaves open (its figures are missing), all constructor arguments:
- CondConv large-kernel blocks: stage 4 blocks 2-4 and stage 5 blocks 1-3, i.e.
  blocks 7-12 (spec ARCHITECTURES.md 1b.2), `condconv_blocks`;
- depthwise kernel 7x7 with dilation 2 in those blocks, `kernel_size`, `dilation`;
- 4 experts, `num_experts`; 1 refinement stage, `num_refinement_stages`;
- widths as Lightweight OpenPose: CPM 128, initial-stage branches 512, refinement
  branches 128; the refinement block keeps `initial + trunk(initial)` and the
  dilation-2 second conv.
Where the paper and the spec's inferred design disagree, the paper wins:
- expansion 2 in *every* inverted residual ("t2"), the first block included
  (the spec's table keeps MobileNetV2's t = 1 there);
- CPM: align and final conv with BN + ReLU, the three depthwise-separable trunk
  convs with ReLU only (Lightweight OpenPose: no BN, ELU);
- initial-stage trunk convs with BN + ReLU (Lightweight OpenPose: no BN).
"t6" is MobileNetV2 1.0 (expansion 6, first block t = 1) so it can load MoveNet
Lightning's backbone (`load_movenet_backbone`); "t6w15" is MobileNetV2 1.5, MoveNet
MultiPose's backbone.

Input: float32 NCHW RGB 0..255, normalised inside as x / 127.5 - 1 (MoveNet's,
MOVENET_MEAN_RGB / MOVENET_STD_RGB). Every stride-2 convolution pads like TensorFlow
SAME, as MoveNet was trained.

The same pieces build the plain MobileNetV2 1.0 of the top-down "mnv2-hwloss" model
(`MOBILENETV2_BLOCKS`: blocks 0..16 at output stride 32, as MoveNet itself runs them,
and the final 1x1 conv "Conv_1"), which `load_movenet_backbone` fills just as well.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelUnavailable, WeightsError
from ..skeleton import NUM_HEATMAPS, NUM_PAFS
from .condconv import CondConvInvertedResidual

# (out channels, stride in MobileNetV2, dilation at output stride 8) of blocks 0..12.
BACKBONE_BLOCKS = (
    (16, 1, 1),
    (24, 2, 1), (24, 1, 1),
    (32, 2, 1), (32, 1, 1), (32, 1, 1),
    (64, 1, 1),  # block_6: stride 2 in MobileNetV2, removed for output stride 8
    (64, 1, 2), (64, 1, 2), (64, 1, 2),
    (96, 1, 2), (96, 1, 2), (96, 1, 2),
)
# Plain MobileNetV2 1.0, blocks 0..16 as MoveNet Lightning's own graph runs them: output
# stride 32 (block_13 strided too), no dilation; 320 channels out, then "Conv_1".
MOBILENETV2_BLOCKS = (
    (16, 1, 1),
    (24, 2, 1), (24, 1, 1),
    (32, 2, 1), (32, 1, 1), (32, 1, 1),
    (64, 2, 1), (64, 1, 1), (64, 1, 1), (64, 1, 1),
    (96, 1, 1), (96, 1, 1), (96, 1, 1),
    (160, 2, 1), (160, 1, 1), (160, 1, 1),
    (320, 1, 1),
)
STEM_CHANNELS = 32
FINAL_CONV_CHANNELS = 1280   # MobileNetV2's last 1x1 conv (MoveNet "Conv_1" -> out_relu)
MOVENET_DILATION = 2  # MoveNet's 3x3 kernels of blocks 7-12 run dilated by 2 at output stride 8
# MoveNet's input convention, which its pretrained backbone expects: RGB 0..255 -> [-1, 1],
# (x / 255 - 0.5) / 0.5 = x / 127.5 - 1 (LDLCOpenPose.forward writes it out).
MOVENET_MEAN_RGB = (0.5, 0.5, 0.5)
MOVENET_STD_RGB = (0.5, 0.5, 0.5)

VARIANTS = {
    "t2": dict(expansion=2, first_expansion=2),
    "t6": dict(expansion=6, first_expansion=1),
    # MobileNetV2 1.5, the width of MoveNet MultiPose's backbone (trained on whole multi-person
    # frames, where Lightning saw one centred person): stem 48, blocks 24-40-48-96-144.
    "t6w15": dict(expansion=6, first_expansion=1, width=1.5),
}


def scaled_channels(channels, width):
    """MobileNetV2's width rule (Keras _make_divisible): a multiple of 8, at most 10% under."""
    scaled = max(8, int(channels * width + 4) // 8 * 8)
    return scaled + 8 if scaled < 0.9 * channels * width else scaled


def tf_same_pad(x, kernel_size, stride, dilation=1, dynamic=False):
    """Zero-pad like TensorFlow 'SAME': an odd total puts the extra pixel at the bottom/right.

    Concatenating zeros rather than F.pad keeps the batch size known in a traced ONNX
    export, which CondConv's computed kernels need. The pad sizes are traced as
    constants: right for every size of the traced parity (H, W multiples of 8).
    `dynamic` pads with F.pad instead, the sizes computed from the input's shape, which
    a traced ONNX export records as shape arithmetic: right for any H and W (output
    stride 32 would otherwise need multiples of 32), for networks without CondConv.
    """
    if dynamic:
        effective = (kernel_size - 1) * dilation + 1
        if effective < stride:
            raise ValueError("dynamic TF SAME padding needs a kernel at least as wide as the stride")
        pads = []
        for dim in (3, 2):  # F.pad lists the last dimension first
            size = x.shape[dim]  # a traced value inside torch.onnx.export
            total = effective - stride + (-size) % stride  # = max((ceil(size/s)-1)*s + eff - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)
    for dim in (2, 3):
        size = int(x.shape[dim])
        out = -(-size // stride)
        total = max((out - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)
        before, after = total // 2, total - total // 2
        zeros = torch.zeros_like(x.narrow(dim, 0, 1))
        x = torch.cat([zeros] * before + [x] + [zeros] * after, dim=dim)
    return x


class ConvBNAct(nn.Module):
    """Conv -> BN (optional; the conv has a bias without it) -> activation (optional).

    `dynamic_pad` (set per instance, see MobileNetV2Backbone) selects tf_same_pad's
    shape-following padding for stride-2 convolutions.
    """

    dynamic_pad = False

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, dilation=1, groups=1,
                 bn=True, act=nn.ReLU):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        padding = 0 if stride > 1 else dilation * (kernel_size - 1) // 2  # stride > 1: TF SAME
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation,
                              groups, bias=not bn)
        self.bn = nn.BatchNorm2d(out_channels) if bn else nn.Identity()
        self.act = act() if act else nn.Identity()

    def forward(self, x):
        if self.stride > 1:
            x = tf_same_pad(x, self.kernel_size, self.stride, self.dilation, self.dynamic_pad)
        return self.act(self.bn(self.conv(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1 (skipped at expansion 1) -> dw 3x3 -> linear project 1x1."""

    def __init__(self, in_channels, out_channels, expansion, stride=1, dilation=1):
        super().__init__()
        mid = in_channels * expansion
        self.expand = ConvBNAct(in_channels, mid, 1, act=nn.ReLU6) if expansion != 1 else None
        self.depthwise = ConvBNAct(mid, mid, 3, stride, dilation, groups=mid, act=nn.ReLU6)
        self.project = ConvBNAct(mid, out_channels, 1, act=None)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class MobileNetV2Backbone(nn.Module):
    """Stem + MobileNetV2 blocks; by default blocks 0..12 at output stride 8, 96 channels out.

    `blocks`: (out channels, stride, dilation) per block, e.g. MOBILENETV2_BLOCKS for the
    plain stride-32 network; `final_channels` adds the final 1x1 conv + BN + ReLU6
    (MobileNetV2's "Conv_1"); `dynamic_pad` makes every stride-2 conv pad from the input
    size (any H, W in an ONNX export; not with CondConv blocks); `width` is MobileNetV2's
    width multiplier on every channel count (`scaled_channels`).
    """

    def __init__(self, expansion, first_expansion, condconv_blocks=(), kernel_size=7, dilation=2,
                 num_experts=4, blocks=BACKBONE_BLOCKS, final_channels=None, dynamic_pad=False, width=1.0):
        super().__init__()
        if dynamic_pad and condconv_blocks:
            raise ValueError("dynamic padding is for networks without CondConv blocks")
        in_channels = scaled_channels(STEM_CHANNELS, width)
        self.stem = ConvBNAct(3, in_channels, 3, stride=2, act=nn.ReLU6)
        layers = []
        for index, (out_channels, stride, block_dilation) in enumerate(blocks):
            out_channels = scaled_channels(out_channels, width)
            t = first_expansion if index == 0 else expansion
            if index in condconv_blocks:
                if stride != 1:
                    raise ValueError(f"block {index} has stride {stride}; CondConv blocks are stride 1")
                layers.append(CondConvInvertedResidual(in_channels, out_channels, t, kernel_size,
                                                       dilation, num_experts))
            else:
                layers.append(InvertedResidual(in_channels, out_channels, t, stride, block_dilation))
            in_channels = out_channels
        self.blocks = nn.Sequential(*layers)
        self.final = ConvBNAct(in_channels, final_channels, 1, act=nn.ReLU6) if final_channels else None
        self.out_channels = final_channels or in_channels
        if dynamic_pad:
            for m in self.modules():
                if isinstance(m, ConvBNAct):
                    m.dynamic_pad = True

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return x if self.final is None else self.final(x)


class Cpm(nn.Module):
    """5 convs: align 1x1 (BN+ReLU), 3 depthwise-separable convs (ReLU only) as a residual, 3x3 (BN+ReLU)."""

    def __init__(self, in_channels, channels=128):
        super().__init__()
        self.align = ConvBNAct(in_channels, channels, 1)
        self.trunk = nn.Sequential(*(nn.Sequential(
            ConvBNAct(channels, channels, 3, groups=channels, bn=False),
            ConvBNAct(channels, channels, 1, bn=False)) for _ in range(3)))
        self.conv = ConvBNAct(channels, channels, 3)

    def forward(self, x, aligned=False):
        """`aligned`: x is the align conv's output already (models/multipose_fpn.py)."""
        x = x if aligned else self.align(x)
        return self.conv(x + self.trunk(x))


def _branch(in_channels, mid_channels, out_channels):
    """conv 1x1 + ReLU -> conv 1x1 to the maps."""
    return nn.Sequential(ConvBNAct(in_channels, mid_channels, 1, bn=False),
                         ConvBNAct(mid_channels, out_channels, 1, bn=False, act=None))


class InitialStage(nn.Module):
    def __init__(self, channels=128, branch_channels=512):
        super().__init__()
        self.trunk = nn.Sequential(*(ConvBNAct(channels, channels, 3) for _ in range(3)))
        self.heatmaps = _branch(channels, branch_channels, NUM_HEATMAPS)
        self.pafs = _branch(channels, branch_channels, NUM_PAFS)

    def forward(self, x):
        x = self.trunk(x)
        return self.heatmaps(x), self.pafs(x)


class RefinementStageBlock(nn.Module):
    """1x1 (ReLU) -> [3x3 BN ReLU -> 3x3 dilation 2 BN ReLU] added to the 1x1 output."""

    def __init__(self, in_channels, channels=128):
        super().__init__()
        self.initial = ConvBNAct(in_channels, channels, 1, bn=False)
        self.trunk = nn.Sequential(ConvBNAct(channels, channels, 3),
                                   ConvBNAct(channels, channels, 3, dilation=2))

    def forward(self, x):
        x = self.initial(x)
        return x + self.trunk(x)


class RefinementStage(nn.Module):
    def __init__(self, in_channels, channels=128):
        super().__init__()
        self.trunk = nn.Sequential(RefinementStageBlock(in_channels, channels),
                                   *(RefinementStageBlock(channels, channels) for _ in range(4)))
        self.heatmaps = _branch(channels, channels, NUM_HEATMAPS)
        self.pafs = _branch(channels, channels, NUM_PAFS)

    def forward(self, x):
        x = self.trunk(x)
        return self.heatmaps(x), self.pafs(x)


class LDLCOpenPose(nn.Module):
    """Training mode: [(heatmaps, pafs)] per stage; eval mode: the last stage's (heatmaps, pafs).

    `eval_stages` (eval mode only) stops after that many stages: 1 runs the initial stage
    alone, a faster model from the same weights, since every stage is trained to predict
    the maps (Lightweight OpenPose's paper: 35 vs 41.4 AP, 1.3 vs 3.4 GFLOPs of stages).
    """

    def __init__(self, expansion=2, first_expansion=2, condconv_blocks=(7, 8, 9, 10, 11, 12),
                 kernel_size=7, dilation=2, num_experts=4, num_refinement_stages=1, channels=128,
                 eval_stages=None, width=1.0, backbone=None):
        super().__init__()
        self.eval_stages = eval_stages
        # `backbone`: another module from normalised pixels to stride-8 features with
        # `out_channels` (models/multipose_fpn.py); the backbone options are then unused.
        self.backbone = backbone if backbone is not None else MobileNetV2Backbone(
            expansion, first_expansion, set(condconv_blocks), kernel_size, dilation, num_experts, width=width)
        self.cpm = Cpm(self.backbone.out_channels, channels)
        self.initial_stage = InitialStage(channels)
        self.refinement_stages = nn.ModuleList(
            RefinementStage(channels + NUM_HEATMAPS + NUM_PAFS, channels)
            for _ in range(num_refinement_stages))

    def forward(self, x):
        outputs = self.stage_outputs(self.backbone_features(x), None if self.training else self.eval_stages)
        return outputs if self.training else outputs[-1]

    def backbone_features(self, x):
        """Input pixels (RGB 0..255) -> backbone output, which the CPM takes."""
        return self.backbone(self.normalise(x))

    @staticmethod
    def normalise(x):
        """Input pixels (RGB 0..255) -> the backbone's input range, -1..1."""
        return x / 127.5 - 1.0

    def stage_outputs(self, backbone_features, num_stages=None, frozen_stages=0):
        """[(heatmaps, pafs)] of the first `num_stages` stages (all when None). With
        `frozen_stages` K > 0 the CPM and the first K stages run without gradients, so that
        training moves the later stages alone."""
        grad = torch.is_grad_enabled()
        with torch.set_grad_enabled(grad and frozen_stages == 0):
            features = self.cpm(backbone_features)
            outputs = [self.initial_stage(features)]
        stages = self.refinement_stages if num_stages is None else self.refinement_stages[:num_stages - 1]
        for number, stage in enumerate(stages, start=2):
            with torch.set_grad_enabled(grad and number > frozen_stages):
                outputs.append(stage(torch.cat([features, *outputs[-1]], dim=1)))
        return outputs

    def frozen_modules(self, frozen_stages):
        """The CPM and the first `frozen_stages` stages (none when 0)."""
        stages = [self.initial_stage, *self.refinement_stages][:frozen_stages]
        return [self.cpm, *stages] if frozen_stages else []


def build_ldlc_openpose(variant: str, **options) -> LDLCOpenPose:
    """"t2" (the paper's default) or "t6" (MoveNet-compatible); `options` override constructor arguments."""
    if variant not in VARIANTS:
        raise ModelUnavailable(f"unknown LDLC-OpenPose variant '{variant}'; known: {', '.join(VARIANTS)}")
    return LDLCOpenPose(**{**VARIANTS[variant], **options})


# ------------------------------------------------------------- MoveNet initialisation

def movenet_layer_names(num_blocks=len(BACKBONE_BLOCKS), final_conv=False):
    """(MoveNet layer name, backbone attribute path) for the stem and blocks 0..num_blocks-1
    (0..12 by default, the bottom-up backbone; up to 17), then "Conv_1" when `final_conv`."""
    names = [("Conv1", "stem")]
    names += [("expanded_conv_depthwise", "blocks.0.depthwise"),
              ("expanded_conv_project", "blocks.0.project")]
    for i in range(1, num_blocks):
        names += [(f"block_{i}_{part}", f"blocks.{i}.{part}") for part in ("expand", "depthwise", "project")]
    if final_conv:
        names.append(("Conv_1", "final"))
    return names


@torch.no_grad()
def set_folded_bn(bn, offset):
    """BN that computes x + offset in eval mode (a pretrained net's BN folded into its convs:
    MoveNet's, CenterNet's)."""
    bn.weight.fill_(1.0)
    bn.bias.copy_(offset)
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)


@torch.no_grad()
def load_movenet_backbone(model, state, noise_std=1e-3, generator=None):
    """Load a converted MoveNet backbone (tools/convert_movenet_backbone.py) into
    `model.backbone`: Lightning's (MobileNetV2 1.0) into a "t6" model (stem and blocks 0..12) or
    any other MobileNetV2Backbone of expansion 6 (every block it has, and "Conv_1" when it has
    the final conv); MultiPose's (MobileNetV2 1.5) into a "t6w15" model.

    `state` maps "<MoveNet layer>.weight" (OIHW) and "<MoveNet layer>.bias" (the folded
    BN offset) to tensors. CondConv blocks get the pretrained 3x3 kernel in every expert
    (plus `noise_std`-relative noise) and routing with sum(a) = 1, so that at the start
    they compute the pretrained function exactly when noise_std is 0.
    """
    load_movenet_layers(model.backbone, state, noise_std, generator)
    return model


@torch.no_grad()
def load_movenet_layers(backbone, state, noise_std=1e-3, generator=None):
    """load_movenet_backbone's work on a MobileNetV2Backbone itself."""
    for movenet_name, path in movenet_layer_names(len(backbone.blocks), backbone.final is not None):
        layer = backbone.get_submodule(path)
        try:
            weight, offset = state[f"{movenet_name}.weight"].float(), state[f"{movenet_name}.bias"].float()
        except KeyError:
            raise WeightsError(f"MoveNet backbone weights lack layer {movenet_name}") from None
        target = layer.conv.weight
        if isinstance(layer.conv, nn.Conv2d):
            if weight.shape != target.shape:
                raise WeightsError(f"MoveNet layer {movenet_name} {tuple(weight.shape)} does not fit "
                                   f"{path} {tuple(target.shape)}; use the t6 variant")
            target.copy_(weight)
        else:
            block_dilation = layer.conv.dilation
            if MOVENET_DILATION % block_dilation:
                raise WeightsError(f"cannot place MoveNet's dilation-{MOVENET_DILATION} kernel in "
                                   f"dilation-{block_dilation} experts")
            try:
                layer.conv.init_from_static(weight, MOVENET_DILATION // block_dilation, noise_std, generator)
            except ValueError as exc:
                raise WeightsError(f"MoveNet layer {movenet_name}: {exc}; use the t6 variant") from None
        set_folded_bn(layer.bn, offset)
    for block in backbone.blocks:
        if isinstance(block, CondConvInvertedResidual):
            block.routing.init_uniform_sum()
