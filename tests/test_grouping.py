"""Peaks and PAF grouping on synthetic maps rendered by the training-target code."""
import numpy as np
import pytest

from pose_core.paf_grouping import (FULL_SCORE_SIZE, MIN_PERSON_KEYPOINTS, SNAP_DISTANCE_CELLS, SNAP_RADIUS_CELLS,
                                   _match_greedy,
                                   average_in_fine_heatmaps,
                                   decode_people,
                                   fill_missing_keypoints, find_peaks, group_people, heat_weighted_scores,
                                   size_weighted_scores,
                                   snap_to_heatmap_peaks, upsample_maps)
from pose_core.skeleton import COCO_FROM_OPENPOSE, GROUPING_LIMB_INDEX, OPENPOSE_GROUPING_ORDER
from pose_core.train.targets import render_bottomup_targets

# A standing person in OpenPose-18 order, (x, y) as fractions of the height from the
# top centre; the person's right side is on the image's left.
STANDING = np.array([
    [0, .05], [0, .15], [-.1, .15], [-.13, .3], [-.15, .45], [.1, .15], [.13, .3], [.15, .45],
    [-.07, .5], [-.08, .72], [-.08, .95], [.07, .5], [.08, .72], [.08, .95],
    [-.03, .03], [.03, .03], [-.06, .04], [.06, .04]], dtype=np.float32)


def person(cx, top, height, missing=()):
    """(18, 3) OpenPose-18 keypoints (x, y, v) of a standing person; `missing` ids get v = 0."""
    kp = np.ones((18, 3), dtype=np.float32)
    kp[:, :2] = STANDING * height + (cx, top)
    # A Gaussian centred on a half-cell multiple (x = 1.5 mod 2 at strides 4 and 8)
    # renders two equal pixels on every grid we use, and a strict peak cannot exist
    # there; move such coordinates off it.
    kp[:, :2] += 0.1 * (np.abs((kp[:, :2] - 1.5) % 2) < 0.01)
    kp[list(missing), :] = 0
    return kp


