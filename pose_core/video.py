"""Video, camera and image input; video and image output that never leaves half-written files.

Readers yield OpenCV BGR frames. Writers write to a hidden temporary name beside the target
and rename it into place on `close()`; `abort()` (or leaving the `with` block on an exception
or Ctrl-C) deletes the temporary file, so the final name only ever holds a complete file.
"""
import math
import os
import queue
import threading
import time
import uuid
from pathlib import Path

# FFmpeg and OpenCV print their own warnings for corrupt files and absent cameras; our
# errors already say what went wrong in one line. setdefault keeps a user's own setting.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
import cv2  # noqa: E402

from .errors import InputError, PoseError, PublishedOnSuccess  # noqa: E402
from .frames import as_bgr  # noqa: E402

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")
FALLBACK_FPS = 30.0
_END = object()  # end-of-stream marker in the decode-ahead and write-behind queues


class VideoReader:
    """Frames of an opened capture. Iterate once; `fps`, `size` (w, h), `frame_count` (0 if unknown).

    With `prefetch` > 0 a thread decodes up to that many frames ahead, so decoding overlaps
    the network (OpenCV and ONNX Runtime both release the GIL). `decode_seconds` and
    `frames_decoded` count the decoding after the first frame, on whichever thread did it.
    """

    def __init__(self, capture, first_frame, fps, frame_count, source, prefetch=0):
        self.source = source
        self.fps = fps
        self.size = (first_frame.shape[1], first_frame.shape[0])
        self.frame_count = frame_count
        self._capture = capture
        self._first_frame = first_frame
        self._prefetch = prefetch
        self._stop = threading.Event()
        self._thread = None
        self.decode_seconds = 0.0
        self.frames_decoded = 0

    def __iter__(self):
        frame, self._first_frame = self._first_frame, None
        if frame is None:
            return
        yield frame
        if not self._prefetch:
            while True:
                ok, frame = self._read()
                if not ok:
                    return
                yield frame
        frames = queue.Queue(self._prefetch)
        self._thread = threading.Thread(target=self._decode_ahead, args=(frames,), daemon=True)
        self._thread.start()
        while (frame := frames.get()) is not _END:
            yield frame

    def _decode_ahead(self, frames):
        while not self._stop.is_set():
            ok, frame = self._read()
            item = frame if ok else _END
            while not self._stop.is_set():  # time out so that close() is never blocked
                try:
                    frames.put(item, timeout=0.1)
                    break
                except queue.Full:
                    pass
            if not ok:
                return

    def _read(self):
        start = time.perf_counter()
        ok, frame = self._capture.read()
        self.decode_seconds += time.perf_counter() - start
        self.frames_decoded += ok
        return ok, frame

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._capture.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_video(path, prefetch=4):
    """A VideoReader for a video file; InputError if it is missing, unreadable or has no frames."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"video not found: {path}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise InputError(f"cannot read video {path}: not a video, corrupt or unsupported")
    frame_count = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    ok, first = capture.read()
    if not ok:
        capture.release()
        if frame_count == 0:
            raise InputError(f"video has no frames: {path}")
        raise InputError(f"cannot decode video {path}: corrupt or unsupported codec")
    return VideoReader(capture, first, _sane_fps(capture.get(cv2.CAP_PROP_FPS)), frame_count, str(path), prefetch)


def open_camera(index):
    """A VideoReader for camera `index` (no decode-ahead: a live view wants the newest frame)."""
    capture = cv2.VideoCapture(int(index))
    ok, first = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        capture.release()
        raise InputError(f"camera {index} cannot be opened")
    return VideoReader(capture, first, _sane_fps(capture.get(cv2.CAP_PROP_FPS)), 0, f"camera {index}")


def _sane_fps(fps):
    # Some containers and cameras report 0, NaN or a timebase such as 90000.
    return float(fps) if math.isfinite(fps) and 0 < fps <= 1000 else FALLBACK_FPS


def read_image(path):
    """A BGR uint8 image from any file OpenCV reads; grayscale and BGRA are converted."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"cannot read image {path}: not an image, corrupt or unsupported")
    return as_bgr(image)


