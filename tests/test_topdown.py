"""Top-down codec and pipeline: crops, flip test, decoder, rescoring, OKS-NMS, targets, loss."""
import cv2
import numpy as np
import pytest

from pose_core.result import People
from pose_core.skeleton import COCO_FLIP_INDEX, NUM_KEYPOINTS
from pose_core.topdown import (BottomUpBoxes, TopDownPipeline, apply_affine, box_to_center_size, crop_affine,
                               decode_heatmaps, flip_back, oks_nms, rescore)

CROP_W, CROP_H = 192, 256
HM_W, HM_H = 48, 64


def mmpose_affine(center, width, output_size, rotation):
    """Reference: mmpose get_affine_transform's three-point construction."""
    out_w, out_h = output_size
    r = np.deg2rad(rotation)
    up = np.array([0.0, -width / 2])
    src_dir = np.array([up[0] * np.cos(r) - up[1] * np.sin(r), up[0] * np.sin(r) + up[1] * np.cos(r)])
    src = np.array([center, center + src_dir, [0, 0]], np.float32)
    dst = np.array([[out_w / 2, out_h / 2], [out_w / 2, out_h / 2 - out_w / 2], [0, 0]], np.float32)
    for pts in (src, dst):
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]])
    return cv2.getAffineTransform(src, dst)


def test_box_to_center_size_fixes_aspect_and_pads():
    centers, sizes = box_to_center_size([[100, 50, 160, 250], [0, 0, 300, 100]], aspect_ratio=0.75)
    np.testing.assert_allclose(centers, [[130, 150], [150, 50]])
    # narrow box: width grows to 0.75 x 200; wide box: height grows to 300 / 0.75; then x 1.25
    np.testing.assert_allclose(sizes, [[150 * 1.25, 200 * 1.25], [300 * 1.25, 400 * 1.25]])


@pytest.mark.parametrize("rotation", [0.0, 30.0, -75.0])
def test_crop_then_uncrop_returns_the_keypoint(rotation):
    center, width = np.array([321.5, 207.25]), 187.5
    to_crop = crop_affine(center, width, (CROP_W, CROP_H), rotation)
    np.testing.assert_allclose(to_crop, mmpose_affine(center, width, (CROP_W, CROP_H), rotation), atol=1e-3)
    points = np.array([[300.0, 150.0], [321.5, 207.25], [410.3, 330.9]])
    back = apply_affine(apply_affine(points, to_crop), cv2.invertAffineTransform(to_crop))
    np.testing.assert_allclose(back, points, atol=1e-6)
    np.testing.assert_allclose(apply_affine(center, to_crop), [CROP_W / 2, CROP_H / 2], atol=1e-9)


def test_crop_pixels_follow_the_affine():
    """A bright dot in the frame appears in the crop where the affine puts it."""
    frame = np.zeros((400, 500, 3), np.uint8)
    cv2.circle(frame, (260, 180), 3, (255, 255, 255), -1)
    pipeline = TopDownPipeline(None, None)
    centers, sizes = np.array([[250.0, 200.0]]), np.array([[150.0, 200.0]])
    crop = pipeline.crop_batch(frame, centers, sizes)[0].mean(0)
    ys, xs = np.indices(crop.shape)
    centroid = np.array([(xs * crop).sum(), (ys * crop).sum()]) / crop.sum()
    expected = apply_affine([260, 180], crop_affine(centers[0], sizes[0, 0], (CROP_W, CROP_H)))
    np.testing.assert_allclose(centroid, expected, atol=0.3)


def test_flip_back_swaps_left_right_and_shifts_one_pixel():
    heatmaps = np.zeros((1, NUM_KEYPOINTS, HM_H, HM_W), np.float32)
    heatmaps[0, 5, 20, 10] = 1.0   # left shoulder of the mirrored crop
    heatmaps[0, 0, 30, 24] = 0.5   # nose: no partner
    out = flip_back(heatmaps, shift=False)
    assert out[0, 6, 20, HM_W - 1 - 10] == 1.0 and out[0, 5].max() == 0
    assert out[0, 0, 30, HM_W - 1 - 24] == 0.5
    shifted = flip_back(heatmaps)
    assert shifted[0, 6, 20, HM_W - 10] == 1.0
    np.testing.assert_array_equal(flip_back(flip_back(heatmaps, shift=False), shift=False), heatmaps)


