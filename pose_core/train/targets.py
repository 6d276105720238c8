"""Training targets of the bottom-up network: keypoint heatmaps, PAFs and the loss mask.

Lightweight OpenPose semantics (spec ARCHITECTURES.md 1.8), written as tensor ops so
the same code renders a whole batch on the CPU or the GPU:
- heatmaps: a Gaussian (sigma in input pixels) per labelled keypoint, evaluated at the
  cell centres `map_x * stride + stride/2 - 0.5`, zero where the exponent exceeds
  4.6052 (value < 0.01), added over people and clipped at 1; channel 18 is the
  background `1 - max` over the 18 keypoint channels;
- PAFs: the unit vector a->b on every cell whose centre lies within `paf_thickness`
  cells of the segment a-b (perpendicular distance, inside the segment's box grown by
  the thickness); zero-length limbs and limbs with an unlabelled end are skipped.
  Where several people's limbs of the same type overlap, their vectors are averaged
  (the original CMU OpenPose rule) instead of the last person overwriting the others:
  it is order-independent and needs no per-person loop.
Keypoints and cells share one convention: an integer coordinate is a pixel centre, so
PAF segments are placed with the same half-cell offset as the Gaussians.
"""
import numpy as np
import torch
import torch.nn.functional as F

from ..skeleton import NUM_OPENPOSE_KEYPOINTS, OPENPOSE_LIMBS

_MAX_EXPONENT = 4.6052  # exp(-4.6052) = 0.01: Lightweight OpenPose drops smaller values
_LIMB_A = torch.tensor([a for a, _ in OPENPOSE_LIMBS])
_LIMB_B = torch.tensor([b for _, b in OPENPOSE_LIMBS])


def render_bottomup_targets(keypoints, map_h, map_w, stride=8, sigma=7.0, paf_thickness=1.0):
    """Targets of one image.

    keypoints: (N, 18, 3) OpenPose-18 order, (x, y, v) in input pixels, v > 0 = labelled;
    numpy or torch. Returns (heatmaps (19, map_h, map_w), pafs (38, map_h, map_w)),
    torch float32 on the keypoints' device (CPU for numpy input).
    """
    kp = torch.as_tensor(np.asarray(keypoints, np.float32) if not torch.is_tensor(keypoints) else keypoints)
    kp = kp.float().reshape(1, -1, NUM_OPENPOSE_KEYPOINTS, 3)
    valid = torch.ones(kp.shape[:2], dtype=torch.bool, device=kp.device)
    heatmaps, pafs = render_bottomup_targets_batch(kp, valid, map_h, map_w, stride, sigma, paf_thickness)
    return heatmaps[0], pafs[0]


def render_bottomup_targets_batch(keypoints, valid, map_h, map_w, stride=8, sigma=7.0, paf_thickness=1.0):
    """Targets of a batch whose person dimension is padded.

    keypoints: (B, P, 18, 3) float tensor as in `render_bottomup_targets`;
    valid: (B, P) bool, False for padding people.
    Returns (heatmaps (B, 19, map_h, map_w), pafs (B, 38, map_h, map_w)) float32.
    """
    keypoints = keypoints.float()
    labelled = (keypoints[..., 2] > 0) & valid[..., None]               # (B, P, 18)
    device = keypoints.device
    offset = stride / 2 - 0.5
    cell_x = torch.arange(map_w, device=device, dtype=torch.float32) * stride + offset
    cell_y = torch.arange(map_h, device=device, dtype=torch.float32) * stride + offset
    return (_render_heatmaps(keypoints, labelled, cell_x, cell_y, sigma),
            _render_pafs(keypoints, labelled, cell_x, cell_y, stride, paf_thickness))


def _render_heatmaps(keypoints, labelled, cell_x, cell_y, sigma):
    dx2 = (cell_x - keypoints[..., 0, None]) ** 2                        # (B, P, 18, W)
    dy2 = (cell_y - keypoints[..., 1, None]) ** 2                        # (B, P, 18, H)
    exponent = (dy2[..., :, None] + dx2[..., None, :]) / (2 * sigma * sigma)
    gauss = torch.exp(-exponent) * (exponent <= _MAX_EXPONENT)
    gauss = gauss * labelled[..., None, None]
    keypoint_maps = gauss.sum(1).clamp_(max=1.0)                        # (B, 18, H, W)
    background = 1.0 - keypoint_maps.max(1, keepdim=True).values
    return torch.cat([keypoint_maps, background], 1)


def _render_pafs(keypoints, labelled, cell_x, cell_y, stride, thickness):
    # Work in map cells: cell centres sit at integer coordinates.
    limb_a, limb_b = _LIMB_A.to(keypoints.device), _LIMB_B.to(keypoints.device)
    xy = (keypoints[..., :2] - (stride / 2 - 0.5)) / stride             # (B, P, 18, 2)
    a, b = xy[:, :, limb_a], xy[:, :, limb_b]                           # (B, P, L, 2)
    vec = b - a
    length = vec.norm(dim=-1)                                           # (B, P, L)
    usable = labelled[:, :, limb_a] & labelled[:, :, limb_b] & (length > 1e-6)
    unit = vec / length.clamp(min=1e-6)[..., None]

    gx = torch.arange(len(cell_x), device=keypoints.device, dtype=torch.float32)
    gy = torch.arange(len(cell_y), device=keypoints.device, dtype=torch.float32)
    rel_x = gx - a[..., 0, None]                                        # (B, P, L, W)
    rel_y = gy - a[..., 1, None]                                        # (B, P, L, H)
    # |cross(unit, cell - a)| = perpendicular distance to the limb's line.
    perpendicular = (unit[..., 0, None, None] * rel_y[..., :, None]
                     - unit[..., 1, None, None] * rel_x[..., None, :]).abs()
    in_x = (gx >= torch.minimum(a[..., 0], b[..., 0])[..., None] - thickness) & \
           (gx <= torch.maximum(a[..., 0], b[..., 0])[..., None] + thickness)
    in_y = (gy >= torch.minimum(a[..., 1], b[..., 1])[..., None] - thickness) & \
           (gy <= torch.maximum(a[..., 1], b[..., 1])[..., None] + thickness)
    on_limb = (perpendicular <= thickness) & in_y[..., :, None] & in_x[..., None, :] & usable[..., None, None]
    on_limb = on_limb.float()                                           # (B, P, L, H, W)

    count = on_limb.sum(1)                                              # (B, L, H, W)
    summed = torch.einsum("bplhw,bplc->blchw", on_limb, unit)           # (B, L, 2, H, W)
    pafs = summed / count.clamp(min=1.0)[:, :, None]
    return pafs.flatten(1, 2)                                           # channels 2k = x, 2k+1 = y


def loss_mask_from_ignore(ignore, stride=8):
    """(B, 1, H, W) ignore map in input pixels (1 = leave out of the loss) -> (B, 1, H/stride,
    W/stride) loss mask: 1 - area average of the ignore map, as INTER_AREA resizing does."""
    return 1.0 - F.avg_pool2d(ignore.float(), stride)