def prepare_output(path):
    """Create the folder of output `path` if it is missing; PoseError if that is impossible."""
    path = Path(path)
    if path.is_dir():
        raise PoseError(f"output {path} is a folder, expected a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PoseError(f"cannot create output folder {path.parent}: {e.strerror}") from None
    return path


def _temporary_name(path):
    # Same folder so os.replace is atomic; the real suffix so OpenCV picks the container.
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.part{path.suffix}")


class SafeVideoWriter(PublishedOnSuccess):
    """An annotated-video writer (mp4v for .mp4/.m4v/.mov, MJPG for .avi) published on close().

    Odd frame sizes are accepted; the encoders drop the last odd row/column. With
    `write_behind` > 0 a thread encodes, up to that many frames behind `write`, so encoding
    overlaps the next frame's network (OpenCV releases the GIL); `write` then waits only
    when the queue is full, and a frame it was given must not change afterwards. An encoding
    error on that thread is raised, as a PoseError, by the next `write`, `flush` or `close`.
    `encode_seconds` is the time spent encoding, on whichever thread did it.
    """

    def __init__(self, path, fps, size, write_behind=0):
        self.path = prepare_output(path)
        codec = VIDEO_CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise PoseError(f"output video must end in {', '.join(VIDEO_CODECS)}, not '{self.path.name}'")
        self.size = tuple(int(v) for v in size)
        self.frames = 0
        self.encode_seconds = 0.0
        self._queue = self._thread = self._error = None
        self._tmp_path = _temporary_name(self.path)
        self._writer = cv2.VideoWriter(str(self._tmp_path), cv2.VideoWriter_fourcc(*codec), float(fps), self.size)
        if not self._writer.isOpened():
            self.abort()
            raise PoseError(f"cannot write video {self.path}")
        if write_behind > 0:
            self._queue = queue.Queue(write_behind)
            self._thread = threading.Thread(target=self._encode_behind, daemon=True)
            self._thread.start()

    def write(self, frame):
        if frame.shape[1::-1] != self.size:
            raise ValueError(f"frame size {frame.shape[1::-1]} differs from the video's {self.size}")
        self._raise_encoding_error()
        if self._queue is None:
            self._encode_or_keep_error(frame)
            self._raise_encoding_error()
        else:
            self._queue.put(frame)
        self.frames += 1

    def _encode(self, frame):
        start = time.perf_counter()
        self._writer.write(frame)
        self.encode_seconds += time.perf_counter() - start

    def _encode_or_keep_error(self, frame):
        try:
            self._encode(frame)
        except Exception as e:  # noqa: BLE001 (_raise_encoding_error raises it on the caller's thread)
            self._error = e

    def _encode_behind(self):
        while (frame := self._queue.get()) is not _END:
            if self._error is None:  # after an error the frames are only taken, so write never blocks
                self._encode_or_keep_error(frame)
            self._queue.task_done()

    def _raise_encoding_error(self):
        if self._error is not None:
            first_line = (str(self._error).strip().splitlines() or [type(self._error).__name__])[0]
            raise PoseError(f"cannot write video {self.path}: {first_line[:200]}")

    def flush(self):
        """Wait until every frame written so far is encoded."""
        if self._thread is not None:
            self._queue.join()
        self._raise_encoding_error()

    def _stop_encoding(self, drop_queued):
        """End the encoding thread, once it has encoded what it holds unless `drop_queued`."""
        if self._thread is None:
            return
        while drop_queued:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(_END)
        self._thread.join()
        self._thread = None

    def close(self):
        """Finish the file and move it to its final name. Does nothing once closed or aborted."""
        if self._writer is None:
            return
        self._stop_encoding(drop_queued=False)
        if self._error is not None:
            self.abort()
            self._raise_encoding_error()
        self._writer.release()
        self._writer = None
        if not self._tmp_path.is_file():
            raise PoseError(f"cannot write video {self.path}: the encoder produced no file")
        os.replace(self._tmp_path, self.path)

    def abort(self):
        """Drop the temporary file; the final path is left untouched."""
        if self._writer is not None:
            self._stop_encoding(drop_queued=True)
            self._writer.release()
            self._writer = None
        self._tmp_path.unlink(missing_ok=True)


def safe_write_image(path, image):
    """Encode `image` by the extension of `path` and write it atomically."""
    path = prepare_output(path)
    try:
        ok, data = cv2.imencode(path.suffix, image)
    except cv2.error:
        ok = False
    if not ok:
        raise PoseError(f"cannot write image {path}: use an extension such as .png or .jpg")
    tmp_path = _temporary_name(path)
    try:
        tmp_path.write_bytes(data.tobytes())
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise PoseError(f"cannot write image {path}: {e.strerror}") from None
        raise