def test_decoder_adds_a_quarter_pixel_towards_the_higher_neighbour():
    heatmaps = np.zeros((1, 2, HM_H, HM_W), np.float32)
    heatmaps[0, 0, 20, 10] = 0.9
    heatmaps[0, 0, 20, 11] = 0.5   # right higher than left -> +0.25 in x
    heatmaps[0, 0, 19, 10] = 0.4   # up higher than down -> -0.25 in y
    heatmaps[0, 1, 1, 30] = 0.7    # on the second row: no offset on either axis
    heatmaps[0, 1, 1, 31] = 0.6
    decoded = decode_heatmaps(heatmaps)
    np.testing.assert_allclose(decoded[0], [[10.25, 19.75, 0.9], [30, 1, 0.7]], atol=1e-6)


def test_rescore_uses_keypoints_above_the_threshold_only():
    keypoint_scores = np.array([[0.9, 0.5, 0.1, 0.15], [0.1, 0.2, 0.0, 0.05]])
    np.testing.assert_allclose(rescore([0.5, 0.8], keypoint_scores, 0.2), [0.5 * 0.7, 0.0])


def _person(x, y, scale=40.0):
    offsets = np.random.default_rng(1).uniform(-1, 1, (NUM_KEYPOINTS, 2)) * scale
    return np.concatenate([offsets + [x, y], np.ones((NUM_KEYPOINTS, 1))], axis=1)


def test_oks_nms_suppresses_duplicates_and_keeps_distinct_people():
    a = _person(100, 100)
    keypoints = np.stack([a, a + [1.0, -1.0, 0], _person(300, 120), a + [0.5, 0.5, 0]])
    scores = np.array([0.6, 0.9, 0.7, 0.5])
    keep = oks_nms(keypoints, scores, np.full(4, 80.0 * 100.0), threshold=0.9)
    np.testing.assert_array_equal(keep, [1, 2])


def _peaks(scores):
    """Heatmaps (17, 64, 48) with keypoint k's peak at column 10 + k, row 5 + 3k."""
    heatmaps = np.zeros((NUM_KEYPOINTS, HM_H, HM_W), np.float32)
    for k in range(NUM_KEYPOINTS):
        heatmaps[k, 5 + 3 * k, 10 + k] = scores[k]
    return heatmaps


class FakeRunner:
    """Returns `_peaks` for every crop; for the mirrored half of a flip-test batch, what a
    perfect network answers: each peak mirrored, one pixel left of where flip_back's shift
    puts it back, in the swapped channel."""

    name = "fake"

    def __init__(self, keypoint_scores, flip_test):
        self.heatmaps = _peaks(keypoint_scores)
        self.flip_test = flip_test
        self.batches = []

    def __call__(self, batch):
        self.batches.append(batch)
        n = len(batch) // 2 if self.flip_test else len(batch)
        mirrored = self.heatmaps[COCO_FLIP_INDEX, :, ::-1]
        mirrored = np.concatenate([mirrored[..., -1:], mirrored[..., :-1]], axis=-1)
        return (np.stack([self.heatmaps] * n + [mirrored] * (len(batch) - n)),)


@pytest.mark.parametrize("flip_test", [False, True])
def test_pipeline_returns_keypoints_in_image_pixels(flip_test):
    boxes = np.array([[100, 50, 160, 250], [300, 40, 380, 160]], np.float32)
    detector = lambda frame: (boxes, np.array([0.9, 0.6], np.float32))  # noqa: E731
    keypoint_scores = np.full(NUM_KEYPOINTS, 0.8, np.float32)
    keypoint_scores[:4] = 0.1
    runner = FakeRunner(keypoint_scores, flip_test)
    pipeline = TopDownPipeline(detector, runner, (CROP_H, CROP_W), flip_test=flip_test)
    frame = np.zeros((300, 400, 3), np.uint8)
    frame[:, :200] = 255   # so that a mirrored crop differs from the crop
    people = pipeline(frame)

    batch = runner.batches[0]
    assert batch.shape == ((4 if flip_test else 2), 3, CROP_H, CROP_W)
    if flip_test:
        np.testing.assert_array_equal(batch[2:], batch[:2, :, :, ::-1])
    assert set(people.timings) == {"detect", "preprocess", "network", "grouping"}
    np.testing.assert_allclose(people.boxes, boxes)
    np.testing.assert_allclose(people.scores, [0.9 * 0.8, 0.6 * 0.8], rtol=1e-5)
    np.testing.assert_allclose(people.keypoints[..., 2], [keypoint_scores] * 2, rtol=1e-6)
    # mmpose's back-transform: x = x_hm * size_w / 48 + cx - size_w / 2, same for y;
    # box 1: centre (130, 150), size (187.5, 250); box 2: centre (340, 100), size (112.5, 150).
    x_hm, y_hm = 10.0 + np.arange(NUM_KEYPOINTS), 5.0 + 3 * np.arange(NUM_KEYPOINTS)
    for person, (cx, cy, sw, sh) in zip(people.keypoints, [(130, 150, 187.5, 250), (340, 100, 112.5, 150)]):
        np.testing.assert_allclose(person[:, 0], x_hm * sw / HM_W + cx - sw / 2, atol=1e-3)
        np.testing.assert_allclose(person[:, 1], y_hm * sh / HM_H + cy - sh / 2, atol=1e-3)


