"""Input frame checks: whatever a reader or a caller hands in -> contiguous BGR uint8."""
import cv2
import numpy as np

from .errors import InputError

MIN_SIDE = 8          # smaller frames cannot hold a person at any network stride
MAX_SIDE = 16384      # larger is a corrupt header or a mistake, not a photo
MAX_ASPECT = 16       # wider than a 360-degree panorama strip: not a frame


def as_bgr(frame):
    """H x W (gray), H x W x 1, H x W x 3 (BGR) or H x W x 4 (BGRA) -> contiguous BGR uint8.

    uint8 is used as is, uint16 is scaled by 1/257, and float frames are read as
    0..1 when no value exceeds 1, else as 0..255 (NaN becomes 0). Anything else
    raises InputError with a one-line message.
    """
    if frame is None:
        raise InputError("no frame: the image or video frame could not be read")
    if not isinstance(frame, np.ndarray):
        raise InputError(f"a frame must be a numpy array, not {type(frame).__name__}")
    if frame.size == 0:
        raise InputError(f"empty frame (shape {frame.shape})")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
        raise InputError(f"unsupported frame shape {frame.shape}: expected H x W, or H x W x 1, 3 or 4 channels")
    h, w = frame.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"frame too small: {w}x{h} pixels, at least {MIN_SIDE}x{MIN_SIDE} needed")
    if max(h, w) > MAX_SIDE:
        raise InputError(f"frame too large: {w}x{h} pixels, at most {MAX_SIDE} on a side")
    if max(h, w) > MAX_ASPECT * min(h, w):
        raise InputError(f"frame shape {w}x{h} is too elongated (more than {MAX_ASPECT}:1)")
    frame = np.ascontiguousarray(_to_uint8(frame))
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def _to_uint8(frame):
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype == np.uint16:
        return (frame // 257).astype(np.uint8)
    if np.issubdtype(frame.dtype, np.floating):
        frame = np.nan_to_num(frame.astype(np.float32, copy=False), nan=0.0)
        if frame.max() <= 1.0:
            frame = frame * 255.0
        return np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    raise InputError(f"unsupported frame type {frame.dtype}: expected uint8, uint16 or float")
