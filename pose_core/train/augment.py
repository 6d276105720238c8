"""Geometric augmentation of a training batch: one affine per sample, batched in torch.

Lightweight OpenPose's recipe (spec ARCHITECTURES.md 1.8) scaled from its 368 crop to a
crop of side S: scale so that the main person's box height becomes 0.6 * S * U[0.5, 1.1],
rotate by U[-40, 40] degrees, centre the crop on the person's box centre shifted by
U[-40, 40] * S / 368 pixels in x and y, and mirror with probability 0.5 (the left and
right keypoints then swap). Scale, rotation, crop and flip form one 2x3 matrix per sample
that moves the image (with `F.affine_grid` + `F.grid_sample`), the ignore map and the
keypoints alike, so one code path runs on the CPU and the GPU. Outside the source image
the crop is filled with PAD_RGB and the ignore map with 0 (padding is real background).
"""
import math

import torch
import torch.nn.functional as F

from ..bottomup import PAD_RGB  # the ImageNet mean: training pads crops as inference pads frames
from ..skeleton import OPENPOSE_FLIP_INDEX
from .targets import loss_mask_from_ignore

TARGET_HEIGHT = 0.6           # main person's height as a fraction of the crop side
SCALE_RANGE = (0.5, 1.1)
MAX_ROTATION_DEG = 40.0
MAX_SHIFT_368 = 40.0          # crop-centre jitter in pixels of a 368 crop


def random_affines(centers, heights, crop, generator=None, scale_range=SCALE_RANGE):
    """Random source-pixel -> crop-pixel matrices.

    centers: (B, 2) main person box centres, heights: (B,) their box heights, in source
    pixels; the main person's height becomes TARGET_HEIGHT * crop * U[scale_range].
    Returns (matrices (B, 2, 3), flipped (B,) bool). Pixel centres are at integer
    coordinates in both frames.
    """
    b = len(centers)
    centers, heights = centers.float(), heights.float()

    def uniform(low, high):
        # drawn on the CPU so that one checkpointable generator serves any device
        return torch.rand(b, generator=generator).to(centers.device) * (high - low) + low

    scale = TARGET_HEIGHT * crop * uniform(*scale_range) / heights.clamp(min=1.0)
    angle = uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG) * (math.pi / 180)
    shift = torch.stack([uniform(-MAX_SHIFT_368, MAX_SHIFT_368),
                         uniform(-MAX_SHIFT_368, MAX_SHIFT_368)], 1) * (crop / 368)
    flipped = uniform(0.0, 1.0) < 0.5
    return affine_matrices(centers, scale, angle, shift, flipped, crop), flipped


def affine_matrices(centers, scale, angle, shift, flipped, crop):
    """p' = scale * R(angle) (p - center) + (crop - 1)/2 + shift, then x' -> crop - 1 - x'
    where flipped. All arguments are (B,) or (B, 2) tensors; returns (B, 2, 3)."""
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    translation = (crop - 1) / 2 + shift - (linear @ centers[..., None])[..., 0]
    matrices = torch.cat([linear, translation[..., None]], -1)
    mirrored = matrices.clone()
    mirrored[:, 0] = -matrices[:, 0]
    mirrored[:, 0, 2] += crop - 1
    return torch.where(flipped[:, None, None], mirrored, matrices)


def transform_keypoints(keypoints, matrices, flipped):
    """(B, P, 18, 3) OpenPose keypoints -> the same in crop pixels; mirrored samples get
    their left and right keypoints swapped so that names stay true."""
    xy = keypoints[..., :2] @ matrices[:, None, :, :2].transpose(-1, -2) + matrices[:, None, None, :, 2]
    out = torch.cat([xy, keypoints[..., 2:]], -1)
    swapped = out[:, :, torch.as_tensor(OPENPOSE_FLIP_INDEX, device=out.device)]
    return torch.where(flipped[:, None, None, None], swapped, out)


def warp_images(canvas, matrices, crop):
    """(B, C, H, W) float canvases -> (B, C, crop, crop) through the source->crop matrices;
    bilinear, zero outside the canvas."""
    b, _, h, w = canvas.shape
    full = torch.zeros(b, 3, 3, device=canvas.device)
    full[:, :2] = matrices
    full[:, 2, 2] = 1
    inverse = torch.linalg.inv(full)                        # crop pixel -> source pixel
    # align_corners=False normalisation: n = (2p + 1) / L - 1.
    src_norm = _normaliser(w, h, canvas.device)
    crop_denorm = torch.linalg.inv(_normaliser(crop, crop, canvas.device))
    theta = (src_norm @ inverse @ crop_denorm)[:, :2]
    grid = F.affine_grid(theta, (b, canvas.shape[1], crop, crop), align_corners=False)
    return F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _normaliser(w, h, device):
    return torch.tensor([[2.0 / w, 0.0, 1.0 / w - 1.0],
                         [0.0, 2.0 / h, 1.0 / h - 1.0],
                         [0.0, 0.0, 1.0]], device=device)


def augment_batch(batch, crop, generator=None, stride=8, device="cpu", scale_range=SCALE_RANGE):
    """A collated batch from `data.collate` -> network input and what the targets need
    (`scale_range`: random_affines').

    Returns (images (B, 3, crop, crop) float32 RGB 0..255, keypoints (B, P, 18, 3) in crop
    pixels, valid (B, P) bool, loss mask (B, 1, crop/stride, crop/stride)).
    """
    images = batch["images"].to(device, non_blocking=True)           # (B, H, W, 3) uint8
    ignore = batch["ignore"].to(device, non_blocking=True)           # (B, H, W) uint8
    pad = torch.tensor(PAD_RGB, dtype=torch.float32, device=device)
    canvas = torch.cat([images.float() - pad, ignore[..., None].float()], -1).permute(0, 3, 1, 2)
    matrices, flipped = random_affines(batch["centers"].to(device), batch["heights"].to(device),
                                       crop, generator, scale_range)
    warped = warp_images(canvas, matrices, crop)
    out_images = (warped[:, :3] + pad[:, None, None]).clamp_(0, 255)
    keypoints = transform_keypoints(batch["keypoints"].to(device), matrices, flipped)
    mask = loss_mask_from_ignore(warped[:, 3:].clamp(0, 1), stride)
    return out_images, keypoints, batch["valid"].to(device), mask
