"""The app's two threads: capture and inference.

Capture reads frames into a FrameSlot that keeps only the newest one; inference
takes it, runs the pipeline, draws the overlay and hands a finished FrameResult
to the UI thread through a queued Qt signal, so the UI thread only paints.
Models load in their own short thread and are swapped in before the next frame.
"""
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PyQt6.QtCore import QObject, pyqtSignal
from PyQt6.QtGui import QImage

from pose_core import registry
from pose_core.bottomup import DEFAULT_ZOOM
from pose_core.draw import draw_people
from pose_core.errors import PoseError
from pose_core.result import People, min_person_score_of
from pose_core.smoothing import PoseSmoother
from pose_core.tracking import PoseTracker
from pose_core.video import SafeVideoWriter, open_camera, open_video, read_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
LIVE_FALLBACK_FPS = 30.0  # for cameras that do not report a rate
POLL_S = 0.1              # how often idle threads look at their stop flags


@dataclass(frozen=True)
class SourceInfo:
    """What a capture opened. `source` is a camera index or a file path."""
    source: object
    label: str
    fps: float
    size: tuple          # (width, height)
    frame_count: int     # 0 when unknown (cameras)
    live: bool           # a camera: frames not taken in time are dropped
    still: bool = False  # a single image

    def as_dict(self):
        """The export's `source` header."""
        return {"path" if isinstance(self.source, str) else "camera": self.source, "fps": self.fps,
                "width": self.size[0], "height": self.size[1], "frame_count": self.frame_count}


@dataclass(frozen=True)
class Frame:
    index: int
    time_s: float        # position in the source (live: seconds since opening)
    image: np.ndarray    # BGR
    captured_at: float   # time.perf_counter() when read: the start of end-to-end latency
    source_id: int
    lap: int = 0         # how many times a looping file has started over


@dataclass(frozen=True)
class DrawOptions:
    min_score: float = 0.2
    keypoints: bool = True
    limbs: bool = True
    boxes: bool = False
    track: bool = True   # give people ids across frames
    smooth: bool = True   # One Euro filter: on by default for video and camera
    zoom: bool = False    # bottom-up models: the zoom pass on small people (BottomUpPipeline.zoom)


@dataclass(frozen=True)
class FrameResult:
    frame: Frame
    people: People
    image: np.ndarray    # annotated BGR
    qimage: QImage       # the same pixels, ready to paint
    model: Optional[str]
    fresh: bool          # False when an already shown frame was redrawn or re-run
    zoom: Optional[float] = None  # the zoom factor the model ran with, if it has the option


