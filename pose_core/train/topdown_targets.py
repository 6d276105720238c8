"""Training targets and loss of the top-down network (spec ARCHITECTURES.md 0.4 and 4.3).

Targets (HRNet JointsDataset.generate_target, mmpose unbiased_encoding=False): for each
keypoint an unnormalised Gaussian (peak 1, sigma in heatmap pixels) centred on the heatmap
pixel mu = floor(joint / stride + 0.5), cut to the (6 sigma + 1)^2 window |d| <= 3 sigma
around it; the stride is input / heatmap size per axis. The target weight is 1 for a
labelled keypoint (v > 0) whose window overlaps the map, else 0 (its map is then zero).

Loss (Li & Xiang's heatmap-weighting loss, `HeatmapWeightingMSELoss` with
use_target_weight): the squared error of the weighted maps, each pixel weighted by
F(gt) + 1 with F(x) = x, averaged over batch, keypoints and pixels; no 0.5 factor.
"""
import numpy as np
import torch

SIGMA = 2.0   # at 64 x 48 (and at 96 x 72 in the authors' 384 x 288 config)


def render_topdown_targets(keypoints, heatmap_size=(64, 48), input_size=(256, 192), sigma=SIGMA):
    """keypoints (B, K, 3) or (K, 3): (x, y, v) in crop input pixels, numpy or torch.

    Returns (targets (B, K, h, w), target_weights (B, K)) float32 torch tensors on the
    keypoints' device (without the batch dimension when the keypoints had none).
    heatmap_size and input_size are (height, width).
    """
    kp = keypoints if torch.is_tensor(keypoints) else torch.from_numpy(np.asarray(keypoints, np.float32))
    kp = kp.float()
    single = kp.dim() == 2
    kp = kp.reshape(-1, *kp.shape[-2:])
    map_h, map_w = heatmap_size
    mu_x = torch.floor(kp[..., 0] * map_w / input_size[1] + 0.5)
    mu_y = torch.floor(kp[..., 1] * map_h / input_size[0] + 0.5)
    radius = 3 * sigma
    dx = torch.arange(map_w, device=kp.device) - mu_x[..., None]      # (B, K, w)
    dy = torch.arange(map_h, device=kp.device) - mu_y[..., None]      # (B, K, h)
    gauss_x = torch.exp(-dx ** 2 / (2 * sigma ** 2)) * (dx.abs() <= radius)
    gauss_y = torch.exp(-dy ** 2 / (2 * sigma ** 2)) * (dy.abs() <= radius)
    overlaps = ((mu_x + radius >= 0) & (mu_x - radius <= map_w - 1)
                & (mu_y + radius >= 0) & (mu_y - radius <= map_h - 1))
    weights = ((kp[..., 2] > 0) & overlaps).float()
    targets = gauss_y[..., :, None] * gauss_x[..., None, :] * weights[..., None, None]
    return (targets[0], weights[0]) if single else (targets, weights)


def heatmap_weighting_loss(pred, target, target_weight=None):
    """mean over (B, K, h, w) of ((pred - target) * w_k)^2 * (target + 1).

    pred, target: (B, K, h, w); target_weight: (B, K), or None for no per-keypoint weight.
    """
    error = pred - target
    if target_weight is not None:
        error = error * target_weight[..., None, None]
    return (error ** 2 * (target + 1)).mean()
