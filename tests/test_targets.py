import numpy as np
import pytest
import torch

from pose_core.skeleton import NECK, OPENPOSE_LIMBS
from pose_core.train.targets import loss_mask_from_ignore, render_bottomup_targets, render_bottomup_targets_batch

STRIDE = 8
R_HIP, L_WRI = 8, 7
NECK_HIP = OPENPOSE_LIMBS.index((1, 8))


def cell_centre(map_x, map_y):
    return map_x * STRIDE + STRIDE / 2 - 0.5, map_y * STRIDE + STRIDE / 2 - 0.5


def person(**points):
    """(18, 3) keypoints with the given {index: (x, y)} labelled (v = 2)."""
    kp = np.zeros((18, 3), np.float32)
    for index, (x, y) in points.items():
        kp[int(index)] = (x, y, 2)
    return kp


def test_heatmap_peak_is_one_at_the_keypoint_cell_and_background_complements():
    kp = person(**{str(L_WRI): cell_centre(5, 7)})[None]
    heatmaps, pafs = render_bottomup_targets(kp, 16, 20)
    assert heatmaps.shape == (19, 16, 20) and pafs.shape == (38, 16, 20)
    assert heatmaps.dtype == torch.float32
    assert heatmaps[L_WRI, 7, 5] == pytest.approx(1.0)
    assert int(heatmaps[L_WRI].argmax()) == 7 * 20 + 5
    # one cell away the Gaussian is exp(-8^2 / (2 * 7^2))
    assert heatmaps[L_WRI, 7, 6] == pytest.approx(np.exp(-64 / 98), rel=1e-5)
    assert heatmaps[L_WRI, 0, 19] == 0  # far: below 0.01 is cut to 0
    assert heatmaps[18, 7, 5] == pytest.approx(0.0)
    assert heatmaps[18, 0, 19] == 1.0
    assert torch.allclose(heatmaps[18], 1 - heatmaps[:18].max(0).values)
    assert heatmaps[:L_WRI].abs().sum() == 0 and pafs.abs().sum() == 0  # one keypoint, no limb


def test_people_add_up_and_clip_at_one():
    two = np.stack([person(**{"0": cell_centre(5, 5)}), person(**{"0": cell_centre(6, 5)})])
    heatmaps, _ = render_bottomup_targets(two, 12, 12)
    one, _ = render_bottomup_targets(two[:1], 12, 12)
    assert heatmaps[0].max() == 1.0
    assert heatmaps[0, 5, 8] > one[0, 5, 8]  # the second person adds to the first's tail


def test_paf_is_the_unit_vector_on_the_limb_and_zero_elsewhere():
    # neck -> right hip, 3 cells right and 4 cells down: unit vector (0.6, 0.8)
    kp = person(**{str(NECK): cell_centre(4, 2), str(R_HIP): cell_centre(7, 6)})[None]
    _, pafs = render_bottomup_targets(kp, 16, 16)
    x, y = pafs[2 * NECK_HIP], pafs[2 * NECK_HIP + 1]
    for mx, my in ((4, 2), (7, 6), (5, 3)):  # ends and a cell within 1 cell of the segment
        assert (x[my, mx].item(), y[my, mx].item()) == pytest.approx((0.6, 0.8), abs=1e-6)
    assert x[12, 12] == 0 and y[2, 7] == 0  # far from the segment / beside it
    others = torch.cat([pafs[:2 * NECK_HIP], pafs[2 * NECK_HIP + 2:]])
    assert others.abs().sum() == 0


def test_zero_length_and_half_labelled_limbs_are_skipped():
    same = person(**{str(NECK): cell_centre(4, 4), str(R_HIP): cell_centre(4, 4)})
    half = person(**{str(NECK): cell_centre(4, 4)})
    half[R_HIP] = (*cell_centre(9, 9), 0)
    _, pafs = render_bottomup_targets(np.stack([same, half]), 16, 16)
    assert pafs.abs().sum() == 0


