"""Bottom-up decoding: heatmap peaks, then people grouped by part affinity fields.

Lightweight OpenPose semantics (spec ARCHITECTURES.md 1.10, modules/keypoints.py),
vectorised: every candidate pair of a limb is scored at once, and the greedy
one-to-one matching and the merge run as array operations per limb.

Three deliberate differences from the original, each documented where it happens:
- peak suppression keeps the stronger of two close peaks (the original keeps the
  leftmost one, an artefact of sorting by x);
- the person score is bounded (see `group_people`); the grouping itself, including
  the filters on the unbounded score sum, is unchanged;
- a person needs 4 grouped keypoints, not 3 (MIN_PERSON_KEYPOINTS).

After grouping (both measured on coco_val_dev, README "Inference options"): a keypoint the
grouping left empty is filled from the person's own neighbourhood of the heatmap
(`fill_missing_keypoints`), and the person score is weighted by the person's size
(`size_weighted_scores`).

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

from .skeleton import COCO_FROM_OPENPOSE, GROUPING_LIMB_INDEX, NUM_OPENPOSE_KEYPOINTS, OPENPOSE_GROUPING_ORDER

PEAK_THRESHOLD = 0.1
# Lightweight OpenPose suppresses peaks closer than 6 px on x4-upsampled stride-8
# maps, that is 1.5 network cells; the radius is scaled to whatever grid is used.
PEAK_MIN_DISTANCE_CELLS = 1.5
SAMPLES_PER_LIMB = 10
MIN_PAF_SCORE = 0.05
MIN_VALID_FRACTION = 0.8
# A person needs this many grouped keypoints (Lightweight OpenPose: 3). Since missing keypoints
# are filled (fill_missing_keypoints), a 3-keypoint fragment became a whole, mostly guessed
# skeleton: with 4, ldlc-openpose-fpn's coco_person_train selection AP went 0.307 -> 0.309 (5:
# 0.309, 6: 0.308, 8: 0.303), coco_val_dev 0.301 -> 0.304 (stop 22).
MIN_PERSON_KEYPOINTS = 4
MIN_PERSON_MEAN_SCORE = 0.2
# A missing keypoint is looked for within the box of the person's keypoints grown by this
# fraction of its longer side on every side.
FILL_MARGIN = 0.3
# People at least this fraction of the map height (sqrt of their keypoint box area) keep
# their score; smaller ones are scaled down by sqrt(size / it).
FULL_SCORE_SIZE = 0.5
# snap_to_heatmap_peaks: a keypoint moves to the peak of the finer heatmap within this many of
# its cells (a square window) whose value over (its distance in cells + SNAP_DISTANCE_CELLS)
# is the largest, if that value is at least SNAP_MIN_HEAT. Chosen on 300 coco_person_train
# images (README, "Inference options").
SNAP_RADIUS_CELLS = 6
SNAP_DISTANCE_CELLS = 4.0
SNAP_MIN_HEAT = 0.1
# heat_weighted_scores: a person's score is multiplied by the mean of its HEAT_SCORE_TOP
# highest keypoint heats, to the power HEAT_SCORE_POWER. Chosen on 300 coco_person_train images
# (README, "Inference options").
HEAT_SCORE_TOP = 6
HEAT_SCORE_POWER = 3.0
# The last two grouping limbs (ear-shoulder) only fill slots that are still empty.
FIRST_FILL_ONLY_LIMB = len(OPENPOSE_GROUPING_ORDER) - 2

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
    peak = _peak_mask(maps, threshold)
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


def _peak_mask(maps, threshold, ties=False):
    """(H, W, C) maps -> where a cell is >= threshold and higher than its 4 neighbours (at
    least as high with `ties`); outside the map counts as 0."""
    neighbours = cv2.dilate(maps, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (maps >= threshold) & ((maps >= neighbours) if ties else (maps > neighbours))


def _grid_xy(keypoints, stride):
    """(x, y) of keypoints (..., 3) in input pixels, in cells of a `stride`-pixel grid: cell g
    covers input pixels [g, g + 1) * stride, and integer input coordinates are pixel centres."""
    return (keypoints[..., 0] + 0.5) / stride - 0.5, (keypoints[..., 1] + 0.5) / stride - 0.5


def _suppress_close(xs, ys, types, min_distance):
    """Greedy suppression within each type, in the given (descending score) order:
    visiting peaks in that order, a peak still kept drops the weaker ones close to it."""
    keep = np.ones(len(xs), dtype=bool)
    bounds = np.searchsorted(types, np.arange(NUM_OPENPOSE_KEYPOINTS + 1))
    most = np.diff(bounds).max(initial=0)
    if most < 2:
        return keep
    # All types at once on a (type, rank) grid, NaN where a type has fewer peaks.
    rank = np.arange(len(xs)) - bounds[types]
    grid_x = np.full((NUM_OPENPOSE_KEYPOINTS, most), np.nan, np.float32)
    grid_y = grid_x.copy()
    grid_x[types, rank], grid_y[types, rank] = xs, ys
    distance2 = (grid_x[:, :, None] - grid_x[:, None]) ** 2 + (grid_y[:, :, None] - grid_y[:, None]) ** 2
    close_type, stronger, weaker = np.nonzero(np.triu(distance2 < min_distance ** 2, 1))
    # Close pairs are few; nonzero lists them by type, then by the stronger peak's rank.
    for i, j in zip((bounds[close_type] + stronger).tolist(), (bounds[close_type] + weaker).tolist()):
        if keep[i]:
            keep[j] = False
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

    The original walks the limbs in order and adds each connection to the person
    that already holds its first keypoint, else starts a new person. Its limb order
    walks a tree from the neck (a keypoint's parent limb comes before its child
    limbs) and a peak is the second keypoint of at most one connection, so its
    people are exactly the connected components of the connections of the 17 tree
    limbs: found here at once by pointer jumping, not limb by limb. The ear-shoulder
    limbs then only fill empty slots, as in the original.

    Person score: Lightweight OpenPose ranks people by `score_sum * (count - 1)`,
    which is unbounded. Here it is the mean of the person's keypoint and limb scores
    (score_sum / (2 * count - 1), clipped to [0, 1]) times count / 18, so it lies in
    [0, 1] and grows with the number of grouped keypoints. `count` is the original's
    count: keypoints added by the ear-shoulder limbs are not counted.
    """
    peaks = np.asarray(peaks, dtype=np.float32).reshape(-1, 4)
    peaks = peaks[np.argsort(peaks[:, 3], kind="stable")]
    bounds = np.searchsorted(peaks[:, 3], np.arange(NUM_OPENPOSE_KEYPOINTS + 1))
    limb, conn_a, conn_b, conn_score = _limb_connections(peaks, bounds, pafs, upsample, min_paf_score)

    tree = limb < FIRST_FILL_ONLY_LIMB
    tree_a, tree_b = conn_a[tree], conn_b[tree]
    root = np.arange(len(peaks))
    root[tree_b] = tree_a
    while True:  # pointer jumping: the tree is 3 limbs deep, so this ends within 3 rounds
        jumped = root[root]
        if np.array_equal(jumped, root):
            break
        root = jumped
    # One person per root, numbered in the order the original creates them: by its
    # first connection (connections come by limb, then in the order they were matched).
    roots, first_connection = np.unique(root[tree_a], return_index=True)
    roots = roots[np.argsort(first_connection)]
    person_of_root = np.full(len(peaks), -1)
    person_of_root[roots] = np.arange(len(roots))
    members = np.zeros(len(peaks), dtype=bool)
    members[tree_a] = members[tree_b] = True
    members = np.flatnonzero(members)
    person = person_of_root[root[members]]
    count = np.bincount(person, minlength=len(roots))
    score_sum = (np.bincount(person, peaks[members, 2].astype(np.float64), len(roots))
                 + np.bincount(person_of_root[root[tree_a]], conn_score[tree], len(roots)))
    entries = np.full((len(roots), NUM_OPENPOSE_KEYPOINTS), -1, dtype=np.int64)  # peak id per slot
    entries[person, peaks[members, 3].astype(np.int64)] = members

    for k in range(FIRST_FILL_ONLY_LIMB, len(OPENPOSE_GROUPING_ORDER)):
        type_a, type_b, of_limb = _LIMB_A[k], _LIMB_B[k], limb == k
        fill_a, fill_b = conn_a[of_limb], conn_b[of_limb]
        has_a = entries[:, type_a, None] == fill_a             # (E, C): at most one True per column
        has_b = entries[:, type_b, None] == fill_b
        e, c = np.nonzero(has_a & (entries[:, type_b, None] < 0))
        entries[e, type_b] = fill_b[c]
        e, c = np.nonzero(has_b & (entries[:, type_a, None] < 0))
        entries[e, type_a] = fill_a[c]

    good = (count >= MIN_PERSON_KEYPOINTS) & (score_sum >= MIN_PERSON_MEAN_SCORE * count)
    entries, score_sum, count = entries[good], score_sum[good], count[good]
    person_scores = np.clip(score_sum / np.maximum(2 * count - 1, 1), 0, 1) * count / NUM_OPENPOSE_KEYPOINTS
    order = np.argsort(-person_scores, kind="stable")
    entries, person_scores = entries[order], person_scores[order]

    keypoints = np.zeros(entries.shape + (3,), dtype=np.float32)
    present = entries >= 0
    keypoints[present] = peaks[entries[present], :3]
    return keypoints, person_scores.astype(np.float32)