def render_maps(people, input_h, input_w, stride=8):
    """Network-like (heatmaps (19, h, w), pafs (38, h, w)) numpy maps of `people` (N, 18, 3)."""
    heatmaps, pafs = render_bottomup_targets(np.asarray(people, np.float32).reshape(-1, 18, 3),
                                             input_h // stride, input_w // stride, stride)
    return heatmaps.numpy(), pafs.numpy()


def ten_people():
    return np.stack([person(30 + i * 44, 20 + 10 * (i % 2), 200) for i in range(10)])


def match_to_truth(found, truth):
    """Order found people like `truth` by their nearest neck."""
    order = [int(np.argmin(np.linalg.norm(found[:, 1, :2] - t[1, :2], axis=1))) for t in truth]
    return found[order]


def assert_close_to_truth(found, truth, tolerance):
    labelled = truth[..., 2] > 0
    assert np.all((found[..., 2] > 0) == labelled)
    assert np.abs(found[..., :2] - truth[..., :2])[labelled].max() <= tolerance
    assert np.all(found[~labelled] == 0)


# ------------------------------------------------------------------------ peaks
def test_find_peaks_threshold_strictness_and_borders():
    maps = np.zeros((19, 12, 12), np.float32)
    maps[0, 5, 5] = 0.1             # exactly at the threshold: a peak
    maps[1, 5, 5] = 0.099           # below: none
    maps[2, 5, 5:7] = 0.5           # a plateau is not strictly greater: none
    maps[3, 0, 11] = 0.7            # corner: outside the map counts as 0
    maps[18] = 1.0                  # background channel is ignored
    peaks = find_peaks(maps)
    assert peaks.tolist() == [[5, 5, pytest.approx(0.1), 0], [11, 0, pytest.approx(0.7), 3]]


def test_find_peaks_keeps_the_stronger_of_two_close_peaks():
    maps = np.zeros((18, 20, 20), np.float32)
    maps[4, 10, 3] = 0.5            # weaker, left of the stronger one
    maps[4, 10, 7] = 0.9            # 4 px away: suppressed with min_distance 6
    maps[4, 10, 15] = 0.3           # 8 px away: kept
    peaks = find_peaks(maps, min_distance=6)
    assert peaks[:, 0].tolist() == [7, 15]
    assert len(find_peaks(maps, min_distance=3)) == 3


def test_a_suppressed_peak_suppresses_nothing():
    maps = np.zeros((18, 20, 40), np.float32)
    for keypoint_type in (2, 9):    # the same chain in two types, handled apart
        maps[keypoint_type, 10, [5, 10, 15]] = (0.9, 0.8, 0.7)   # each 5 px from the next
        maps[keypoint_type, 10, 25] = 0.2                        # far: kept
    peaks = find_peaks(maps, min_distance=6)
    # 0.9 drops 0.8; 0.8, dropped, does not drop 0.7 (10 px from 0.9)
    assert peaks[:, [0, 3]].tolist() == [[5, 2], [15, 2], [25, 2], [5, 9], [15, 9], [25, 9]]


def test_refined_peaks_are_sub_cell_accurate():
    truth = person(100.3, 30.6, 180)
    heatmaps, _ = render_maps(truth[None], 256, 256)
    peaks = find_peaks(heatmaps, min_distance=1.5, refine=True)
    assert len(peaks) == 18
    # Grid cell g is centred on input pixel g * 8 + 3.5.
    xy = peaks[np.argsort(peaks[:, 3]), :2] * 8 + 3.5
    assert np.abs(xy - truth[:, :2]).max() < 0.05


# -------------------------------------------------------------------- matching
def greedy_reference(affinity):
    """Lightweight OpenPose's connections_nms: visit pairs by descending affinity."""
    used_rows, used_cols, pairs = set(), set(), []
    for flat in np.argsort(-affinity, axis=None, kind="stable"):
        r, c = np.unravel_index(flat, affinity.shape)
        if np.isfinite(affinity[r, c]) and r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((int(r), int(c)))
    return sorted(pairs)


@pytest.mark.parametrize("seed", range(20))
def test_match_greedy_equals_sequential_greedy(seed):
    rng = np.random.default_rng(seed)
    affinity = rng.random((rng.integers(1, 9), rng.integers(1, 9)))
    affinity[rng.random(affinity.shape) < 0.4] = -np.inf
    if not np.isfinite(affinity).any():
        affinity[0, 0] = 0.5
    rows, cols = np.nonzero(np.isfinite(affinity))
    shuffle = rng.permutation(len(rows))                 # the pairs in no particular order
    rows, cols = rows[shuffle], cols[shuffle]
    taken = _match_greedy(rows * 10 + 3, cols + 100, affinity[rows, cols])  # any integer keys
    assert sorted(zip(rows[taken].tolist(), cols[taken].tolist())) == greedy_reference(affinity)
    assert np.all(np.diff(affinity[rows[taken], cols[taken]]) <= 0)  # in the order greedy takes them
    assert len(_match_greedy(rows[:0], cols[:0], affinity[rows[:0], cols[:0]])) == 0


# -------------------------------------------------------------------- grouping
# Peaks on x4-upsampled maps sit on a 2 px grid, and cubic upsampling of a narrow
# Gaussian adds up to ~0.4 px; refined peaks of an exact Gaussian are exact.
@pytest.mark.parametrize("upsample, tolerance", [(4, 1.5), (1, 0.05)])
def test_one_person(upsample, tolerance):
    truth = person(200, 30, 190)
    maps = render_maps(truth[None], 256, 400)
    keypoints, scores = decode_people(*maps, upsample=upsample, size_score=False)
    assert keypoints.shape == (1, 18, 3) and scores.shape == (1,)
    assert_close_to_truth(keypoints, truth[None], tolerance)
    assert 0.9 < scores[0] <= 1.0
    # The size weight: the keypoint box is 0.3 x 0.92 of 190 px, under half the 256 px height.
    size = np.sqrt(np.prod(np.ptp(truth[:, :2], axis=0) / 8 * upsample + 1))
    weighted = decode_people(*maps, upsample=upsample)[1]
    assert weighted[0] == pytest.approx(scores[0] * np.sqrt(size / (FULL_SCORE_SIZE * 256 / 8 * upsample)), rel=0.02)


@pytest.mark.parametrize("upsample, tolerance", [(4, 1.5), (1, 0.05)])
def test_ten_people(upsample, tolerance):
    truth = ten_people()[1:-1]      # the outer two touch the image border
    keypoints, scores = decode_people(*render_maps(truth, 256, 456), upsample=upsample)
    assert len(keypoints) == len(truth)
    assert_close_to_truth(match_to_truth(keypoints, truth), truth, tolerance)
    assert np.all(np.diff(scores) <= 0)


def test_crossing_forearms_are_grouped_to_their_owners():
    # Left forearms of two people cross at (230, 100): A's runs right, B's runs down.
    a, b = person(150, 30, 200), person(310, 30, 200)
    a[5, :2], a[6, :2], a[7, :2] = (170, 60), (200, 100), (260, 100)
    b[5, :2], b[6, :2], b[7, :2] = (290, 60), (230, 70), (230, 130)
    truth = np.stack([a, b])
    keypoints, _ = decode_people(*render_maps(truth, 256, 456))
    assert len(keypoints) == 2
    assert_close_to_truth(match_to_truth(keypoints, truth), truth, 1.5)


def test_pafs_are_sampled_as_if_upsampled():
    rng = np.random.default_rng(1)
    truth = np.stack([person(rng.uniform(40, 400), rng.uniform(0, 50), rng.uniform(100, 200)) for _ in range(6)])
    heatmaps, pafs = render_maps(truth, 256, 456)
    pafs = pafs + rng.normal(0, 0.2, pafs.shape).astype(np.float32)
    peaks = find_peaks(upsample_maps(heatmaps, 4))
    keypoints, scores = group_people(peaks, pafs, upsample=4)
    expected_keypoints, expected_scores = group_people(peaks, upsample_maps(pafs, 4))
    assert len(keypoints) >= 5
    assert np.array_equal(keypoints, expected_keypoints) and np.allclose(scores, expected_scores)


def test_zero_people():
    heatmaps, pafs = render_maps(np.zeros((0, 18, 3)), 256, 456)
    assert find_peaks(heatmaps).shape == (0, 4)
    keypoints, scores = decode_people(heatmaps, pafs)
    assert keypoints.shape == (0, 18, 3) and scores.shape == (0,)


def test_missing_parts_and_too_small_people():
    legless = person(120, 30, 190, missing=(9, 10, 12, 13, 6, 7))       # knees, ankles, left arm
    head_only = person(320, 30, 190, missing=range(2, 18))              # nose + neck: 2 keypoints
    keypoints, scores = decode_people(*render_maps(np.stack([legless, head_only]), 256, 456))
    assert len(keypoints) == 1
    assert_close_to_truth(keypoints, legless[None], 1.5)
    full = decode_people(*render_maps(person(120, 30, 190)[None], 256, 456))[1]
    assert scores[0] < full[0]      # fewer keypoints, lower score


def test_coordinates_are_network_input_pixels_for_any_stride_and_upsample():
    truth = person(97.3, 41.8, 150)
    for stride, upsample in ((8, 4), (8, 2), (4, 4)):
        heatmaps, pafs = render_maps(truth[None], 256, 256, stride=stride)
        keypoints, _ = decode_people(heatmaps, pafs, stride=stride, upsample=upsample)
        assert np.abs(keypoints[0, :, :2] - truth[:, :2]).max() <= 0.75 * stride / upsample


def test_valid_size_leaves_out_peaks_in_the_padding():
    truth = person(100, 30, 190)
    truth[4, :2] = (70, 252)        # right wrist at the bottom edge
    heatmaps, pafs = render_maps(truth[None], 256, 256)
    full, _ = decode_people(heatmaps, pafs, fill_missing=False)
    inside, _ = decode_people(heatmaps, pafs, valid_size=(240, 256), fill_missing=False)
    assert full[0, 4, 2] > 0 and inside[0, 4, 2] == 0
    # Filling the empty slot searches the valid rows only: the wrist blob's tail above them.
    filled, _ = decode_people(heatmaps, pafs, valid_size=(240, 256))
    assert 0 < filled[0, 4, 2] < full[0, 4, 2] and filled[0, 4, 1] < 240


# ------------------------------------------- equivalence with the original code
def group_keypoints_reference(peaks, pafs):
    """Lightweight OpenPose's group_keypoints (modules/keypoints.py), loop for loop.
    peaks: (P, 4) rows (x, y, score, type) sorted by type. Returns (entries, peaks)."""
    by_type = [peaks[peaks[:, 3] == t] for t in range(18)]
    ids = [np.flatnonzero(peaks[:, 3] == t) for t in range(18)]
    entries = []
    grid = np.arange(10, dtype=np.float32).reshape(1, -1, 1)
    for part_id, (ka, kb) in enumerate(OPENPOSE_GROUPING_ORDER):
        ch = 2 * GROUPING_LIMB_INDEX[part_id]
        part_pafs = pafs[ch:ch + 2].transpose(1, 2, 0)
        kpts_a, kpts_b = by_type[ka], by_type[kb]
        n, m = len(kpts_a), len(kpts_b)
        if n == 0 or m == 0:
            continue
        a = np.broadcast_to(kpts_a[None, :, :2], (m, n, 2))
        vec_raw = (kpts_b[:, None, :2] - a).reshape(-1, 1, 2)
        points = (vec_raw / 9 * grid + a.reshape(-1, 1, 2)).round().astype(np.int32)
        field = part_pafs[points[..., 1].ravel(), points[..., 0].ravel()].reshape(-1, 10, 2)
        vec = vec_raw / (np.linalg.norm(vec_raw, axis=-1, keepdims=True) + 1e-6)
        scores = (field * vec).sum(-1).reshape(-1, 10)
        valid = scores > 0.05
        affinity = (scores * valid).sum(1) / (valid.sum(1) + 1e-6)
        good = np.where((affinity > 0) & (valid.sum(1) / 10 > 0.8))[0]
        if len(good) == 0:
            continue
        b_idx, a_idx = np.divmod(good, n)
        conns, used_a, used_b = [], set(), set()
        for t in np.argsort(affinity[good])[::-1]:
            if a_idx[t] not in used_a and b_idx[t] not in used_b:
                used_a.add(a_idx[t])
                used_b.add(b_idx[t])
                conns.append((ids[ka][a_idx[t]], ids[kb][b_idx[t]], affinity[good][t]))
        if part_id in (17, 18):
            for ca, cb, _ in conns:
                for e in entries:
                    if e[ka] == ca and e[kb] == -1:
                        e[kb] = cb
                    elif e[kb] == cb and e[ka] == -1:
                        e[ka] = ca
            continue
        for ca, cb, score in conns:
            num = 0
            for e in entries:
                if e[ka] == ca:
                    e[kb] = cb
                    num += 1
                    e[-1] += 1
                    e[-2] += peaks[cb, 2] + score
            if num == 0:
                e = np.full(20, -1.0)
                e[ka], e[kb], e[-1], e[-2] = ca, cb, 2, peaks[ca, 2] + peaks[cb, 2] + score
                entries.append(e)
    # The original keeps people of 3 keypoints; ours needs MIN_PERSON_KEYPOINTS (a deliberate difference).
    return [e for e in entries if e[-1] >= MIN_PERSON_KEYPOINTS and e[-2] / e[-1] >= 0.2]


@pytest.mark.parametrize("seed", range(6))
def test_grouping_equals_the_original_on_noisy_crowds(seed):
    rng = np.random.default_rng(seed)
    truth = np.stack([person(rng.uniform(20, 436), rng.uniform(0, 60), rng.uniform(80, 220),
                             missing=rng.choice(18, rng.integers(0, 6), replace=False))
                      for _ in range(8 + 4 * seed)])  # up to 28 overlapping people
    heatmaps, pafs = render_maps(truth, 256, 456)
    heatmaps = heatmaps + rng.normal(0, 0.04, heatmaps.shape).astype(np.float32)
    pafs = pafs + rng.normal(0, 0.15, pafs.shape).astype(np.float32)
    peaks = find_peaks(heatmaps, min_distance=1.5)
    keypoints, scores = group_people(peaks, pafs)

    expected = group_keypoints_reference(peaks, pafs)
    assert len(expected) > 0
    expected_keypoints = np.zeros((len(expected), 18, 3), np.float32)
    for i, e in enumerate(expected):
        slots = e[:18] >= 0
        expected_keypoints[i, slots] = peaks[e[:18][slots].astype(int), :3]
    key = lambda kps: sorted(map(tuple, np.round(kps.reshape(len(kps), -1), 4)))  # noqa: E731
    assert key(keypoints) == key(expected_keypoints)
    assert np.all((scores > 0) & (scores <= 1))


# ------------------------------------------------------------ after grouping
def grid(xy, stride=8):
    """Input pixels -> grid pixels (an integer coordinate is a pixel centre in both)."""
    return (np.asarray(xy) + 0.5) / stride - 0.5


def test_fill_missing_keypoints_takes_the_persons_own_weak_blob_not_a_neighbours_keypoint():
    a, b = person(120, 30, 190), person(200, 30, 190)
    heatmaps, pafs = render_maps(np.stack([a, b]), 256, 456)
    grouped, _ = group_people(find_peaks(heatmaps, refine=True), pafs)
    grouped = grouped[np.argsort(grouped[:, 1, 0])]      # a (left) first
    assert len(grouped) == 2 and (grouped[..., 2] > 0).all()
    # a loses its right wrist (type 4) and right elbow (type 3) from the grouping. Its right
    # wrist's blob stays, weak (below the peak threshold); of the right elbows only b's
    # remains, inside a's search window.
    grouped[0, [3, 4]] = 0
    heatmaps[4] = 0.05 * render_maps(a[None], 256, 456)[0][4] + render_maps(b[None], 256, 456)[0][4]
    heatmaps[3] = render_maps(b[None], 256, 456)[0][3]
    a_right = grid(a[4, :2])
    filled = fill_missing_keypoints(grouped.copy(), heatmaps)
    assert np.abs(filled[0, 4, :2] - a_right).max() < 0.1
    assert 0.04 < filled[0, 4, 2] <= 0.05
    b_elbow = grid(b[3, :2])
    assert filled[0, 3, 2] < 0.05                        # not b's elbow, nor its blob
    assert filled[0, 3, 2] == 0 or np.abs(filled[0, 3, :2] - b_elbow).max() > 2
    assert np.array_equal(filled[1], grouped[1])         # a complete person is untouched
    # Without b in the grouping, its elbow would have been a's.
    alone = fill_missing_keypoints(grouped[:1].copy(), heatmaps)
    assert np.abs(alone[0, 3, :2] - b_elbow).max() < 0.1 and alone[0, 3, 2] > 0.5


def test_fill_missing_keypoints_with_nothing_to_fill():
    assert fill_missing_keypoints(np.zeros((0, 18, 3), np.float32), np.zeros((19, 32, 32))).shape == (0, 18, 3)
    lone = np.zeros((1, 18, 3), np.float32)
    lone[0, :3] = [[10, 10, 0.9], [10, 12, 0.9], [9, 12, 0.9]]
    assert np.array_equal(fill_missing_keypoints(lone.copy(), np.zeros((19, 32, 32))), lone)  # all-zero maps


def test_size_weighted_scores():
    keypoints = np.zeros((3, 18, 3), np.float32)
    keypoints[0, :2] = [[0, 0, 1], [19, 39, 1]]       # box 20 x 40 cells: size sqrt(800) > 0.5 x 40 rows
    keypoints[1, :2] = [[5, 5, 1], [6, 8, 1]]         # 2 x 4 cells: size sqrt(8)
    keypoints[2, 3] = [7, 7, 1]                      # one keypoint: 1 x 1
    keypoints[1, 5] = [100, 100, 0]                  # a missing keypoint does not count
    scores = np.array([0.5, 0.5, 0.4], np.float32)
    weighted = size_weighted_scores(keypoints, scores, map_rows=40)
    assert weighted == pytest.approx([0.5, 0.5 * np.sqrt(np.sqrt(8) / 20), 0.4 * np.sqrt(1 / 20)])


def test_heat_weighted_scores_rank_by_the_strongest_keypoint_heats():
    stride, rows, cols = 4, 20, 30
    heatmaps = np.zeros((17, rows, cols), np.float32)
    keypoints = np.zeros((3, 17, 3), np.float32)
    cell = lambda x, y: ((x + 0.5) * stride - 0.5, (y + 0.5) * stride - 0.5)  # noqa: E731 (pixels)
    for k in range(8):                                  # person 0: 8 keypoints on heat 0.9 and 0.3
        heatmaps[k, 2, 2 + k] = 0.9 if k < 5 else 0.3
        keypoints[0, k] = [*cell(2 + k, 2), 0.8]
    heatmaps[:, 10, 10] = 0.5                           # person 1: all 17 on heat 0.5, one off the map
    keypoints[1] = [*cell(10, 10), 0.8]
    keypoints[1, 16] = [*cell(10.4, 10.3), 0.8]         # rounds to the same cell
    keypoints[1, 15] = [1000, 1000, 0.8]                # clipped to the map's corner: heat 0
    keypoints[2, 0] = [*cell(2, 2), 0]                  # person 2: its only keypoint is missing
    scores = np.array([0.5, 0.4, 0.3], np.float32)
    weighted = heat_weighted_scores(keypoints, scores, heatmaps, stride, top=6, power=2)
    # person 0: its top 6 are five 0.9s and a 0.3
    assert weighted == pytest.approx([0.5 * ((5 * 0.9 + 0.3) / 6) ** 2, 0.4 * 0.5 ** 2, 0.0])
    assert heat_weighted_scores(np.zeros((0, 17, 3), np.float32), np.zeros(0, np.float32), heatmaps,
                                stride).shape == (0,)


def test_snap_to_heatmap_peaks_moves_to_a_finer_peak_within_reach_only():
    stride, rows, cols = 4, 30, 40
    yy, xx = np.mgrid[:rows, :cols]
    blob = lambda x, y, peak: peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2)  # noqa: E731 (cells)
    to_pixels = lambda cells: (np.asarray(cells) + 0.5) * stride - 0.5  # noqa: E731
    heatmaps = np.zeros((17, rows, cols), np.float32)
    heatmaps[0] = blob(10.3, 12.6, 0.9)                           # reached: 2 cells off
    heatmaps[1] = blob(20.0, 5.0, 0.9)                            # missing keypoint: untouched
    heatmaps[2] = blob(30.2, 20.2, 0.05)                          # too weak
    heatmaps[3] = blob(5.0, 5.0 + SNAP_RADIUS_CELLS + 3, 0.9)     # out of reach
    keypoints = np.zeros((2, 17, 3), np.float32)
    keypoints[0, 0] = [*to_pixels([12.3, 11.6]), 0.6]
    keypoints[0, 2] = [*to_pixels([30.0, 21.0]), 0.5]
    keypoints[0, 3] = [*to_pixels([5.0, 5.0]), 0.4]
    keypoints[1, 0] = [*to_pixels([39.0, 0.0]), 0.3]              # at the corner: the window is clipped
    before = keypoints.copy()

    snap_to_heatmap_peaks(keypoints, heatmaps, stride)

    assert np.allclose(keypoints[0, 0], [*to_pixels([10.3, 12.6]), 0.6], atol=0.05)
    assert np.array_equal(keypoints[0, 1:], before[0, 1:])
    assert np.array_equal(keypoints[1], before[1])  # heatmap 0 is under 0.1 within its reach
    assert np.array_equal(snap_to_heatmap_peaks(np.zeros((0, 17, 3), np.float32), heatmaps, stride),
                          np.zeros((0, 17, 3)))


