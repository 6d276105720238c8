"""BottomUpPipeline with a fake network, and the frame checks in front of it."""
import numpy as np
import pytest

from pose_core.bottomup import (HEAT_SCORED_THRESHOLD_FACTOR, PAD_RGB, SIZE_SCORED_MIN_PERSON_SCORE, BottomUpPipeline,
                               zoom_regions)
from pose_core.errors import InputError, WeightsError
from pose_core.frames import as_bgr
from pose_core.paf_grouping import HEAT_SCORE_POWER
from pose_core.result import boxes_from_keypoints
from pose_core.skeleton import COCO_FROM_OPENPOSE, OPENPOSE_FLIP_INDEX, openpose_to_coco
from test_grouping import assert_close_to_truth, match_to_truth, person, render_maps

TIMING_KEYS = {"preprocess", "network", "grouping"}


class FakeNetwork:
    """Returns the target maps of known people (OpenPose-18, in frame pixels) for the
    batch it is given, as the trained network ideally would; records the batch."""

    name = "fake"

    def __init__(self, people, frame_size, height=256, coarse_shift=None):
        self.people = np.asarray(people, np.float32).reshape(-1, 18, 3)
        self.frame_size = frame_size
        self.height = height
        self.coarse_shift = coarse_shift
        self.batches = []

    def __call__(self, batch):
        """With `coarse_shift` (x, y), as ldlc-openpose-fpn: the stride-8 maps put the people off
        by that many input pixels, and stride-4 COCO keypoint heatmaps (the third output) put
        them right. A batch that mirrors the first one gets the mirrored maps (the shift too)."""
        self.batches.append(batch)
        frame_h, frame_w = self.frame_size
        # The resize contract: the height becomes `height`, the aspect ratio is kept,
        # and cv2.resize aligns pixel centres.
        scale = np.array([round(frame_w * self.height / frame_h) / frame_w, self.height / frame_h])
        people = self.people.copy()
        people[..., :2] = (people[..., :2] + 0.5) * scale - 0.5
        shift = np.array(self.coarse_shift or (0.0, 0.0))
        if len(self.batches) > 1 and np.array_equal(batch, self.batches[0][..., ::-1]):
            people = people[:, OPENPOSE_FLIP_INDEX]
            people[..., 0] = batch.shape[3] - 1 - people[..., 0]
            shift[0] = -shift[0]
        if self.coarse_shift is None:
            heatmaps, pafs = render_maps(people, batch.shape[2], batch.shape[3])
            return heatmaps[None], pafs[None]
        fine, _ = render_maps(people, batch.shape[2], batch.shape[3], stride=4)
        heatmaps, pafs = render_maps(people + (*shift, 0), batch.shape[2], batch.shape[3])
        return heatmaps[None], pafs[None], fine[None, COCO_FROM_OPENPOSE]


def people_in_frame(frame_h, frame_w, count):
    """`count` standing people side by side, sized to fit the frame with a margin
    (a person is 0.3 x as wide as tall; peaks within a cell of the border shift)."""
    step = frame_w / count
    height = min(0.8 * frame_h, 0.6 * step / 0.3)
    return np.stack([person(step * (i + 0.5) + 0.37, 0.1 * frame_h + 0.21, height) for i in range(count)])


def sort_by_nose_x(keypoints):
    return keypoints[np.argsort(keypoints[:, 0, 0])]


@pytest.mark.parametrize("frame_h, frame_w, count", [(480, 640, 3), (720, 1280, 5), (301, 333, 1),
                                                      (1000, 377, 2), (3000, 4000, 4)])
