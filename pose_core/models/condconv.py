"""Conditionally parameterised convolution (CondConv) and its inverted residual block.

CondConv (Yang et al. 2019) mixes E expert kernels per sample,
W(x) = sum_e a_e(x) W_e, with a = sigmoid(Linear(GAP(block input))) shared by
the expand 1x1, the depthwise kxk and the project 1x1 of one block
(spec ARCHITECTURES.md 1b.1, as timm's CondConvResidual).

The batched forward folds the batch into the channel axis and runs one grouped
convolution with per-sample kernels (spec 1b.3). In an ONNX export the batch
is therefore fixed (batch 1); H and W stay dynamic.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class CondConvRouting(nn.Module):
    """a = sigmoid(Linear(GAP(x))): one weight per expert and sample, (B, E)."""

    def __init__(self, in_channels, num_experts):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_experts)

    def forward(self, x):
        return torch.sigmoid(self.fc(x.mean(dim=(2, 3))))

    def init_uniform_sum(self):
        """Route every input to a_e = 1/E, so that sum(a) = 1 (mixing equal experts is exact)."""
        num_experts = self.fc.out_features
        if num_experts < 2:
            raise ValueError("sum(a) = 1 needs at least 2 experts")
        nn.init.zeros_(self.fc.weight)
        nn.init.constant_(self.fc.bias, math.log(1.0 / (num_experts - 1)))  # sigmoid(.) = 1/E


class CondConv2d(nn.Module):
    """Stride-1 convolution with E expert kernels stored as [E, O, I/g, k, k], no bias.

    Padding is dilation * (k - 1) / 2 on every side (TF SAME for stride 1, odd k).
    """

    def __init__(self, in_channels, out_channels, kernel_size, num_experts, dilation=1, groups=1):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.groups = groups
        self.padding = dilation * (kernel_size - 1) // 2
        self.weight = nn.Parameter(torch.empty(
            num_experts, out_channels, in_channels // groups, kernel_size, kernel_size))
        for expert in self.weight.data:  # each expert as nn.Conv2d would initialise it
            nn.init.kaiming_uniform_(expert, a=math.sqrt(5))

    def forward(self, x, routing):
        b, _, h, w = x.shape
        num_experts = self.weight.shape[0]
        # Python ints (not traced sizes) keep the kernel shape static in an ONNX export.
        kernels = (routing @ self.weight.view(num_experts, -1)).view(
            -1, self.in_channels // self.groups, self.kernel_size, self.kernel_size)
        d = self.dilation
        if self.training and d > 1 and h % d == 0 and w % d == 0:
            # Same result, ~5x faster backward on CPU: a dilation-d convolution is a plain one
            # on each of the d*d pixel phases (PyTorch's dilated depthwise backward is slow).
            phases = x.reshape(b, -1, h // d, d, w // d, d).permute(3, 5, 0, 1, 2, 4)
            out = F.conv2d(phases.reshape(d * d, -1, h // d, w // d), kernels, None, 1,
                           self.padding // d, 1, self.groups * b)
            out = out.view(d, d, b, self.out_channels, h // d, w // d).permute(2, 3, 4, 0, 5, 1)
            return out.reshape(b, self.out_channels, h, w)
        out = F.conv2d(x.reshape(1, -1, h, w), kernels, None, 1, self.padding, self.dilation,
                       self.groups * b)
        return out.view(-1, self.out_channels, out.shape[2], out.shape[3])

    @torch.no_grad()
    def init_from_static(self, kernel, spacing=1, noise_std=0.0, generator=None):
        """Every expert = `kernel` (O, I/g, kh, kw) zero-padded into the centre, plus noise.

        `spacing` places the taps `spacing` cells apart: a 3x3 kernel of dilation 2
        equals a 7x7 dilation-1 kernel with spacing 2, or the centre of a 7x7
        dilation-2 kernel with spacing 1. The noise (std `noise_std` times the
        kernel's std) breaks the symmetry between experts, which gradients alone
        never would.
        """
        kernel = torch.as_tensor(kernel, dtype=self.weight.dtype)
        kh, kw = kernel.shape[-2:]
        k, centre = self.kernel_size, self.kernel_size // 2
        if kernel.shape[:2] != self.weight.shape[1:3] or (max(kh, kw) - 1) * spacing >= k:
            raise ValueError(f"static kernel {tuple(kernel.shape)} (spacing {spacing}) does not fit "
                             f"experts {tuple(self.weight.shape)}")
        padded = torch.zeros(self.weight.shape[1:], dtype=self.weight.dtype)
        top, left = centre - (kh // 2) * spacing, centre - (kw // 2) * spacing
        padded[..., top:top + (kh - 1) * spacing + 1:spacing,
               left:left + (kw - 1) * spacing + 1:spacing] = kernel
        noise = torch.randn(self.weight.shape, generator=generator, dtype=self.weight.dtype)
        self.weight.copy_(padded + noise * (noise_std * kernel.std()))


class CondConvBNAct(nn.Module):
    """CondConv2d -> BatchNorm -> optional activation; called with the block's routing."""

    def __init__(self, in_channels, out_channels, kernel_size, num_experts, dilation=1, groups=1,
                 act=nn.ReLU6):
        super().__init__()
        self.conv = CondConv2d(in_channels, out_channels, kernel_size, num_experts, dilation, groups)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = act() if act else nn.Identity()

    def forward(self, x, routing):
        return self.act(self.bn(self.conv(x, routing)))


class CondConvInvertedResidual(nn.Module):
    """Stride-1 MobileNetV2 inverted residual with every convolution a CondConv.

    expand 1x1 (skipped when expansion is 1) -> depthwise kxk dilated -> linear
    project 1x1; residual when in == out. One routing per block.
    """

    def __init__(self, in_channels, out_channels, expansion, kernel_size=7, dilation=2,
                 num_experts=4):
        super().__init__()
        mid = in_channels * expansion
        self.routing = CondConvRouting(in_channels, num_experts)
        self.expand = (CondConvBNAct(in_channels, mid, 1, num_experts) if expansion != 1 else None)
        self.depthwise = CondConvBNAct(mid, mid, kernel_size, num_experts, dilation, groups=mid)
        self.project = CondConvBNAct(mid, out_channels, 1, num_experts, act=None)
        self.residual = in_channels == out_channels

    def forward(self, x):
        routing = self.routing(x)
        y = x if self.expand is None else self.expand(x, routing)
        y = self.project(self.depthwise(y, routing), routing)
        return x + y if self.residual else y
