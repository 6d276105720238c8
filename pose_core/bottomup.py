"""Bottom-up pipeline: one frame -> People, through heatmaps and part affinity fields."""
from time import perf_counter

import cv2
import numpy as np

from .errors import PoseError, WeightsError
from .frames import as_bgr
from .paf_grouping import (PEAK_THRESHOLD, average_in_fine_heatmaps, decode_people, heat_weighted_scores,
                           snap_to_heatmap_peaks)
from .result import MIN_PERSON_SCORE, People, boxes_from_keypoints
from .skeleton import NUM_HEATMAPS, NUM_KEYPOINTS, NUM_PAFS, OPENPOSE_FLIP_INDEX, OPENPOSE_LIMBS, openpose_to_coco
from .topdown import flip_back, oks_nms

# People found at several network heights (extra_heights) are merged by OKS-NMS at this
# threshold, chosen on coco_person_train images (0.2-0.9 measured; README).
MULTI_SCALE_OKS_THRESHOLD = 0.5

# Zoom pass: the frame regions around the people found smaller than ZOOM_MAX_SIZE network
# pixels (their keypoint box's longer side) run through the network again at `zoom` x the
# scale; a region is the person's keypoint box grown by ZOOM_GROW x its longer side plus
# ZOOM_MARGIN_CELLS network cells on every side. Chosen on 300 coco_person_train images
# (tools/tune_zoom.py; README): with ldlc-openpose-fpn, people under 96 px instead of stop 18's
# 64 took them from 0.355 to 0.365-0.370 (128 and 160 no better, and slower); a smaller growth
# with a wider margin keeps the regions about as cheap.
DEFAULT_ZOOM = 2.0
ZOOM_MAX_SIZE = 96
ZOOM_GROW = 0.25
ZOOM_MARGIN_CELLS = 4

# Size-weighted person scores (paf_grouping.size_weighted_scores) run lower than unweighted
# ones; this threshold shows about as many people on the crowd clips as MIN_PERSON_SCORE did
# without the weight (README, "Inference options").
SIZE_SCORED_MIN_PERSON_SCORE = 0.05
# Weighting them by heat too (paf_grouping.heat_weighted_scores) lowers them again, and the
# threshold by this factor: on coco_val_dev, 0.005 keeps 462 of the 469 people found (OKS >=
# 0.5) that 0.05 kept before, and 256 of its 383 false ones (README, "Inference options").
HEAT_SCORED_THRESHOLD_FACTOR = 0.1

# The ImageNet mean, the "mean value" padding of the training recipe; defined here (not in
# pose_core.train) because inference must not import torch.
PAD_RGB = (124.0, 116.0, 104.0)

# Flip test: heatmap channel c of the mirrored image is channel HEATMAP_FLIP[c] of the
# original (left/right swapped, background kept); limb k of the mirrored image is limb
# PAF_FLIP_LIMB[k] of the original, whose x component changes sign.
HEATMAP_FLIP = np.append(OPENPOSE_FLIP_INDEX, NUM_HEATMAPS - 1)
PAF_FLIP_LIMB = np.array([OPENPOSE_LIMBS.index((OPENPOSE_FLIP_INDEX[a], OPENPOSE_FLIP_INDEX[b]))
                          for a, b in OPENPOSE_LIMBS])