def test_snap_weighs_the_peaks_within_reach_by_their_distance():
    """Of two peaks within reach, a nearer weaker one wins while value / (distance +
    SNAP_DISTANCE_CELLS) says so; the slope of a peak is no peak."""
    stride, rows, cols = 4, 30, 40
    yy, xx = np.mgrid[:rows, :cols]
    blob = lambda x, y, peak: peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2)  # noqa: E731 (cells)
    to_pixels = lambda cells: (np.asarray(cells) + 0.5) * stride - 0.5  # noqa: E731
    heatmaps = np.zeros((17, rows, cols), np.float32)
    heatmaps[0] = np.maximum(blob(11, 10, 0.6), blob(15, 10, 0.9))  # 1 and 5 cells from the keypoint
    heatmaps[1] = np.maximum(blob(11, 10, 0.3), blob(15, 10, 0.9))  # 0.3 / 5 < 0.9 / 9
    heatmaps[2] = blob(10 + SNAP_RADIUS_CELLS + 2, 10, 0.9)          # only its slope within reach
    keypoints = np.zeros((1, 17, 3), np.float32)
    keypoints[0, :3] = [*to_pixels([10.0, 10.0]), 0.5]
    assert 0.6 / (1 + SNAP_DISTANCE_CELLS) > 0.9 / (5 + SNAP_DISTANCE_CELLS)
    assert 0.3 / (1 + SNAP_DISTANCE_CELLS) < 0.9 / (5 + SNAP_DISTANCE_CELLS)

    snap_to_heatmap_peaks(keypoints, heatmaps, stride)

    assert np.allclose(keypoints[0, 0, :2], to_pixels([11, 10]), atol=0.2)
    assert np.allclose(keypoints[0, 1, :2], to_pixels([15, 10]), atol=0.2)
    assert np.allclose(keypoints[0, 2, :2], to_pixels([10, 10]))


def test_fine_heatmaps_are_averaged_into_the_keypoint_channels_at_the_cell_centres():
    rng = np.random.default_rng(0)
    heatmaps = rng.random((19, 4, 6), dtype=np.float32)
    fine = rng.random((17, 8, 12), dtype=np.float32)
    averaged = average_in_fine_heatmaps(heatmaps, fine)
    left_ear = 3  # COCO; OpenPose channel 17
    assert COCO_FROM_OPENPOSE[left_ear] == 17
    assert np.isclose(averaged[17, 1, 2], (heatmaps[17, 1, 2] + fine[left_ear, 2:4, 4:6].mean()) / 2)
    # the neck (OpenPose 1) and the background (18) have no COCO heatmap; the input is not changed
    assert np.array_equal(averaged[[1, 18]], heatmaps[[1, 18]])
    assert not np.shares_memory(averaged, heatmaps) and not np.array_equal(averaged, heatmaps)