def test_recovers_people_in_frame_pixels(frame_h, frame_w, count):
    truth = people_in_frame(frame_h, frame_w, count)
    pipeline = BottomUpPipeline(FakeNetwork(truth, (frame_h, frame_w)))
    people = pipeline(np.zeros((frame_h, frame_w, 3), np.uint8))

    assert len(people) == count
    assert set(people.timings) == TIMING_KEYS and all(t >= 0 for t in people.timings.values())
    expected = sort_by_nose_x(openpose_to_coco(truth))
    found = sort_by_nose_x(people.keypoints)
    # 1.5 network-input pixels (the x4 grid and cubic upsampling), in frame pixels.
    tolerance = 1.5 * frame_h / 256 + 0.1
    assert np.abs(found[..., :2] - expected[..., :2]).max() <= tolerance
    assert np.all(found[..., 2] > 0.5)
    # COCO order: left wrist (COCO 9) is OpenPose's l_wri (7).
    assert np.abs(found[:, 9, :2] - sort_by_nose_x(truth)[:, 7, :2]).max() <= tolerance
    assert np.allclose(people.boxes[:, :2], people.keypoints[..., :2].min(1))
    assert np.allclose(people.boxes[:, 2:], people.keypoints[..., :2].max(1))
    assert np.all((people.scores > 0) & (people.scores <= 1))


def test_low_resolution_peaks_with_refinement():
    truth = people_in_frame(480, 640, 3)
    pipeline = BottomUpPipeline(FakeNetwork(truth, (480, 640)), upsample=1)
    found = sort_by_nose_x(pipeline(np.zeros((480, 640, 3), np.uint8)).keypoints)
    assert np.abs(found[..., :2] - sort_by_nose_x(openpose_to_coco(truth))[..., :2]).max() < 0.1


@pytest.mark.parametrize("flip_test", [False, True])
def test_keypoints_snap_to_the_finer_keypoint_heatmaps_of_a_network_that_has_them(flip_test):
    truth = people_in_frame(480, 640, 3)
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)  # not mirror-symmetric
    expected = sort_by_nose_x(openpose_to_coco(truth))[..., :2]
    shift = (3.0, -2.0)  # network pixels: 5.6 and 3.75 frame pixels
    for snap, error in ((True, 0.0), (False, np.array(shift) * 480 / 256)):
        network = FakeNetwork(truth, (480, 640), coarse_shift=shift)
        pipeline = BottomUpPipeline(network, upsample=1, flip_test=flip_test, fine_heatmaps=snap)
        found = sort_by_nose_x(pipeline(frame).keypoints)
        assert len(network.batches) == 1 + flip_test
        assert np.abs(found[..., :2] - expected - error).max() < 0.15


def test_heat_weighted_scores_and_their_display_threshold_follow_the_networks_keypoint_heatmaps():
    truth = people_in_frame(480, 640, 3)
    frame = np.zeros((480, 640, 3), np.uint8)
    plain = BottomUpPipeline(FakeNetwork(truth, (480, 640)), upsample=1)
    fine_network = FakeNetwork(truth, (480, 640), coarse_shift=(0.0, 0.0))
    fine = BottomUpPipeline(fine_network, upsample=1)
    assert plain.min_person_score == fine.min_person_score == SIZE_SCORED_MIN_PERSON_SCORE
    plain_scores, fine_scores = plain(frame).scores, fine(frame).scores
    # The rendered keypoint heatmaps read nearly 1 at every keypoint's cell.
    assert np.all((fine_scores <= plain_scores) & (fine_scores > 0.5 * plain_scores))
    assert plain.min_person_score == SIZE_SCORED_MIN_PERSON_SCORE
    assert fine.min_person_score == pytest.approx(SIZE_SCORED_MIN_PERSON_SCORE * HEAT_SCORED_THRESHOLD_FACTOR)

    def half_heat(batch):
        heatmaps, pafs, keypoint_heatmaps = fine_network(batch)
        return heatmaps, pafs, 0.5 * keypoint_heatmaps

    # Half the heat: the score falls by 0.5 ** HEAT_SCORE_POWER (and a little more, since the
    # halved maps, averaged into the heatmaps, also weaken the grouping's keypoint scores).
    half_scores = BottomUpPipeline(half_heat, upsample=1)(frame).scores
    assert half_scores == pytest.approx(fine_scores * 0.5 ** HEAT_SCORE_POWER, rel=0.2)