def test_overlapping_people_average_their_vectors():
    right = person(**{str(NECK): cell_centre(2, 5), str(R_HIP): cell_centre(8, 5)})
    down = person(**{str(NECK): cell_centre(5, 2), str(R_HIP): cell_centre(5, 8)})
    _, pafs = render_bottomup_targets(np.stack([right, down]), 12, 12)
    assert (pafs[2 * NECK_HIP, 5, 5].item(), pafs[2 * NECK_HIP + 1, 5, 5].item()) == pytest.approx((0.5, 0.5))


def test_batch_ignores_padding_people_and_matches_single_images():
    a = person(**{"0": cell_centre(3, 3), str(NECK): cell_centre(3, 5), str(R_HIP): cell_centre(3, 9)})
    b = person(**{"5": cell_centre(8, 2)})
    garbage = person(**{str(i): cell_centre(6, 6) for i in range(18)})
    keypoints = torch.from_numpy(np.stack([np.stack([a, garbage]), np.stack([b, a])]))
    valid = torch.tensor([[True, False], [True, True]])
    heatmaps, pafs = render_bottomup_targets_batch(keypoints, valid, 12, 12)
    for i, people in enumerate(([a], [b, a])):
        single_h, single_p = render_bottomup_targets(np.stack(people), 12, 12)
        assert torch.allclose(heatmaps[i], single_h) and torch.allclose(pafs[i], single_p)


def test_numpy_and_torch_inputs_agree_and_no_people_is_all_background():
    kp = person(**{"0": (30.0, 17.0), "14": (37.0, 12.0)})[None]
    from_numpy = render_bottomup_targets(kp, 8, 8)
    from_torch = render_bottomup_targets(torch.from_numpy(kp), 8, 8)
    assert all(torch.equal(p, q) for p, q in zip(from_numpy, from_torch))
    heatmaps, pafs = render_bottomup_targets(np.zeros((0, 18, 3)), 8, 8)
    assert heatmaps[:18].sum() == 0 and torch.all(heatmaps[18] == 1) and pafs.sum() == 0


def test_loss_mask_is_the_area_average_of_the_ignore_map():
    ignore = torch.zeros(1, 1, 32, 32)
    ignore[..., 8:16, 0:8] = 1      # one whole cell
    ignore[..., 0:4, 16:24] = 1     # half a cell
    mask = loss_mask_from_ignore(ignore)
    assert mask.shape == (1, 1, 4, 4)
    assert mask[0, 0, 1, 0] == 0 and mask[0, 0, 0, 2] == 0.5
    assert mask.sum() == 16 - 1.5


def test_flip_test_maps_of_the_mirrored_person_average_back_to_the_original():
    from pose_core.bottomup import average_with_mirrored
    from pose_core.skeleton import OPENPOSE_FLIP_INDEX

    width, height = 96, 64
    rng = np.random.default_rng(3)
    kp = np.zeros((1, 18, 3), np.float32)
    kp[0, :, 0] = rng.uniform(5, width - 5, 18)
    kp[0, :, 1] = rng.uniform(5, height - 5, 18)
    kp[0, :, 2] = 2
    # What a perfect network sees in the mirrored image: x mirrored, left and right swapped.
    mirrored = kp[:, OPENPOSE_FLIP_INDEX].copy()
    mirrored[..., 0] = width - 1 - mirrored[..., 0]
    heatmaps, pafs = (t.numpy() for t in render_bottomup_targets(kp, height // STRIDE, width // STRIDE))
    m_heatmaps, m_pafs = (t.numpy() for t in render_bottomup_targets(mirrored, height // STRIDE, width // STRIDE))
    assert not np.allclose(m_pafs, pafs)
    avg_heatmaps, avg_pafs = average_with_mirrored(heatmaps, pafs, m_heatmaps, m_pafs)
    np.testing.assert_allclose(avg_heatmaps, heatmaps, atol=1e-5)
    np.testing.assert_allclose(avg_pafs, pafs, atol=1e-5)
