"""Bottom-up decoding: heatmap peaks, then people grouped by part affinity fields.

Lightweight OpenPose semantics (spec ARCHITECTURES.md 1.10, modules/keypoints.py),
vectorised: every candidate pair of a limb is scored at once, and the greedy
one-to-one matching and the merge run as array operations per limb.

Two deliberate differences from the original, both documented where they happen:
- peak suppression keeps the stronger of two close peaks (the original keeps the
  leftmost one, an artefact of sorting by x);
- the person score is bounded (see `group_people`); the grouping itself, including
  the filters on the unbounded score sum, is unchanged.

Grids: peaks are found on the maps they are given, either upsampled (the default,
x4 as in the Lightweight OpenPose demo) or at the network's stride with sub-cell
refinement. PAFs are sampled on the same grid as the peaks, by bicubic
interpolation at just the sample points rather than by upsampling all 38 maps
(the same values; the full maps cost time and ~4 MB of fresh memory per frame).
Grid cell g covers input pixels [g, g + 1) * stride / upsample, and an integer
input coordinate is a pixel centre (the convention of pose_core.train.targets).
"""
import cv2
import numpy as np

from .skeleton import GROUPING_LIMB_INDEX, NUM_OPENPOSE_KEYPOINTS, OPENPOSE_GROUPING_ORDER

PEAK_THRESHOLD = 0.1
# Lightweight OpenPose suppresses peaks closer than 6 px on x4-upsampled stride-8
# maps, that is 1.5 network cells; the radius is scaled to whatever grid is used.
PEAK_MIN_DISTANCE_CELLS = 1.5
SAMPLES_PER_LIMB = 10
MIN_PAF_SCORE = 0.05
MIN_VALID_FRACTION = 0.8
MIN_PERSON_KEYPOINTS = 3
MIN_PERSON_MEAN_SCORE = 0.2
# The last two grouping limbs (ear-shoulder) only fill slots that are still empty.
FILL_ONLY_LIMBS = frozenset(range(len(OPENPOSE_GROUPING_ORDER) - 2, len(OPENPOSE_GROUPING_ORDER)))

_CROSS = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=np.uint8)  # the 4 neighbours
_LIMB_A = np.array([a for a, _ in OPENPOSE_GROUPING_ORDER])
_LIMB_B = np.array([b for _, b in OPENPOSE_GROUPING_ORDER])
_LIMB_PAF = np.array(GROUPING_LIMB_INDEX)  # PAF limb (channels 2k, 2k + 1) of each grouping limb
_REMAP_WIDTH = 1024  # cv2.remap's output must stay under 32767 pixels on a side