def test_keypoint_heatmaps_of_the_wrong_shape_are_a_weights_error():
    maps = (np.zeros((1, 19, 32, 32), np.float32), np.zeros((1, 38, 32, 32), np.float32))
    wrong = lambda batch: (*maps, np.zeros((1, 17, 32, 32), np.float32))  # noqa: E731 (stride 8, not 4)
    with pytest.raises(WeightsError, match="keypoint heatmaps"):
        BottomUpPipeline(wrong)(np.zeros((256, 256, 3), np.uint8))


@pytest.mark.parametrize("frame_h, frame_w", [(33, 17), (17, 33), (8, 8)])
def test_tiny_odd_frames_give_no_people(frame_h, frame_w):
    network = FakeNetwork(np.zeros((0, 18, 3)), (frame_h, frame_w))
    people = BottomUpPipeline(network)(np.full((frame_h, frame_w, 3), 200, np.uint8))
    assert len(people) == 0 and people.keypoints.shape == (0, 17, 3)
    assert set(people.timings) == TIMING_KEYS
    assert network.batches[0].shape[2] == 256 and network.batches[0].shape[3] % 8 == 0


def test_grayscale_and_bgra_frames_give_the_same_people():
    truth = people_in_frame(240, 320, 2)
    pipeline = BottomUpPipeline(FakeNetwork(truth, (240, 320)))
    gray = np.random.default_rng(0).integers(0, 256, (240, 320), dtype=np.uint8)
    results = [pipeline(frame).keypoints for frame in
               (np.dstack([gray] * 3), gray, gray[..., None], np.dstack([gray] * 3 + [np.full_like(gray, 9)]))]
    assert len(results[0]) == 2
    for keypoints in results[1:]:
        assert np.array_equal(keypoints, results[0])
    batches = pipeline.runner.batches
    assert all(np.array_equal(b, batches[0]) for b in batches[1:])


