"""BottomUpPipeline with a fake network, and the frame checks in front of it."""
import numpy as np
import pytest

from pose_core.bottomup import PAD_RGB, BottomUpPipeline
from pose_core.errors import InputError, WeightsError
from pose_core.frames import as_bgr
from pose_core.skeleton import openpose_to_coco
from test_grouping import person, render_maps

TIMING_KEYS = {"preprocess", "network", "grouping"}


class FakeNetwork:
    """Returns the target maps of known people (OpenPose-18, in frame pixels) for the
    batch it is given, as the trained network ideally would; records the batch."""

    name = "fake"

    def __init__(self, people, frame_size, height=256):
        self.people = np.asarray(people, np.float32).reshape(-1, 18, 3)
        self.frame_size = frame_size
        self.height = height
        self.batches = []

    def __call__(self, batch):
        self.batches.append(batch)
        frame_h, frame_w = self.frame_size
        # The resize contract: the height becomes `height`, the aspect ratio is kept,
        # and cv2.resize aligns pixel centres.
        scale = np.array([round(frame_w * self.height / frame_h) / frame_w, self.height / frame_h])
        people = self.people.copy()
        people[..., :2] = (people[..., :2] + 0.5) * scale - 0.5
        heatmaps, pafs = render_maps(people, batch.shape[2], batch.shape[3])
        return heatmaps[None], pafs[None]


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