class BottomUpPipeline:
    """Resize (height = `height`, aspect kept) -> network -> peaks + PAF grouping.

    runner(batch (1, 3, H, W) float32 RGB 0..255) returns (heatmaps (1, 19, H/stride,
    W/stride), pafs (1, 38, H/stride, W/stride)) and, from a network that has them
    (ldlc-openpose-fpn), keypoint heatmaps (1, 17, 2H/stride, 2W/stride) in COCO order: with
    `fine_heatmaps` (the default) they are averaged into the heatmaps before peak finding
    (paf_grouping.average_in_fine_heatmaps), and each decoded keypoint then moves to their
    nearby peak (paf_grouping.snap_to_heatmap_peaks), and the person scores are weighted by the
    heat at their keypoints (paf_grouping.heat_weighted_scores). `upsample` is the factor the maps are
    upsampled by before peak finding: 1 (the default) finds peaks on the network's grid with
    sub-cell refinement, 4 upsamples first as the Lightweight OpenPose demo does; on
    coco_val_dev 1 measured both cheaper and more accurate (README). `flip_test`
    also runs the mirrored frame and averages its mirrored-back maps in (twice the
    network time). `fill_missing` and `size_score`: paf_grouping.decode_people's, both on
    by default (measured on coco_val_dev, README); `min_person_score` is the display
    threshold meant for the scores. `extra_heights` (multi-scale): the network also runs at
    these heights and the people of all are merged by OKS-NMS. `zoom` (> 1): the regions
    around the small people of the base pass (zoom_regions) run again at `zoom` x its
    scale, and their people join the merge: most of multi-scale's gain on small people for
    a fraction of its cost, which grows with the number of small people. `height` may be
    changed between calls (the GUI does). `longer_side` (instead of `height`): each frame is
    resized so that its longer side is that long, MoveNet MultiPose's convention.
    """

    kind = "bottom-up"

    def __init__(self, runner, height=256, stride=8, upsample=1, peak_threshold=PEAK_THRESHOLD,
                 flip_test=False, fill_missing=True, size_score=True, extra_heights=(), zoom=None,
                 fine_heatmaps=True, longer_side=None):
        self.runner = runner
        self.height = height
        self.longer_side = longer_side
        self.extra_heights = tuple(int(h) for h in extra_heights)
        self.zoom = zoom
        self.stride = stride
        self.upsample = upsample
        self.peak_threshold = peak_threshold
        self.flip_test = flip_test
        self.fine_heatmaps = fine_heatmaps
        self.decode_options = {"fill_missing": fill_missing, "size_score": size_score}
        self.heat_scored = False  # set by the first frame decoded with keypoint heatmaps
        self.backend = getattr(runner, "name", type(runner).__name__)

    @property
    def min_person_score(self):
        """The display threshold meant for the scores of the frames decoded so far."""
        threshold = SIZE_SCORED_MIN_PERSON_SCORE if self.decode_options["size_score"] else MIN_PERSON_SCORE
        return threshold * HEAT_SCORED_THRESHOLD_FACTOR if self.heat_scored else threshold

    def __call__(self, frame):
        frame = as_bgr(frame)
        timings = dict.fromkeys(("preprocess", "network", "grouping"), 0.0)
        height = self.base_height(frame.shape[:2])
        found = [self._people_at(frame, h, timings) for h in (height, *self.extra_heights)]
        zoom = self.zoom  # read once: the GUI may change it between calls
        if zoom:
            found += self._zoomed_people(frame, found[0][0], zoom, height / frame.shape[0], timings)
        start = perf_counter()
        keypoints = np.concatenate([k for k, _ in found])
        people = (People.from_keypoints(keypoints, np.concatenate([s for _, s in found])) if len(keypoints)
                  else People.empty())
        if len(found) > 1 and len(people):
            # OKS scale: 0.51 x the keypoint box (coco_val_dev's median segment-to-box area ratio)
            areas = 0.51 * np.prod(people.boxes[:, 2:] - people.boxes[:, :2], axis=1) + 1.0
            people = people.select(oks_nms(people.keypoints, people.scores, areas, MULTI_SCALE_OKS_THRESHOLD))
        timings["grouping"] += perf_counter() - start
        people.timings = timings
        return people

    def _people_at(self, frame, height, timings):
        """(keypoints (N, 17, 3) COCO order in frame pixels, scores (N,)) with the network at
        `height`; the stage times are added to `timings`."""
        start = perf_counter()
        batch, resized_size = self.preprocess(frame, height)
        network_start = perf_counter()
        heatmaps, pafs, keypoint_heatmaps = self._run(batch)
        if self.flip_test:
            mirrored_heatmaps, mirrored_pafs, mirrored_keypoint_heatmaps = self._run(batch[..., ::-1].copy())
            heatmaps, pafs = average_with_mirrored(heatmaps, pafs, mirrored_heatmaps, mirrored_pafs)
            if keypoint_heatmaps is not None:
                mirrored_back = flip_back(mirrored_keypoint_heatmaps[None], shift=False)[0]
                keypoint_heatmaps = (keypoint_heatmaps + mirrored_back) / 2
        grouping_start = perf_counter()
        fine = self.fine_heatmaps and keypoint_heatmaps is not None
        if fine:
            heatmaps = average_in_fine_heatmaps(heatmaps, keypoint_heatmaps)
        keypoints, scores = decode_people(heatmaps, pafs, self.stride, self.upsample, resized_size,
                                          self.peak_threshold, **self.decode_options)
        keypoints = openpose_to_coco(keypoints)
        if fine:
            snap_to_heatmap_peaks(keypoints, keypoint_heatmaps, self.stride / 2)
            scores = heat_weighted_scores(keypoints, scores, keypoint_heatmaps, self.stride / 2)
            self.heat_scored = True
        keypoints = _to_frame_pixels(keypoints, resized_size, frame.shape[:2])
        timings["preprocess"] += network_start - start
        timings["network"] += grouping_start - network_start
        timings["grouping"] += perf_counter() - grouping_start
        return keypoints, scores

    def base_height(self, frame_size):
        """The network input height of a frame of `frame_size` (height, width): `height`, or
        with `longer_side` the height that makes the frame's longer side that long."""
        if self.longer_side is None:
            return self.height
        frame_h, frame_w = frame_size
        return max(self.stride, round(self.longer_side * frame_h / max(frame_h, frame_w)))

    def _zoomed_people(self, frame, keypoints, zoom, base_scale, timings):
        """[(keypoints, scores)] of each zoom region (frame pixels), the network at `zoom` x the
        scale of the base pass; a region keeps the people whose keypoint box centre is in it.
        Their scores are weighted by size against the region's height, as decode_people does for
        any input: against the whole frame's, they ranked worse on coco_person_train. `base_scale`:
        network pixels per frame pixel of the base pass."""
        found = []
        for x0, y0, x1, y1 in zoom_regions(keypoints, frame.shape[:2], base_scale, self.stride):
            region_keypoints, scores = self._people_at(frame[y0:y1, x0:x1],
                                                       max(self.stride, round((y1 - y0) * base_scale * zoom)),
                                                       timings)
            present = region_keypoints[..., 2:] > 0
            region_keypoints[..., :2] += np.where(present, np.array([x0, y0], np.float32), 0)
            boxes = boxes_from_keypoints(region_keypoints)
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            inside = present.any((1, 2)) & np.all((centres >= (x0, y0)) & (centres < (x1, y1)), axis=1)
            found.append((region_keypoints[inside], scores[inside]))
        return found

    def preprocess(self, frame, height=None):
        """BGR uint8 frame -> ((1, 3, H, W) float32 RGB batch padded right and bottom to a
        multiple of the stride, (height, width) of the resized image inside it); the resized
        height is `height`, by default the pipeline's."""
        height = int(self.height if height is None else height)
        if height < self.stride:
            raise PoseError(f"network input height {height} is below the stride {self.stride}")
        h, w = frame.shape[:2]
        new_h = height
        new_w = max(1, round(w * new_h / h))
        # INTER_LINEAR: ~15x faster than INTER_AREA when shrinking a 720p frame.
        resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        pad_h, pad_w = -(-new_h // self.stride) * self.stride, -(-new_w // self.stride) * self.stride
        batch = np.empty((1, 3, pad_h, pad_w), dtype=np.float32)
        batch[0] = np.array(PAD_RGB, dtype=np.float32)[:, None, None]
        batch[0, :, :new_h, :new_w] = resized[:, :, ::-1].transpose(2, 0, 1)
        return batch, (new_h, new_w)

    def _run(self, batch):
        """(heatmaps, pafs, keypoint heatmaps or None) of the batch's one image."""
        outputs = self.runner(batch)
        rows, cols = batch.shape[2] // self.stride, batch.shape[3] // self.stride
        expected = [(1, NUM_HEATMAPS, rows, cols), (1, NUM_PAFS, rows, cols), (1, NUM_KEYPOINTS, 2 * rows, 2 * cols)]
        shapes = [tuple(np.shape(o)) for o in outputs[:3]]
        if shapes != expected[:len(shapes)] or len(shapes) < 2:
            raise WeightsError(f"network outputs {shapes} are not bottom-up maps {expected[:2]} "
                               f"(and optionally keypoint heatmaps {expected[2]})")
        return outputs[0][0], outputs[1][0], outputs[2][0] if len(outputs) > 2 else None


def zoom_regions(keypoints, frame_size, base_scale, stride=8, max_size=ZOOM_MAX_SIZE, grow=ZOOM_GROW,
                 margin_cells=ZOOM_MARGIN_CELLS):
    """Integer (x0, y0, x1, y1) frame rectangles to look at again, around the people of
    `keypoints` (N, 17, 3), frame pixels, found at `base_scale` network pixels per frame pixel)
    whose keypoint box's longer side is under `max_size` network pixels: each such box grown
    by `grow` x that side plus `margin_cells` network cells, clipped to the frame; rectangles
    that overlap are replaced by their bounding rectangle until none do (one network run each)."""
    frame_h, frame_w = frame_size
    present = keypoints[..., 2] > 0
    boxes = boxes_from_keypoints(keypoints)
    side = (boxes[:, 2:] - boxes[:, :2]).max(1)
    small = present.any(1) & (side * base_scale < max_size)
    pad = grow * side[small, None] + margin_cells * stride / base_scale
    rects = np.concatenate([boxes[small, :2] - pad, boxes[small, 2:] + pad], axis=1)
    rects = np.clip(np.rint(rects), 0, [frame_w, frame_h, frame_w, frame_h]).astype(int).tolist()
    merged_any = True
    while merged_any:
        merged_any, merged = False, []
        for rect in rects:
            for i, other in enumerate(merged):
                if rect[0] < other[2] and other[0] < rect[2] and rect[1] < other[3] and other[1] < rect[3]:
                    merged[i] = [min(rect[0], other[0]), min(rect[1], other[1]),
                                 max(rect[2], other[2]), max(rect[3], other[3])]
                    merged_any = True
                    break
            else:
                merged.append(rect)
        rects = merged
    return [tuple(r) for r in rects if r[2] > r[0] and r[3] > r[1]]


def average_with_mirrored(heatmaps, pafs, mirrored_heatmaps, mirrored_pafs):
    """Average (C, h, w) maps with those of the mirrored input, mirrored back into the
    original's channels: left/right keypoints swap, limbs swap, PAF x components flip sign.
    The whole padded input was mirrored, so a mirrored column i is column w - 1 - i."""
    back_heatmaps = mirrored_heatmaps[HEATMAP_FLIP, :, ::-1]
    limb_pafs = mirrored_pafs.reshape(len(OPENPOSE_LIMBS), 2, *mirrored_pafs.shape[1:])
    back_pafs = limb_pafs[np.argsort(PAF_FLIP_LIMB), :, :, ::-1] * np.array([-1, 1], np.float32)[:, None, None]
    return ((heatmaps + back_heatmaps) / 2,
            (pafs + back_pafs.reshape(pafs.shape)) / 2)


def _to_frame_pixels(keypoints, resized_size, frame_size):
    """Network-input pixels -> frame pixels; an integer coordinate is a pixel centre in
    both, as cv2.resize aligns them. Missing keypoints stay (0, 0, 0)."""
    scale = np.array([resized_size[1] / frame_size[1], resized_size[0] / frame_size[0]], dtype=np.float32)
    present = keypoints[..., 2:] > 0
    keypoints[..., :2] = np.where(present, (keypoints[..., :2] + 0.5) / scale - 0.5, 0)
    return keypoints