class FrameSlot:
    """Holds at most one frame; a new frame replaces one nobody took (a dropped frame)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._frame = None

    def put(self, frame):
        with self._cond:
            self._frame = frame
            self._cond.notify_all()

    def take(self, timeout):
        """The newest frame, or None if none came within `timeout` seconds."""
        with self._cond:
            if self._frame is None:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def wait_taken(self, timeout):
        """True once the slot is empty: lossless playback waits for it before the next put."""
        with self._cond:
            return self._cond.wait_for(lambda: self._frame is None, timeout)


def open_reader(source):
    """(iterable of BGR frames with .close(), SourceInfo) for a camera index or a file path."""
    if isinstance(source, int):
        camera = open_camera(source)
        fps = camera.fps or LIVE_FALLBACK_FPS
        return camera, SourceInfo(source, f"camera {source}", fps, tuple(camera.size), 0, live=True)
    path = Path(source)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        image = read_image(path)
        size = (image.shape[1], image.shape[0])
        return _StillImage(image), SourceInfo(str(path), path.name, 0.0, size, 1, live=False, still=True)
    video = open_video(path)
    return video, SourceInfo(str(path), path.name, video.fps or LIVE_FALLBACK_FPS, tuple(video.size),
                             video.frame_count or 0, live=False)


class _StillImage:
    def __init__(self, image):
        self.image = image

    def __iter__(self):
        return iter([self.image])

    def close(self):
        pass


class CaptureThread(QObject):
    """Reads one source into the slot. A live source is read continuously and stale frames
    are dropped; a file plays at its own rate (dropping what inference misses) or, with
    realtime off, as fast as inference takes every frame. With `loop` on, a file that
    reaches its end is opened again and plays on from its first frame."""

    opened = pyqtSignal(object)  # SourceInfo
    failed = pyqtSignal(str)
    ended = pyqtSignal()

    def __init__(self, source, slot, source_id, realtime=True, paused=False, loop=False):
        super().__init__()
        self.source = source
        self.slot = slot
        self.source_id = source_id
        self.realtime = realtime
        self.loop = loop         # read at each end of the file: may change while playing
        self._paused = paused
        self._steps = 0
        self._clock = None       # (perf_counter, frames played) that paced playback starts from
        self._reader = None      # the open source, read and closed by the capture thread
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        """Ask the thread to end; it closes its source itself, so this never blocks."""
        self._stop.set()
        self._wake.set()

    def join(self, timeout):
        self._thread.join(timeout)

    def set_paused(self, paused):
        self._paused = paused
        self._steps = 0
        self._clock = None
        self._wake.set()

    def set_realtime(self, realtime):
        self.realtime = realtime
        self._clock = None
        self._wake.set()

    def step(self):
        """Publish exactly one more frame while paused."""
        self._steps += 1
        self._wake.set()

    def _run(self):
        try:
            self._reader, info = open_reader(self.source)
        except PoseError as e:
            self.failed.emit(str(e))
            return
        self.opened.emit(info)
        try:
            self._play(info)
        except PoseError as e:
            self.failed.emit(str(e))
        finally:
            self._reader.close()

    def _play(self, info):
        started = time.perf_counter()
        lap, played = 0, 0   # played: frames of earlier laps, so real-time pacing runs on across a wrap
        while True:
            for index, image in enumerate(self._reader):
                turn = self._wait_turn(info, played + index)
                if turn is _STOP:
                    return
                if turn is _DROP:
                    continue
                now = time.perf_counter()
                time_s = now - started if info.live else (index / info.fps if info.fps else 0.0)
                self.slot.put(Frame(index, time_s, image, now, self.source_id, lap))
                if not info.live and not self.realtime:
                    while not self.slot.wait_taken(POLL_S):
                        if self._stop.is_set():
                            return
            if self._stop.is_set():
                return
            if info.live:
                self.failed.emit(f"{info.label} stopped delivering frames (unplugged or taken by another program?)")
                return
            if not self.loop or info.still:
                self.ended.emit()
                return
            # A VideoReader plays once: open the file again rather than the whole source.
            played += index + 1
            lap += 1
            reader, self._reader = self._reader, open_reader(self.source)[0]
            reader.close()

    def _wait_turn(self, info, index):
        """Block until the `index`-th frame played may be published: _PUBLISH, _DROP or _STOP.

        While paused a live source keeps being read and its frames dropped, so that
        resuming shows a current frame; a file waits.
        """
        while not self._stop.is_set():
            if info.still:
                return _PUBLISH
            if self._paused:
                if self._steps:
                    self._steps -= 1
                    return _PUBLISH
                if info.live:
                    return _DROP
                self._wait(POLL_S)
                continue
            if info.live or not self.realtime:
                return _PUBLISH
            if self._clock is None:
                self._clock = (time.perf_counter(), index)
            start, first = self._clock
            delay = start + (index - first) / info.fps - time.perf_counter()
            if delay <= 0:
                return _PUBLISH
            self._wait(delay)
        return _STOP

    def _wait(self, seconds):
        self._wake.wait(seconds)
        self._wake.clear()


_PUBLISH, _DROP, _STOP = object(), object(), object()


class InferenceWorker(QObject):
    """Runs the current model on the newest frame and draws the overlay.

    `load_pipeline(name) -> pipeline` is the hook that builds models (the registry by
    default; tests pass fixed fake pipelines). Everything it delivers for the current
    source is kept for the keypoint export, and written to the recording if one is on.
    """

    result_ready = pyqtSignal(object)       # FrameResult
    model_ready = pyqtSignal(str)
    model_failed = pyqtSignal(str, str)     # name, message
    failed = pyqtSignal(str)

    def __init__(self, slot, load_pipeline: Callable = registry.load_pipeline):
        super().__init__()
        self.slot = slot
        self.options = DrawOptions()
        self.model = None            # name of the running pipeline
        self._load_pipeline = load_pipeline
        self._pipeline = None
        self._pending = None         # (name, pipeline) loaded and waiting for the next frame
        self._load_id = 0
        self._source_id = 0
        self._records = {}           # frame index -> (time_s, People), for the export
        self._recording = None
        self._last = None            # the FrameResult shown last
        self._refresh = False        # redraw (or re-run, after a model swap) the last frame
        self._last_error = None
        self._tracker = self._smoother = None
        self._lap = 0                # the lap of a looping file that tracking and smoothing follow
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)

    # ------------------------------------------------------------ UI thread

    def start(self):
        self._thread.start()

    def stop(self, timeout=2.0):
        self._stop.set()
        self._thread.join(timeout)
        self.stop_recording()

    def set_model(self, name):
        """Load `name` in the background; the running model keeps going until it is ready."""
        with self._lock:
            self._load_id += 1
            load_id = self._load_id
        threading.Thread(target=self._load, args=(name, load_id), name="model-load", daemon=True).start()

    def set_options(self, **changes):
        self.options = replace(self.options, **changes)
        self._refresh = True

    def new_source(self, source_id):
        """Forget the previous source's frames; frames of other sources are ignored from now on."""
        with self._lock:
            self._source_id = source_id
            self._records = {}
            self._last = None
            self._tracker = self._smoother = None
            self._lap = 0

    def records(self):
        """[(frame index, time_s, People)] of every frame shown so far, in frame order."""
        with self._lock:
            return [(index, *self._records[index]) for index in sorted(self._records)]

    def start_recording(self, path, fps, size):
        writer = SafeVideoWriter(path, fps, size)
        with self._lock:
            self._recording = Recording(writer, fps)

    def stop_recording(self):
        """Finish the recording (the file appears under its name); None when none was on."""
        with self._lock:
            recording, self._recording = self._recording, None
        if recording is None:
            return None
        recording.writer.close()
        return recording.writer

    # ------------------------------------------------------------ worker threads

    def _load(self, name, load_id):
        try:
            pipeline = self._load_pipeline(name)
        except Exception as e:  # a broken model must not take the app down
            if load_id == self._load_id:
                self.model_failed.emit(name, _one_line(e))
            return
        with self._lock:
            if load_id == self._load_id:
                self._pending = (name, pipeline)

    def _run(self):
        while not self._stop.is_set():
            self._swap_pipeline()
            frame = self.slot.take(POLL_S)
            try:
                if frame is not None:
                    if frame.source_id == self._source_id:
                        self._refresh = False
                        self._process(frame, None)
                elif self._refresh and self._last is not None:
                    self._refresh = False
                    self._process(self._last.frame, self._last)
            except Exception as e:  # report, keep running: the next frame may work
                if not isinstance(e, PoseError):
                    traceback.print_exc()
                self._report(_one_line(e))

    def _swap_pipeline(self):
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self.model, self._pipeline = pending
            self._refresh = True
            self.model_ready.emit(self.model)

    def _process(self, frame, previous):
        """Run, draw and deliver `frame`; `previous` is its earlier result when it is redrawn."""
        options, model = self.options, self.model
        zoomable = hasattr(self._pipeline, "zoom")  # bottom-up pipelines
        zoom = DEFAULT_ZOOM if options.zoom and zoomable else None
        rerun = previous is None or previous.model != model or previous.zoom != zoom
        if not rerun:
            people = previous.people
        elif self._pipeline is None:
            people = People.empty()
        else:
            if zoomable:
                self._pipeline.zoom = zoom
            people = self._pipeline(frame.image).confident(min_person_score_of(self._pipeline))
            if previous is None:
                people = self._follow(people, frame, options)
        image = draw_people(frame.image.copy(), people, min_score=options.min_score, keypoints=options.keypoints,
                            limbs=options.limbs, boxes=options.boxes, ids=True)
        result = FrameResult(frame, people, image, to_qimage(image), model, previous is None, zoom)
        with self._lock:
            if frame.source_id != self._source_id:
                return
            self._last = result
            if rerun:
                self._records[frame.index] = (frame.time_s, people)
            if previous is None and self._recording is not None:
                self._recording.write(image, frame.time_s)
        self._last_error = None
        self.result_ready.emit(result)

    def _follow(self, people, frame, options):
        """Track ids and smooth keypoints across the frames of one source, as the options ask."""
        if frame.lap != self._lap:
            # A looping file jumped back to its start (and its clock to 0): ids and filters start over.
            self._lap = frame.lap
            self._tracker = self._smoother = None
        if not options.track:
            return people
        if self._tracker is None:
            self._tracker = PoseTracker()
        people = self._tracker.update(people, frame.time_s)
        if not options.smooth:
            return people
        if self._smoother is None:
            self._smoother = PoseSmoother()
        return self._smoother.update(people, frame.time_s)

    def _report(self, message):
        # One message per distinct error, not one per frame.
        if message != self._last_error:
            self._last_error = message
            self.failed.emit(message)


class Recording:
    """Writes annotated frames on the source's clock, so the recording plays at the source's
    speed: the place of frames inference skipped is filled by repeating the next one shown.
    A gap over a second (a paused camera) is not filled; a looping file's jump back to its
    start continues the recording from the frame written last."""

    def __init__(self, writer, fps):
        self.writer = writer
        self.fps = fps
        self.start_s = None
        self.last_s = None
        self.written = 0

    def write(self, image, time_s):
        if (self.start_s is None or time_s < self.last_s
                or (time_s - self.start_s) * self.fps - self.written > self.fps):
            self.start_s = time_s - self.written / self.fps
        self.last_s = time_s
        due = int(round((time_s - self.start_s) * self.fps)) + 1
        for _ in range(max(due - self.written, 0)):
            self.writer.write(image)
            self.written += 1


def to_qimage(bgr):
    bgr = np.ascontiguousarray(bgr)
    height, width = bgr.shape[:2]
    return QImage(bgr.data, width, height, 3 * width, QImage.Format.Format_BGR888).copy()


def _one_line(error):
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    return first if isinstance(error, PoseError) and first else f"{type(error).__name__}: {first}"