def find_peaks(heatmaps, threshold=PEAK_THRESHOLD, min_distance=PEAK_MIN_DISTANCE_CELLS * 4, refine=False):
    """Keypoint candidates of the 18 keypoint channels.

    heatmaps: (>= 18, H, W); channel 18 (background), if present, is ignored.
    A peak is >= threshold (> 0) and strictly greater than its 4 neighbours (outside
    the map counts as 0). Of two peaks of one type closer than `min_distance` grid
    pixels, the stronger is kept. With `refine`, each peak gets a sub-cell offset
    from a Gaussian (log-parabola) fit through its neighbours, for maps that were
    not upsampled.
    Returns (P, 4) float32 rows (x, y, score, keypoint_type) in grid pixels, sorted
    by type, then by descending score; the row index is the peak's id.
    """
    # OpenCV works on H x W x C; a channel-first view of such data is not copied.
    maps = np.ascontiguousarray(np.asarray(heatmaps, dtype=np.float32)[:NUM_OPENPOSE_KEYPOINTS].transpose(1, 2, 0))
    # The original zeroes values below the threshold and then compares with the 4
    # neighbours; for a positive threshold, comparing the raw maps and requiring the
    # threshold is the same and needs no zeroed copy.
    neighbours = cv2.dilate(maps, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    peak = maps >= threshold
    peak &= maps > neighbours
    # flatnonzero + unravel is ~20x faster than a 3-D nonzero.
    ys, xs, types = np.unravel_index(np.flatnonzero(peak), maps.shape)
    scores = maps[ys, xs, types]
    order = np.lexsort((-scores, types))
    types, ys, xs, scores = types[order], ys[order], xs[order], scores[order]
    keep = _suppress_close(xs, ys, types, min_distance)
    types, ys, xs, scores = types[keep], ys[keep], xs[keep], scores[keep]
    x, y = xs.astype(np.float32), ys.astype(np.float32)
    if refine:
        x, y = _refine(maps, types, ys, xs)
    return np.stack([x, y, scores, types.astype(np.float32)], axis=1).reshape(-1, 4)


def _suppress_close(xs, ys, types, min_distance):
    """Greedy suppression within each type, in the given (descending score) order."""
    keep = np.ones(len(xs), dtype=bool)
    bounds = np.searchsorted(types, np.arange(NUM_OPENPOSE_KEYPOINTS + 1))
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if stop - start < 2:
            continue
        x, y = xs[start:stop].astype(np.float32), ys[start:stop].astype(np.float32)
        close = (x[:, None] - x) ** 2 + (y[:, None] - y) ** 2 < min_distance ** 2
        close = np.triu(close, 1)                  # a peak only suppresses weaker ones
        block = keep[start:stop]
        for i in np.flatnonzero(close.any(1)):     # peaks with a close weaker peak: few
            if block[i]:
                block[close[i]] = False
    return keep


def _refine(maps, types, ys, xs):
    """Sub-cell peak position: the vertex of a parabola through log values (exact for a
    Gaussian), clipped to half a cell; no offset along an axis at the map border."""
    h, w, _ = maps.shape
    log = lambda v: np.log(np.maximum(v, 1e-6))  # noqa: E731
    centre = log(maps[ys, xs, types])

    def offset(before, after, inside):
        curvature = before - 2 * centre + after
        delta = np.where(inside & (curvature < 0), 0.5 * (before - after) / np.minimum(curvature, -1e-6), 0)
        return np.clip(delta, -0.5, 0.5)

    left, right = maps[ys, np.maximum(xs - 1, 0), types], maps[ys, np.minimum(xs + 1, w - 1), types]
    up, down = maps[np.maximum(ys - 1, 0), xs, types], maps[np.minimum(ys + 1, h - 1), xs, types]
    dx = offset(log(left), log(right), (xs > 0) & (xs < w - 1))
    dy = offset(log(up), log(down), (ys > 0) & (ys < h - 1))
    return (xs + dx).astype(np.float32), (ys + dy).astype(np.float32)


def group_people(peaks, pafs, upsample=1, min_paf_score=MIN_PAF_SCORE):
    """Assemble people from peaks (as `find_peaks` returns them) and PAFs (38, h, w).

    The peaks' grid is `upsample` times finer than the PAFs'; the PAFs are sampled
    at the peaks' grid points as if they had been upsampled like the heatmaps
    (bicubic), without computing the upsampled maps.

    Returns (keypoints (N, 18, 3) float32 as (x, y, score) in grid pixels, with
    zeros for missing keypoints, and person scores (N,) float32), sorted by
    descending person score.

    Person score: Lightweight OpenPose ranks people by `score_sum * (count - 1)`,
    which is unbounded. Here it is the mean of the person's keypoint and limb scores
    (score_sum / (2 * count - 1), clipped to [0, 1]) times count / 18, so it lies in
    [0, 1] and grows with the number of grouped keypoints. `count` is the original's
    count: keypoints added by the ear-shoulder limbs are not counted.
    """
    peaks = np.asarray(peaks, dtype=np.float32).reshape(-1, 4)
    peaks = peaks[np.argsort(peaks[:, 3], kind="stable")]
    bounds = np.searchsorted(peaks[:, 3], np.arange(NUM_OPENPOSE_KEYPOINTS + 1))
    limb_pairs = _all_limb_affinities(peaks, bounds, pafs, upsample, min_paf_score)

    # Every entry is created with a type-b peak no other entry was created with,
    # so there are at most as many entries as peaks.
    entries = np.full((len(peaks), NUM_OPENPOSE_KEYPOINTS), -1, dtype=np.int64)  # peak id per slot
    score_sum = np.zeros(len(peaks), dtype=np.float64)
    count = np.zeros(len(peaks), dtype=np.int64)
    num = 0
    for k, (affinity, first_a, first_b) in enumerate(limb_pairs):
        if affinity is None:
            continue
        type_a, type_b = _LIMB_A[k], _LIMB_B[k]
        rows, cols = _match_greedy(affinity)
        conn_a, conn_b, conn_score = first_a + rows, first_b + cols, affinity[rows, cols]
        live = entries[:num]
        has_a = live[:, type_a, None] == conn_a             # (E, C): at most one True per column
        if k in FILL_ONLY_LIMBS:
            has_b = live[:, type_b, None] == conn_b
            e, c = np.nonzero(has_a & (live[:, type_b, None] < 0))
            live[e, type_b] = conn_b[c]
            e, c = np.nonzero(has_b & (live[:, type_a, None] < 0))
            live[e, type_a] = conn_a[c]
            continue
        e, c = np.nonzero(has_a)
        live[e, type_b] = conn_b[c]
        count[e] += 1
        score_sum[e] += peaks[conn_b[c], 2] + conn_score[c]
        new = ~has_a.any(0)
        end = num + int(new.sum())
        entries[num:end, type_a], entries[num:end, type_b] = conn_a[new], conn_b[new]
        score_sum[num:end] = peaks[conn_a[new], 2] + peaks[conn_b[new], 2] + conn_score[new]
        count[num:end] = 2
        num = end

    entries, score_sum, count = entries[:num], score_sum[:num], count[:num]
    good = (count >= MIN_PERSON_KEYPOINTS) & (score_sum >= MIN_PERSON_MEAN_SCORE * count)
    entries, score_sum, count = entries[good], score_sum[good], count[good]
    person_scores = np.clip(score_sum / np.maximum(2 * count - 1, 1), 0, 1) * count / NUM_OPENPOSE_KEYPOINTS
    order = np.argsort(-person_scores, kind="stable")
    entries, person_scores = entries[order], person_scores[order]

    keypoints = np.zeros(entries.shape + (3,), dtype=np.float32)
    present = entries >= 0
    keypoints[present] = peaks[entries[present], :3]
    return keypoints, person_scores.astype(np.float32)


def _all_limb_affinities(peaks, bounds, pafs, upsample, min_paf_score):
    """Score every candidate pair of every limb in one pass.

    Returns, per grouping limb, (affinity (n_a, n_b) with -inf for rejected pairs,
    id of the first type-a peak, id of the first type-b peak), or (None, 0, 0)
    when the limb has no accepted pair.
    """
    counts = np.diff(bounds)
    n_a, n_b = counts[_LIMB_A], counts[_LIMB_B]
    offsets = np.concatenate([[0], np.cumsum(n_a * n_b)])
    limb = np.repeat(np.arange(len(_LIMB_A)), n_a * n_b)             # limb of each pair
    local = np.arange(offsets[-1]) - offsets[limb]
    ids_a = bounds[_LIMB_A[limb]] + local // n_b[limb]
    ids_b = bounds[_LIMB_B[limb]] + local % n_b[limb]

    _, h, w = pafs.shape
    steps = np.linspace(0, 1, SAMPLES_PER_LIMB, dtype=np.float32)
    start_x, start_y = peaks[ids_a, 0, None], peaks[ids_a, 1, None]
    vec_x, vec_y = peaks[ids_b, 0, None] - start_x, peaks[ids_b, 1, None] - start_y   # (T, 1)
    x = np.clip(np.rint(start_x + vec_x * steps), 0, w * upsample - 1)                # (T, S)
    y = np.clip(np.rint(start_y + vec_y * steps), 0, h * upsample - 1)
    field_x, field_y = _sample_pafs(pafs, x, y, _LIMB_PAF[limb], upsample)
    norm = np.sqrt(vec_x ** 2 + vec_y ** 2) + 1e-6
    scores = (field_x * vec_x + field_y * vec_y) / norm                               # (T, S)
    valid = scores > min_paf_score
    num_valid = valid.sum(-1)
    affinity = np.where(valid, scores, 0).sum(-1) / np.maximum(num_valid, 1)
    accepted = (affinity > 0) & (num_valid > MIN_VALID_FRACTION * SAMPLES_PER_LIMB)
    affinity = np.where(accepted, affinity, -np.inf)
    accepted_per_limb = np.bincount(limb[accepted], minlength=len(_LIMB_A))

    return [(affinity[offsets[k]:offsets[k + 1]].reshape(n_a[k], n_b[k]), bounds[_LIMB_A[k]], bounds[_LIMB_B[k]])
            if accepted_per_limb[k] else (None, 0, 0) for k in range(len(_LIMB_A))]


def _sample_pafs(pafs, x, y, paf_limb, upsample):
    """PAF x and y components at grid points (x, y) (T, S) of a grid `upsample` times finer
    than the PAFs, for pair t of PAF limb paf_limb[t]: bicubic like upsample_maps
    (the same kernel and edge replication; the same weights for upsample 1, 2, 4 and
    8, whose sample offsets are multiples of remap's 1/32 pixel).
    """
    if x.size == 0:
        return np.zeros(x.shape, np.float32), np.zeros(x.shape, np.float32)
    _, h, w = pafs.shape
    # One remap call for all channels: the maps stacked vertically, each with 2
    # replicated rows above and below (the reach of the cubic kernel).
    stacked = np.pad(np.asarray(pafs, np.float32), ((0, 0), (2, 2), (0, 0)), mode="edge").reshape(-1, w)
    map_x = (x + 0.5) / upsample - 0.5
    map_y = (y + 0.5) / upsample + 1.5 + 2 * paf_limb[:, None] * (h + 4)   # the limb's x channel
    n = x.size
    padded = -(-2 * n // _REMAP_WIDTH) * _REMAP_WIDTH
    maps = np.zeros((2, padded), np.float32)
    maps[0, :n] = maps[0, n:2 * n] = map_x.ravel()
    maps[1, :n] = map_y.ravel()
    maps[1, n:2 * n] = maps[1, :n] + (h + 4)                                 # the y channel
    maps = maps.reshape(2, -1, _REMAP_WIDTH)
    values = cv2.remap(stacked, maps[0], maps[1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE).reshape(-1)
    return values[:n].reshape(x.shape), values[n:2 * n].reshape(x.shape)


def _match_greedy(affinity):
    """Greedy one-to-one matching by descending affinity, as (rows, cols).

    A pair that is the best of both its row and its column among the pairs left
    is the one greedy picks next in its row and column, so each round takes all
    such pairs at once; rounds repeat until no accepted pair is left.
    """
    affinity = affinity.copy()
    row_idx = np.arange(len(affinity))
    rows, cols = [], []
    while True:
        best_col = affinity.argmax(1)
        mutual = (affinity.argmax(0)[best_col] == row_idx) & np.isfinite(affinity[row_idx, best_col])
        if not mutual.any():
            break
        r, c = row_idx[mutual], best_col[mutual]
        rows.append(r)
        cols.append(c)
        affinity[r, :] = -np.inf
        affinity[:, c] = -np.inf
    return np.concatenate(rows), np.concatenate(cols)


def upsample_maps(maps, factor):
    """(C, h, w) -> (C, h * factor, w * factor) with bicubic interpolation (the demo's)."""
    if factor == 1:
        return maps
    _, h, w = maps.shape
    hwc = np.ascontiguousarray(np.asarray(maps, dtype=np.float32).transpose(1, 2, 0))
    out = cv2.resize(hwc, (w * factor, h * factor), interpolation=cv2.INTER_CUBIC)
    return out.reshape(h * factor, w * factor, -1).transpose(2, 0, 1)


def decode_people(heatmaps, pafs, stride=8, upsample=4, valid_size=None, peak_threshold=PEAK_THRESHOLD):
    """Network maps of one image -> people in network-input pixels.

    heatmaps (>= 18, h, w) and pafs (38, h, w) at `stride`; `upsample` 1 finds peaks
    on the maps themselves with sub-cell refinement. `valid_size` (height, width) in
    input pixels leaves out peaks whose grid cell starts in the padding.
    Returns (keypoints (N, 18, 3) with (x, y, score), zeros where missing; scores (N,)).
    """
    heatmaps = upsample_maps(np.asarray(heatmaps)[:NUM_OPENPOSE_KEYPOINTS], upsample)
    peaks = find_peaks(heatmaps, peak_threshold, PEAK_MIN_DISTANCE_CELLS * upsample, refine=upsample == 1)
    if valid_size is not None:
        # Dropping peaks rather than cropping the maps keeps the map border from turning
        # the tail of a blob in the padding into a peak (and copies nothing).
        rows, cols = (size * upsample / stride for size in valid_size)
        peaks = peaks[(peaks[:, 0] < cols) & (peaks[:, 1] < rows)]
    keypoints, scores = group_people(peaks, np.asarray(pafs), upsample)
    # Grid cell g covers input pixels [g, g + 1) * cell; integer input coordinates are centres.
    cell = stride / upsample
    present = keypoints[..., 2] > 0
    keypoints[..., :2] = np.where(present[..., None], (keypoints[..., :2] + 0.5) * cell - 0.5, 0)
    return keypoints, scores