def test_network_input_contract():
    network = FakeNetwork(np.zeros((0, 18, 3)), (100, 151))
    pipeline = BottomUpPipeline(network)
    frame = np.zeros((100, 151, 3), np.uint8)
    frame[..., 0] = 255                                   # pure blue in BGR
    pipeline(frame)
    pipeline.height = 128                                 # changed between calls, as the GUI does
    pipeline(frame)
    for batch, height in zip(network.batches, (256, 128)):
        width = round(151 * height / 100)
        assert batch.dtype == np.float32 and batch.shape == (1, 3, height, -(-width // 8) * 8)
        assert np.all(batch[0, 2, :, :width] == 255) and np.all(batch[0, :2, :, :width] == 0)  # RGB, 0..255
        assert batch.shape[3] > width and np.all(batch[0, :, :, width:] == np.array(PAD_RGB)[:, None, None])


def test_padding_is_the_training_padding():
    from pose_core.train.augment import PAD_RGB as training_pad

    assert tuple(PAD_RGB) == tuple(map(float, training_pad))


def test_network_outputs_of_the_wrong_shape_are_a_weights_error():
    wrong = lambda batch: (np.zeros((1, 17, 32, 32), np.float32), np.zeros((1, 38, 32, 32), np.float32))  # noqa: E731
    with pytest.raises(WeightsError, match="not bottom-up maps"):
        BottomUpPipeline(wrong)(np.zeros((256, 256, 3), np.uint8))


# ------------------------------------------------------------------ frame checks
@pytest.mark.parametrize("frame, message", [
    (None, "no frame"),
    ([[1, 2], [3, 4]], "numpy array"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((7, 100), np.uint8), "too small"),
    (np.zeros((20, 20, 2), np.uint8), "unsupported frame shape"),
    (np.zeros((20, 20, 3, 1), np.uint8), "unsupported frame shape"),
    (np.zeros((20, 20, 3), np.int32), "unsupported frame type"),
    (np.zeros((10, 400), np.uint8), "elongated"),
    (np.zeros((20000, 8), bool), "too large"),
])
def test_unusable_frames_raise_a_one_line_input_error(frame, message):
    with pytest.raises(InputError, match=message) as info:
        as_bgr(frame)
    assert "\n" not in str(info.value)


def test_frame_conversions():
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    bgr = np.dstack([gray, gray // 2, 255 - gray])
    assert np.array_equal(as_bgr(gray), np.dstack([gray] * 3))
    assert np.array_equal(as_bgr(np.dstack([bgr, gray])), bgr)
    assert as_bgr(bgr) is bgr                                     # already usable: no copy
    flipped = as_bgr(bgr[:, ::-1])
    assert flipped.flags.c_contiguous and np.array_equal(flipped, bgr[:, ::-1])
    assert np.array_equal(as_bgr(bgr.astype(np.uint16) * 257), bgr)
    assert np.array_equal(as_bgr(bgr / 255.0), bgr)              # float 0..1
    assert np.array_equal(as_bgr(bgr.astype(np.float32)), bgr)   # float 0..255
    assert as_bgr(np.zeros((3000, 4000, 4), np.uint8)).shape == (3000, 4000, 3)


class PerHeightNetwork(FakeNetwork):
    """Renders, at each input height (a multiple of 8), only the people `visible[height]` lists."""

    def __init__(self, people, frame_size, visible):
        super().__init__(people, frame_size)
        self.all_people, self.visible = self.people, visible

    def __call__(self, batch):
        self.height = batch.shape[2]
        self.people = self.all_people[self.visible[self.height]]
        return super().__call__(batch)


def test_multi_scale_merges_the_people_of_every_height_once():
    truth = people_in_frame(480, 640, 3)
    # Person 1 is found at both heights, person 0 at 256 only, person 2 at 512 only.
    network = PerHeightNetwork(truth, (480, 640), {256: [0, 1], 512: [1, 2]})
    pipeline = BottomUpPipeline(network, extra_heights=(512,))
    people = pipeline(np.zeros((480, 640, 3), np.uint8))
    assert [b.shape[2] for b in network.batches] == [256, 512]
    assert len(people) == 3 and set(people.timings) == TIMING_KEYS
    found = sort_by_nose_x(people.keypoints)
    assert np.abs(found[..., :2] - sort_by_nose_x(openpose_to_coco(truth))[..., :2]).max() < 0.5
    single = BottomUpPipeline(PerHeightNetwork(truth, (480, 640), {256: [0, 1]}))(np.zeros((480, 640, 3), np.uint8))
    assert len(single) == 2


class CoordinateNetwork:
    """Sees where it looks: the frame's pixels encode their own position (blue = x // 2,
    green = y // 2, red 0), so from any batch, a crop or the whole frame at any scale, it
    recovers the frame coordinates of its pixels and renders the maps of the people (frame
    pixels) that cover at least `min_size` network pixels (keypoint box height): a network
    that misses people too small for it."""

    name = "coordinates"

    def __init__(self, people, min_size=40):
        self.people = np.asarray(people, np.float32).reshape(-1, 18, 3)
        self.min_size = min_size
        self.batches = []

    @staticmethod
    def frame(height, width):
        ys, xs = np.mgrid[:height, :width]
        return np.stack([xs // 2, ys // 2, np.zeros_like(xs)], axis=2).astype(np.uint8)

    def __call__(self, batch):
        self.batches.append(batch)
        valid_rows, valid_cols = np.flatnonzero(batch[0, 0, :, 0] == 0), np.flatnonzero(batch[0, 0, 0] == 0)
        # Frame coordinate = a + b x network pixel, fitted on the first valid row and column.
        fit_x = np.polyfit(valid_cols, 2 * batch[0, 2, 0, valid_cols] + 0.5, 1)
        fit_y = np.polyfit(valid_rows, 2 * batch[0, 1, valid_rows, 0] + 0.5, 1)
        people = self.people.copy()
        people[..., 0] = (people[..., 0] - fit_x[1]) / fit_x[0]
        people[..., 1] = (people[..., 1] - fit_y[1]) / fit_y[0]
        sizes = np.ptp(people[..., 1], axis=1)
        heatmaps, pafs = render_maps(people[sizes >= self.min_size], batch.shape[2], batch.shape[3])
        return heatmaps[None], pafs[None]


def test_zoom_finds_a_person_too_small_for_the_base_height_and_keeps_everyone_once():
    # At height 256 (0.64 network px per frame px): `large` spans 177 network px, `small` 59
    # (found, and under ZOOM_MAX_SIZE, so its region is looked at again), `tiny` 29 (missed)
    # next to it; at zoom 2 `tiny` spans 59.
    large, small, tiny = person(100.3, 50.2, 300), person(350.3, 150.2, 100), person(400.3, 200.2, 50)
    frame = CoordinateNetwork.frame(400, 500)
    plain = BottomUpPipeline(CoordinateNetwork([large, small, tiny]))(frame)
    assert len(plain) == 2
    network = CoordinateNetwork([large, small, tiny])
    people = BottomUpPipeline(network, zoom=2)(frame)
    # one zoom run, on the region around `small`, at twice the scale
    assert len(network.batches) == 2
    region_height = network.batches[1].shape[2]
    assert 2 * 0.64 * 92 < region_height < 2 * 0.64 * 300
    assert len(people) == 3 and set(people.timings) == TIMING_KEYS
    truth = openpose_to_coco(np.stack([large, small, tiny]))
    assert_close_to_truth(match_to_truth(people.keypoints, truth), truth, tolerance=3)


def test_zoom_regions_surround_small_people_merge_when_they_overlap_and_stay_in_the_frame():
    people = openpose_to_coco(np.stack([person(100.3, 50.2, 300), person(350.3, 150.2, 100),
                                        person(380.3, 160.2, 100), person(20.3, 300.2, 90)]))
    regions = zoom_regions(people, (400, 500), base_scale=0.64)
    # the large person gets none; the two overlapping small ones one; the one at the edge is clipped
    assert len(regions) == 2
    (x0, y0, x1, y1), (ex0, ey0, ex1, ey1) = sorted(regions, key=lambda r: -r[0])
    boxes = boxes_from_keypoints(people)
    assert x0 < boxes[1, 0] and y0 < boxes[1, 1] and x1 > boxes[2, 2] and y1 > boxes[2, 3]
    # grown by a quarter of the longer side (0.92 x 100) plus four network cells (50 frame px)
    assert x0 == round(boxes[1, 0] - 0.25 * 92 - 50)
    assert ex0 == 0 and ey1 == 400 and ex1 == round(boxes[3, 2] + 0.25 * 0.92 * 90 + 50)
    assert zoom_regions(people[:1], (400, 500), base_scale=0.64) == []
    # the size limit, 96 network px: a person 77 px tall gets a region, one 100 px tall none
    for height, regions in ((130, 1), (170, 0)):
        single = openpose_to_coco(person(100.3, 50.2, height)[None])
        assert len(zoom_regions(single, (400, 500), base_scale=0.64)) == regions
    assert zoom_regions(np.zeros((0, 17, 3), np.float32), (400, 500), base_scale=0.64) == []


@pytest.mark.parametrize("frame_h, frame_w, height", [(480, 640, 264), (640, 480, 352), (300, 300, 352)])
def test_longer_side_sizes_landscape_and_portrait_frames_like_multipose(frame_h, frame_w, height):
    truth = people_in_frame(frame_h, frame_w, 2)
    network = FakeNetwork(truth, (frame_h, frame_w), height=height)
    pipeline = BottomUpPipeline(network, longer_side=352, zoom=2.0)
    found = sort_by_nose_x(pipeline(np.zeros((frame_h, frame_w, 3), np.uint8)).keypoints)
    assert network.batches[0].shape[2] == height and network.batches[0].shape[3] >= round(frame_w * height / frame_h)
    assert np.abs(found[..., :2] - sort_by_nose_x(openpose_to_coco(truth))[..., :2]).max() < 1.5 * frame_h / height + 0.1