def test_pipeline_without_boxes_returns_no_people():
    runner = FakeRunner(np.ones(NUM_KEYPOINTS), True)
    people = TopDownPipeline(lambda f: (np.zeros((0, 4)), np.zeros(0)), runner)(np.zeros((64, 64, 3), np.uint8))
    assert len(people) == 0 and not runner.batches and "detect" in people.timings


def test_bottomup_boxes_are_padded_keypoint_boxes():
    keypoints = np.zeros((1, NUM_KEYPOINTS, 3), np.float32)
    keypoints[0, :2] = [[10, 20, 0.9], [110, 220, 0.8]]
    detector = BottomUpBoxes(lambda frame: People.from_keypoints(keypoints, [0.7]), margin=0.1)
    boxes, scores = detector(np.zeros((8, 8, 3), np.uint8))
    np.testing.assert_allclose(boxes, [[0, 0, 120, 240]])
    np.testing.assert_allclose(scores, [0.7])


# ---------------------------------------------------------------- training targets and loss

def test_targets_gaussian_window_and_weights():
    torch = pytest.importorskip("torch")
    from pose_core.train.topdown_targets import render_topdown_targets

    keypoints = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    keypoints[0] = [41.0, 81.9, 2]       # -> heatmap pixel (int(10.25 + .5), int(20.475 + .5)) = (10, 20)
    keypoints[1] = [60.0, 60.0, 0]       # unlabelled
    keypoints[2] = [-60.0, 100.0, 1]     # window entirely left of the map
    keypoints[3] = [-20.0, 100.0, 1]     # mu_x = -5: window reaches column 1
    targets, weights = render_topdown_targets(keypoints, (HM_H, HM_W), (CROP_H, CROP_W), sigma=2.0)
    assert targets.shape == (NUM_KEYPOINTS, HM_H, HM_W)
    np.testing.assert_array_equal(weights[:4].numpy(), [1, 0, 0, 1])
    t0 = targets[0].numpy()
    assert t0[20, 10] == 1.0 and np.unravel_index(t0.argmax(), t0.shape) == (20, 10)
    assert t0[20, 11] == pytest.approx(np.exp(-1 / 8)) and t0[22, 8] == pytest.approx(np.exp(-8 / 8))
    assert t0[20, 16] > 0 and t0[20, 17] == 0 and t0[26, 10] > 0 and t0[27, 10] == 0
    assert targets[1].abs().sum() == 0 and targets[2].abs().sum() == 0
    assert targets[3, 25, 1] == pytest.approx(np.exp(-36 / 8)) and targets[3, :, 2:].sum() == 0
    batched, _ = render_topdown_targets(torch.from_numpy(keypoints)[None].repeat(2, 1, 1), (HM_H, HM_W))
    assert torch.equal(batched[1], targets)


def test_heatmap_weighting_loss_matches_a_hand_computed_value():
    torch = pytest.importorskip("torch")
    from pose_core.train.topdown_targets import heatmap_weighting_loss

    pred = torch.tensor([[[[0.5, 0.0]], [[0.2, 0.4]]]])      # (1, 2, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.5]]]])
    # joint 0: (0.5^2 x (1 + 1) + 0) = 0.5; joint 1: 0.2^2 x 1 + 0.1^2 x 1.5 = 0.055; 4 pixels
    assert heatmap_weighting_loss(pred, target).item() == pytest.approx((0.5 + 0.055) / 4)
    weight = torch.tensor([[1.0, 0.0]])
    assert heatmap_weighting_loss(pred, target, weight).item() == pytest.approx(0.5 / 4)
