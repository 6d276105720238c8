import numpy as np
import pytest

from pose_core.result import People
from pose_core.smoothing import OneEuroFilter, PoseSmoother

RATE = 30.0


def run(one_euro, signal):
    return np.array([one_euro(x, i / RATE) for i, x in enumerate(signal)])


def step_response(min_cutoff, beta=0.0):
    signal = np.r_[np.zeros(10), np.ones(150)]
    return run(OneEuroFilter(min_cutoff, beta), signal)[10:]


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_step_converges_without_overshoot(beta):
    out = step_response(1.0, beta)
    assert out[-1] == pytest.approx(1.0, abs=1e-3)
    assert np.all(out <= 1.0) and np.all(np.diff(out) >= 0)
    assert 0 < out[0] < 1          # it is smoothed, not passed through


def test_step_lag_grows_with_lower_min_cutoff():
    def samples_to_90_percent(min_cutoff):
        return int(np.argmax(step_response(min_cutoff) >= 0.9))
    assert samples_to_90_percent(0.3) > samples_to_90_percent(1.0) > samples_to_90_percent(3.0)


def test_ramp_lag_shrinks_with_higher_beta():
    ramp = 100.0 * np.arange(90) / RATE     # 100 units per second

    def final_lag(beta):
        return ramp[-1] - run(OneEuroFilter(1.0, beta), ramp)[-1]
    assert final_lag(0.0) > final_lag(0.01) > final_lag(0.1) > 0


def test_array_filter_matches_scalar_filters():
    rng = np.random.default_rng(0)
    signals = rng.normal(0, 1, (40, 3)).cumsum(axis=0)
    together = run(OneEuroFilter(1.0, 0.05), signals)
    for j in range(3):
        np.testing.assert_allclose(together[:, j], run(OneEuroFilter(1.0, 0.05), signals[:, j]))


def test_reset_restarts_only_masked_elements():
    one_euro = OneEuroFilter()
    one_euro(np.zeros(2), 0.0)
    one_euro.reset(np.array([True, False]))
    out = one_euro(np.ones(2), 1 / RATE)
    assert out[0] == 1.0 and 0 < out[1] < 1


def test_repeated_time_stamp_changes_nothing():
    one_euro = OneEuroFilter()
    one_euro(np.zeros(2), 0.0)
    first = one_euro(np.ones(2), 0.1)
    np.testing.assert_array_equal(one_euro(np.full(2, 5.0), 0.1), first)


def jittered_person(rng, track_id):
    keypoints = np.concatenate([rng.normal(100, 2, (1, 17, 2)), np.ones((1, 17, 1))], axis=2)
    return People.from_keypoints(keypoints, [1.0], track_ids=[track_id])


def test_smoother_reduces_jitter_of_a_still_person():
    rng = np.random.default_rng(1)
    smoother = PoseSmoother()
    raw, smooth = [], []
    for i in range(60):
        people = jittered_person(rng, 7)
        raw.append(people.keypoints[0, :, :2])
        smooth.append(smoother.update(people, i / RATE).keypoints[0, :, :2])
    assert np.std(smooth[20:], axis=0).mean() < 0.5 * np.std(raw[20:], axis=0).mean()


def test_low_score_keypoints_pass_through_and_restart():
    smoother = PoseSmoother(keypoint_threshold=0.2)
    still = People.from_keypoints(np.full((1, 17, 3), 1.0), [1.0], track_ids=[3])
    smoother.update(still, 0.0)
    moved = People.from_keypoints(np.full((1, 17, 3), 1.0), [1.0], track_ids=[3])
    moved.keypoints[0, :, :2] = 50.0
    moved.keypoints[0, 0, 2] = 0.05                     # the nose is a guess this frame
    out = smoother.update(moved, 1 / RATE).keypoints[0]
    assert np.all(out[0, :2] == 50.0)
    assert np.all(out[1:, :2] < 50.0)
    moved.keypoints[0, 0, 2] = 1.0                      # confident again: its filter starts afresh
    again = smoother.update(moved, 2 / RATE).keypoints[0]
    assert np.all(again[0, :2] == 50.0) and np.all(again[1:, :2] < 50.0)


OTHER_PERSON = People.from_keypoints(np.ones((1, 17, 3)), [1.0], track_ids=[2])


@pytest.mark.parametrize("gap", [People.empty(), OTHER_PERSON])
def test_state_is_dropped_when_a_track_disappears(gap):
    smoother = PoseSmoother()
    a = People.from_keypoints(np.full((1, 17, 3), 1.0), [1.0], track_ids=[1])
    smoother.update(a, 0.0)
    smoother.update(gap, 1 / RATE)
    far = People.from_keypoints(np.full((1, 17, 3), 1.0), [1.0], track_ids=[1])
    far.keypoints[0, :, :2] = 80.0
    np.testing.assert_array_equal(smoother.update(far, 2 / RATE).keypoints, far.keypoints)


def test_untracked_people_pass_through():
    people = People.from_keypoints(np.full((2, 17, 3), 1.0), [1.0, 1.0])
    assert PoseSmoother().update(people, 0.0) is people