def _limb_connections(peaks, bounds, pafs, upsample, min_paf_score):
    """Score every candidate pair of every limb in one pass, then match them.

    Returns the connections as arrays (limb, peak id a, peak id b, affinity), ordered
    by limb and, within a limb, by descending affinity (the order the original
    visits them).
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
    accepted = np.flatnonzero((affinity > 0) & (num_valid > MIN_VALID_FRACTION * SAMPLES_PER_LIMB))
    limb, ids_a, ids_b, affinity = limb[accepted], ids_a[accepted], ids_b[accepted], affinity[accepted]
    # Matching is one-to-one within a limb: a peak is a different row in each limb.
    taken = _match_greedy(limb * len(peaks) + ids_a, limb * len(peaks) + ids_b, affinity)
    taken = taken[np.argsort(limb[taken], kind="stable")]
    return limb[taken], ids_a[taken], ids_b[taken], affinity[taken]


def _sample_pafs(pafs, x, y, paf_limb, upsample):
    """PAF x and y components at grid points (x, y) (T, S) of a grid `upsample` times finer
    than the PAFs, for pair t of PAF limb paf_limb[t]: bicubic like upsample_maps
    (the same kernel and edge replication; the same weights for upsample 1, 2, 4 and
    8, whose sample offsets are multiples of remap's 1/32 pixel).
    """
    if x.size == 0:
        return np.zeros(x.shape, np.float32), np.zeros(x.shape, np.float32)
    _, h, w = pafs.shape
    if upsample == 1:
        # At whole grid points the cubic kernel weighs the sample alone: a plain gather.
        index = (2 * paf_limb[:, None] * h + y.astype(np.intp)) * w + x.astype(np.intp)
        flat = np.asarray(pafs, np.float32).reshape(-1)
        return flat.take(index), flat.take(index + h * w)
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


def _match_greedy(rows, cols, affinity):
    """Greedy one-to-one matching of candidate pairs (row key, column key, affinity):
    visiting pairs by descending affinity, a pair is taken when neither its row nor its
    column is taken yet. Returns the indices of the taken pairs in that visiting order.

    A pair that comes first in both its row and its column among the pairs left is
    one greedy takes, so each round takes all such pairs at once; rounds repeat until
    no pair is left.
    """
    order = np.argsort(-affinity, kind="stable")
    rows, cols = rows[order], cols[order]
    row_free = np.ones(rows.max(initial=-1) + 1, dtype=bool)
    col_free = np.ones(cols.max(initial=-1) + 1, dtype=bool)
    left, taken = np.arange(len(order)), []
    while len(left):
        r, c, position = rows[left], cols[left], np.arange(len(left))
        first_in_row = np.full(len(row_free), len(left))
        first_in_col = np.full(len(col_free), len(left))
        np.minimum.at(first_in_row, r, position)
        np.minimum.at(first_in_col, c, position)
        pick = (first_in_row[r] == position) & (first_in_col[c] == position)
        taken.append(left[pick])
        row_free[r[pick]] = False
        col_free[c[pick]] = False
        left = left[row_free[r] & col_free[c]]
    return order[np.sort(np.concatenate(taken))] if taken else order[:0]


def upsample_maps(maps, factor):
    """(C, h, w) -> (C, h * factor, w * factor) with bicubic interpolation (the demo's)."""
    if factor == 1:
        return maps
    _, h, w = maps.shape
    hwc = np.ascontiguousarray(np.asarray(maps, dtype=np.float32).transpose(1, 2, 0))
    out = cv2.resize(hwc, (w * factor, h * factor), interpolation=cv2.INTER_CUBIC)
    return out.reshape(h * factor, w * factor, -1).transpose(2, 0, 1)


def fill_missing_keypoints(keypoints, heatmaps, valid_cells=None, margin=FILL_MARGIN, blob_radius=2):
    """Fill each person's empty keypoint slots from the heatmaps, in place.

    keypoints (N, 18, 3) in grid pixels as `group_people` returns them, heatmaps (>= 18, h, w)
    on the same grid; `valid_cells` (rows, cols) bounds the search (the rest is padding).
    A missing keypoint of type t becomes the maximum of heatmap t within the box of the
    person's keypoints grown by `margin` x its longer side, refined to sub-cell as peaks
    are, with that heatmap value as its score. Another person's keypoint of that type and
    the cells within `blob_radius` of it are skipped (its blob: the training targets' sigma
    is 0.9 cells of a stride-8 grid), and an all-zero window leaves the slot empty. COCO's
    OKS counts a missing keypoint as maximally wrong, so a low-confidence guess near the
    person is worth more than nothing: +0.014 AP on coco_val_dev.
    """
    if not len(keypoints):
        return keypoints
    maps = np.ascontiguousarray(np.asarray(heatmaps, dtype=np.float32)[:NUM_OPENPOSE_KEYPOINTS].transpose(1, 2, 0))
    rows, cols = maps.shape[:2] if valid_cells is None else (min(maps.shape[0], int(np.ceil(valid_cells[0]))),
                                                             min(maps.shape[1], int(np.ceil(valid_cells[1]))))
    present = keypoints[..., 2] > 0
    # Another person's keypoint and its blob are not to be taken (the tail of a strong blob
    # 1.5 cells away still reads 0.23); grouped keypoints sit within half a cell of their peak's cell.
    person, kind = np.nonzero(present)
    taken = np.zeros(maps.shape, np.uint8)
    taken[np.clip(np.rint(keypoints[person, kind, 1]).astype(np.int64), 0, maps.shape[0] - 1),
          np.clip(np.rint(keypoints[person, kind, 0]).astype(np.int64), 0, maps.shape[1] - 1), kind] = 1
    blob = np.ones((2 * blob_radius + 1,) * 2, np.uint8)
    searchable = np.where(cv2.dilate(taken, blob) > 0, 0, maps)
    # Per person, the window's argmax for all its missing types at once; sub-cell refinement
    # once for all.
    people, kinds, cells = [], [], []
    for p in np.flatnonzero(~present.all(1) & present.any(1)):
        missing = np.flatnonzero(~present[p])
        xs, ys = keypoints[p, present[p], 0], keypoints[p, present[p], 1]
        x_min, x_max, y_min, y_max = xs.min(), xs.max(), ys.min(), ys.max()
        grow = margin * max(x_max - x_min, y_max - y_min, 2.0)
        x0, x1 = max(0, int(x_min - grow)), min(cols, int(np.ceil(x_max + grow)) + 1)
        y0, y1 = max(0, int(y_min - grow)), min(rows, int(np.ceil(y_max + grow)) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        window = searchable[y0:y1, x0:x1, missing].reshape(-1, len(missing))
        best = window.argmax(0)
        found = window[best, np.arange(len(missing))] > 0
        people.append(np.full(found.sum(), p))
        kinds.append(missing[found])
        cells.append(np.stack(np.divmod(best[found], x1 - x0), 1) + (y0, x0))
    if people:
        people, kinds, cells = np.concatenate(people), np.concatenate(kinds), np.concatenate(cells)
        x, y = _refine(maps, kinds, cells[:, 0], cells[:, 1])
        keypoints[people, kinds] = np.stack([x, y, maps[cells[:, 0], cells[:, 1], kinds]], 1)
    return keypoints


def average_in_fine_heatmaps(heatmaps, fine_heatmaps):
    """(19, h, w) OpenPose-18 heatmaps (+ background) with each keypoint's channel averaged with
    the 2x2 mean of its (17, 2h, 2w) COCO heatmap (the value at the stride-8 cell's centre).
    ldlc-openpose-fpn's MultiPose heatmaps, trained on all of COCO, find keypoints our heads
    miss: on 300 coco_person_train images (int8, with snapping) 0.301 -> 0.307 AP; weights
    0.3 / 0.5 / 0.7 / 1.0 for them gave 0.306 / 0.307 / 0.307 / 0.301, a 2x2 max 0.303."""
    fine = np.asarray(fine_heatmaps, np.float32)
    # Four strided views: ~20x faster than reshape(...).mean((2, 4)) (0.56 ms a frame).
    coarse = (fine[:, 0::2, 0::2] + fine[:, 0::2, 1::2] + fine[:, 1::2, 0::2] + fine[:, 1::2, 1::2]) / 4
    averaged = np.array(heatmaps, dtype=np.float32)
    averaged[COCO_FROM_OPENPOSE] = (averaged[COCO_FROM_OPENPOSE] + coarse) / 2
    return averaged


def snap_to_heatmap_peaks(keypoints, heatmaps, stride, radius=SNAP_RADIUS_CELLS, distance_cells=SNAP_DISTANCE_CELLS,
                          min_heat=SNAP_MIN_HEAT):
    """Move keypoints to the nearby peak of finer heatmaps, in place.

    keypoints (N, K, 3) in network-input pixels, heatmaps (K, h, w) of the same K types at
    `stride` input pixels a cell (ldlc-openpose-fpn: MultiPose's stride-4 heatmaps beside our
    stride-8 maps). A peak is a cell of at least `min_heat` and at least as high as its 4
    neighbours. Each present keypoint takes the position of the peak of its heatmap within
    `radius` cells of its own cell whose value / (distance + `distance_cells`) is the largest
    (the distance in cells from the keypoint), refined to sub-cell; its score is kept. The
    plain maximum within 3 cells took 300 coco_person_train images (int8) from 0.282 to 0.301
    AP; a wider window weighted by distance, which does not jump to another person's peak,
    then from 0.307 to 0.311 at longer side 352 and from 0.247 to 0.252 at 256 (radii 3-7 and
    distances 1-6 tried; 5-6 and 3-4 alike; any cell instead of peaks only: the same within
    0.002). Only the peaks are scored, not every cell of each window: 0.2 ms for 10 people
    instead of 0.65."""
    n, k = np.nonzero(keypoints[..., 2] > 0)
    if not len(n):
        return keypoints
    maps = np.ascontiguousarray(np.asarray(heatmaps, dtype=np.float32).transpose(1, 2, 0))
    h, w, types = maps.shape
    peak_y, peak_x, peak_type = np.unravel_index(np.flatnonzero(_peak_mask(maps, min_heat, ties=True)), maps.shape)
    by_type = np.argsort(peak_type, kind="stable")
    peak_y, peak_x, peak_type = peak_y[by_type], peak_x[by_type], peak_type[by_type]
    if not len(peak_type):
        return keypoints
    # (type, rank) tables of the peaks' cells; unused slots lie far outside any window.
    counts = np.bincount(peak_type, minlength=types)
    rank = np.arange(len(peak_type)) - np.repeat(np.cumsum(counts) - counts, counts)
    cells_x = np.full((types, counts.max()), -10 * (h + w + radius), np.int64)
    cells_y = cells_x.copy()
    cells_x[peak_type, rank], cells_y[peak_type, rank] = peak_x, peak_y
    grid_x, grid_y = _grid_xy(keypoints[n, k], stride)
    xs, ys = cells_x[k], cells_y[k]                                            # (P, most peaks)
    reached = ((np.abs(xs - np.rint(grid_x)[:, None]) <= radius)
               & (np.abs(ys - np.rint(grid_y)[:, None]) <= radius))
    values = maps[np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1), k[:, None]]
    weighted = np.where(reached, values / (np.hypot(xs - grid_x[:, None], ys - grid_y[:, None]) + distance_cells), -1)
    best = weighted.argmax(1)
    rows = np.arange(len(n))
    moved = weighted[rows, best] >= 0
    x, y = _refine(maps, k[moved], ys[rows, best][moved], xs[rows, best][moved])
    keypoints[n[moved], k[moved], 0] = (x + 0.5) * stride - 0.5
    keypoints[n[moved], k[moved], 1] = (y + 0.5) * stride - 0.5
    return keypoints


def heat_weighted_scores(keypoints, scores, heatmaps, stride, top=HEAT_SCORE_TOP, power=HEAT_SCORE_POWER):
    """Person scores x (mean of the person's `top` highest keypoint heats) ** `power`.

    keypoints (N, K, 3) in network-input pixels, heatmaps (K, h, w) of the same K types at
    `stride` input pixels a cell (ldlc-openpose-fpn: MultiPose's stride-4 heatmaps); a keypoint's
    heat is its heatmap's value at its cell, 0 when it is missing. The grouping's score says
    how well the limbs connect, not how surely the keypoints are there: a fragment on the
    background can connect well. MultiPose's heatmaps, trained on all of COCO, say the latter:
    ranking by both took coco_person_train's selection AP 0.301 -> 0.307 (longer side 352) and
    0.309 -> 0.313 (height 256); the top 4-12 keypoints and powers 1-6 all gained, 2-6 alike."""
    if not len(keypoints):
        return scores
    maps = np.asarray(heatmaps, np.float32)
    k, h, w = maps.shape
    grid_x, grid_y = _grid_xy(keypoints, stride)
    cell_x = np.clip(np.rint(grid_x).astype(np.int64), 0, w - 1)
    cell_y = np.clip(np.rint(grid_y).astype(np.int64), 0, h - 1)
    heat = np.where(keypoints[..., 2] > 0, maps[np.arange(k), cell_y, cell_x], 0)
    strongest = -np.partition(-heat, min(top, k) - 1, axis=1)[:, :top]
    return (scores * np.maximum(strongest.mean(1), 0) ** power).astype(np.float32)


def size_weighted_scores(keypoints, scores, map_rows, full_score_size=FULL_SCORE_SIZE):
    """Person scores x sqrt(min(1, size / (full_score_size x map_rows))), size being the
    square root of the area of the person's keypoint box (grid cells, one cell added to
    each side). A keypoint off by a grid cell costs a small person more OKS than a large
    one, so among equally confident people the larger is more likely right; ranking by it
    is worth +0.014 AP on coco_val_dev (chosen on coco_person_train images)."""
    if not len(keypoints):
        return scores
    present = keypoints[..., 2] > 0
    low = np.where(present[..., None], keypoints[..., :2], np.inf).min(1)
    high = np.where(present[..., None], keypoints[..., :2], -np.inf).max(1)
    size = np.sqrt(np.prod(high - low + 1, axis=1))
    return (scores * np.sqrt(np.minimum(1.0, size / (full_score_size * map_rows)))).astype(np.float32)


def decode_people(heatmaps, pafs, stride=8, upsample=4, valid_size=None, peak_threshold=PEAK_THRESHOLD,
                  fill_missing=True, size_score=True):
    """Network maps of one image -> people in network-input pixels.

    heatmaps (>= 18, h, w) and pafs (38, h, w) at `stride`; `upsample` 1 finds peaks
    on the maps themselves with sub-cell refinement. `valid_size` (height, width) in
    input pixels leaves out peaks whose grid cell starts in the padding, and bounds the
    search of `fill_missing` (fill_missing_keypoints); `size_score` weights the person
    scores by size (size_weighted_scores).
    Returns (keypoints (N, 18, 3) with (x, y, score), zeros where missing; scores (N,)).
    """
    heatmaps = upsample_maps(np.asarray(heatmaps)[:NUM_OPENPOSE_KEYPOINTS], upsample)
    peaks = find_peaks(heatmaps, peak_threshold, PEAK_MIN_DISTANCE_CELLS * upsample, refine=upsample == 1)
    valid_cells = heatmaps.shape[1:]
    if valid_size is not None:
        # Dropping peaks rather than cropping the maps keeps the map border from turning
        # the tail of a blob in the padding into a peak (and copies nothing).
        valid_cells = rows, cols = tuple(size * upsample / stride for size in valid_size)
        peaks = peaks[(peaks[:, 0] < cols) & (peaks[:, 1] < rows)]
    keypoints, scores = group_people(peaks, np.asarray(pafs), upsample)
    if fill_missing:
        fill_missing_keypoints(keypoints, heatmaps, valid_cells, blob_radius=2 * upsample)
    if size_score:
        scores = size_weighted_scores(keypoints, scores, valid_cells[0])
    # Grid cell g covers input pixels [g, g + 1) * cell; integer input coordinates are centres.
    cell = stride / upsample
    present = keypoints[..., 2] > 0
    keypoints[..., :2] = np.where(present[..., None], (keypoints[..., :2] + 0.5) * cell - 0.5, 0)
    return keypoints, scores
