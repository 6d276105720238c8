"""Keypoint smoothing with the One Euro filter (Casiez, Roussel and Vogel, CHI 2012).

A first-order low-pass filter whose cutoff rises with speed: slow movement is
smoothed hard (little jitter), fast movement passes with little lag.
cutoff = min_cutoff + beta * |smoothed derivative|, in Hz, with time stamps in seconds.
"""
import numpy as np

from .result import People


def smoothing_factor(dt, cutoff):
    """Exponential smoothing weight of the new sample for a low-pass at `cutoff` Hz."""
    tau = 1.0 / (2 * np.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Element-wise One Euro filter over arrays of a fixed shape.

    The first sample (and the first after `reset`) passes through unchanged. A sample
    whose time stamp is not later than the previous one changes nothing but the reset
    elements, which take its value.
    """

    def __init__(self, min_cutoff=1.0, beta=0.0, d_cutoff=1.0):
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self._x = None        # last output; NaN marks elements that start afresh
        self._dx = None       # smoothed derivative, units per second
        self._time = None

    def __call__(self, x, time_s):
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x = np.full(x.shape, np.nan)
            self._dx = np.zeros(x.shape)
        fresh = np.isnan(self._x)
        if self._time is not None and time_s > self._time:
            dt = time_s - self._time
            a_d = smoothing_factor(dt, self.d_cutoff)
            dx = a_d * (x - self._x) / dt + (1 - a_d) * self._dx
            a = smoothing_factor(dt, self.min_cutoff + self.beta * np.abs(dx))
            self._x = np.where(fresh, x, a * x + (1 - a) * self._x)
            self._dx = np.where(fresh, 0.0, dx)
            self._time = time_s
        else:
            self._x = np.where(fresh, x, self._x)
            self._time = time_s if self._time is None else self._time
        return self._x.copy()

    def reset(self, mask=None):
        """Restart the elements where `mask` is true (all when None) from their next sample."""
        if self._x is None:
            return
        if mask is None:
            mask = np.ones(self._x.shape, dtype=bool)
        self._x[mask] = np.nan
        self._dx[mask] = 0.0


class PoseSmoother:
    """One Euro filter on the x, y of each tracked person's keypoints.

    State is kept per track id and dropped for ids absent from a frame, so a person
    who comes back starts afresh. A keypoint scored below `keypoint_threshold` passes
    through unsmoothed and its filter restarts: it may be a guess far from the last
    seen position, and smoothing towards a stale position would drag the next good one.
    People without track ids pass through unchanged (and end every track).
    Scores and boxes are never altered.
    """

    def __init__(self, min_cutoff=1.0, beta=0.01, d_cutoff=1.0, keypoint_threshold=0.2):
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.keypoint_threshold = keypoint_threshold
        self._filters = {}    # track id -> OneEuroFilter over (17, 2)

    def reset(self):
        self._filters = {}

    def update(self, people: People, time_s: float) -> People:
        if people.track_ids is None:
            self._filters = {}
            return people
        keypoints = people.keypoints.copy()
        filters = {}
        for i, track_id in enumerate(people.track_ids.tolist()):
            one_euro = self._filters.get(track_id) or OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff)
            raw = keypoints[i, :, :2]
            low = np.broadcast_to((keypoints[i, :, 2] < self.keypoint_threshold)[:, None], raw.shape)
            keypoints[i, :, :2] = np.where(low, raw, one_euro(raw, time_s))
            one_euro.reset(low)
            filters[track_id] = one_euro
        self._filters = filters
        return People(keypoints, people.scores, people.boxes, people.track_ids, people.timings)
