"""Reading video files frame by frame, with errors that name the file.

Shared by dataset preparation (:mod:`pcsc_d2.data.prepare`) and the streaming demo
(:mod:`pcsc_d2.demo`). Frames are decoded one at a time, so memory does not depend on a
video's length. Containers report frame counts unreliably (OpenCV gives negative counts for
some MP4 files), so every count here is a count of decoded frames.
"""
import dataclasses
import logging
import math
import os
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from pcsc_d2.utils.errors import CorruptFileError, require_file
from pcsc_d2.utils.io import atomic_open

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoInfo",
    "count_frames",
    "find_videos",
    "iter_frames",
    "open_video",
    "resize_short_side",
    "write_jpeg",
]

logger = logging.getLogger(__name__)

# Files taken for videos when a folder is searched (any container OpenCV's FFmpeg reads).
VIDEO_EXTENSIONS = (
    ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
    ".ts", ".ogv",
)
# Used when a container stores no usable frame rate.
DEFAULT_FPS = 25.0


@dataclasses.dataclass
class VideoInfo:
    """What decoding a video told: frames decoded (up to a limit), frame size and rate."""

    path: str
    nframes: int
    width: int
    height: int
    fps: float


def open_video(path: str) -> Tuple[cv2.VideoCapture, float]:
    """Open a video file for decoding.

    Args:
        path: any file OpenCV's video backends read.

    Returns:
        the capture and its frame rate (``DEFAULT_FPS`` when the container has none).

    Raises:
        MissingFileError: the file does not exist. CorruptFileError: it is empty or no backend
            opens it.
    """
    require_file(path, "video")
    if os.path.getsize(path) == 0:
        raise CorruptFileError(f"{path}: empty file, expected a video")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise CorruptFileError(f"{path}: cannot open the video (not a format OpenCV decodes)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not (math.isfinite(fps) and 0 < fps < 1000):
        logger.warning("%s: no usable frame rate in the container (%r): using %g fps",
                       path, fps, DEFAULT_FPS)
        fps = DEFAULT_FPS
    return cap, float(fps)


def iter_frames(path: str, max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """Decode a video's frames one at a time.

    Args:
        path: the video file.
        max_frames: stop after this many frames (None: all).

    Yields:
        (H, W, 3) uint8 RGB frames.

    Raises:
        CorruptFileError: the file cannot be opened or not even its first frame decodes.
    """
    cap, _ = open_video(path)
    count = 0
    try:
        while max_frames is None or count < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
    if count == 0:
        raise CorruptFileError(f"{path}: no frame could be decoded")


def count_frames(path: str, max_frames: Optional[int] = None) -> VideoInfo:
    """Decode a video to count its frames (up to ``max_frames``) and read its size and rate.

    Raises:
        CorruptFileError: the file cannot be opened or not even its first frame decodes.
    """
    cap, fps = open_video(path)
    count, size = 0, None
    try:
        ok, bgr = cap.read()
        if ok:
            count, size = 1, bgr.shape[:2]
            # grab() demuxes and decodes without the colour conversion of read().
            while (max_frames is None or count < max_frames) and cap.grab():
                count += 1
    finally:
        cap.release()
    if size is None:
        raise CorruptFileError(f"{path}: no frame could be decoded")
    return VideoInfo(path, count, int(size[1]), int(size[0]), fps)


def resize_short_side(frame: np.ndarray, short_side: Optional[int]) -> np.ndarray:
    """Resize (H, W, 3) so that its short side is ``short_side`` (None: unchanged)."""
    h, w = frame.shape[:2]
    if not short_side or min(h, w) == short_side:
        return frame
    scale = short_side / min(h, w)
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(frame, size, interpolation=interp)


def write_jpeg(path: str, rgb: np.ndarray, quality: int = 95) -> None:
    """Write an (H, W, 3) uint8 RGB image as a JPEG, atomically."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise IOError(f"{path}: cannot encode the frame as JPEG")
    with atomic_open(path, "wb") as f:
        f.write(buf.tobytes())


def find_videos(root: str) -> Dict[str, List[str]]:
    """The video files under ``root`` (recursively), by key.

    Returns:
        {key: [files]} where each file appears under its path relative to ``root`` without the
        extension (e.g. "Class/v_x") and, if different, under its bare stem ("v_x").
    """
    found: Dict[str, List[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in VIDEO_EXTENSIONS or name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")
            for key in dict.fromkeys((rel, stem)):
                found.setdefault(key, []).append(path)
    return found
