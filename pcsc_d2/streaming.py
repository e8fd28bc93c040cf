"""Streaming a video through PCSC with bounded memory: clips, delayed drawing, tube output.

Used by :mod:`pcsc_d2.demo`. Frames are read one at a time; a frame is kept only while a clip
still needs it (K frames around each processed key frame, and the frame after for its flow) or
while it waits to be drawn. The number of frames held is therefore bounded by
``K + batch * every + delay * every`` (a few dozen), whatever the video's length.
"""
import json
import logging
import os
import tempfile
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import cv2
import numpy as np
import torch

from pcsc_d2.data.datasets import clip_frame_indices
from pcsc_d2.data.flow import compute_flow, encode_flow, make_flow_estimator
from pcsc_d2.tubes.linking import OnlineLinker, Tube
from pcsc_d2.utils.io import atomic_open, give_default_permissions
from pcsc_d2.utils.visualize import draw_boxes

__all__ = ["ClipBuffer", "DelayedDrawer", "TubeWriter", "VideoSink"]

logger = logging.getLogger(__name__)


class ClipBuffer:
    """Holds the frames of a stream that pending clips still need, and builds those clips.

    Frames arrive with :meth:`push`; :meth:`ready` returns the processed key frames whose clip
    is complete (their K frames and, for each, the next frame its flow needs), and
    :meth:`clip` gives their RGB and flow clips, resized for the model.

    Args:
        num_frames: K, frames per clip.
        every: process every ``every``-th frame (1, 1 + every, ...).
        resize: maps an (H, W, 3) image to the model's input size.
        flow_method: "dis" or "tvl1".
    """

    def __init__(self, num_frames: int, every: int,
                 resize: Callable[[np.ndarray], np.ndarray], flow_method: str = "dis"):
        self.k, self.every, self.resize = num_frames, every, resize
        self.estimator = make_flow_estimator(flow_method)
        self.frames: Dict[int, np.ndarray] = {}  # index -> full-size RGB frame
        self._rgb: Dict[int, np.ndarray] = {}  # index -> resized RGB
        self._flow: Dict[int, np.ndarray] = {}  # index -> resized flow image (i -> i+1)
        self.count = 0  # frames pushed
        self.ended = False
        self.next_key = 1  # the next key frame to process
        self.max_held = 0

    def push(self, frame: np.ndarray) -> None:
        """Add the next frame (H, W, 3) uint8 RGB."""
        self.count += 1
        self.frames[self.count] = frame
        self.max_held = max(self.max_held, self.held())

    def end(self) -> None:
        """The stream has ended: clips are clamped to its last frame."""
        self.ended = True

    def held(self) -> int:
        """Images held: full-size frames plus resized RGB and flow images."""
        return len(self.frames) + len(self._rgb) + len(self._flow)

    def ready(self) -> List[int]:
        """Key frames whose clips can be built now, in order; they count as processed."""
        out = []
        # A clip reaches K - 1 - K // 2 frames past its key frame; their flow needs one more.
        lookahead = self.k - self.k // 2
        while self.next_key <= self.count and (self.ended or
                                               self.next_key + lookahead <= self.count):
            out.append(self.next_key)
            self.next_key += self.every
        return out

    def _flow_image(self, i: int, n: int) -> np.ndarray:
        if i not in self._flow:
            if n == 1:
                flow = np.zeros(self.frames[1].shape[:2] + (2,), np.float32)
            else:
                # Image i is the flow i -> i+1; the last frame repeats the flow before it.
                src = min(i, n - 1)
                flow = compute_flow(self.frames[src], self.frames[src + 1],
                                    estimator=self.estimator)
            self._flow[i] = self.resize(encode_flow(flow))
        return self._flow[i]

    def clip(self, key: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The (3, K, h, w) uint8 RGB and flow clips centred on ``key``."""
        n = self.count if self.ended else key + self.k  # clamp only at the true end
        idx = clip_frame_indices(key, n, self.k)
        for i in idx:
            if i not in self._rgb:
                self._rgb[i] = self.resize(self.frames[i])
        rgb = np.stack([self._rgb[i] for i in idx])
        flow = np.stack([self._flow_image(i, n) for i in idx])
        self.max_held = max(self.max_held, self.held())
        return (torch.from_numpy(rgb.transpose(3, 0, 1, 2).copy()),
                torch.from_numpy(flow.transpose(3, 0, 1, 2).copy()))

    def release(self, keep_from: int) -> None:
        """Drop what no future clip needs, keeping full-size frames from ``keep_from`` on
        (those still to be drawn)."""
        # The next clip starts K // 2 before its key frame; the flow of its last frame may
        # repeat the one before (at the video's end), hence one frame more.
        first_needed = self.next_key - self.k // 2 - 1
        for cache, start in ((self.frames, min(first_needed, keep_from)),
                             (self._rgb, first_needed), (self._flow, first_needed)):
            for i in [i for i in cache if i < start]:
                del cache[i]


class DelayedDrawer:
    """Draws frames a fixed number of processed frames after they were linked.

    At a frame f drawn once linking has reached frame f + ``delay_frames``, each tube's box is
    the one the finished tube will have there (the gap-filling of linking is known by then), and
    a tube is drawn once it has ``min_length`` matched boxes and a running score of at least
    ``score_thresh``: the drawn video shows the online tubes (before temporal refinement).
    """

    def __init__(self, class_names: Sequence[str], delay_frames: int, min_length: int,
                 score_thresh: float):
        self.names, self.delay = list(class_names), delay_frames
        self.min_length, self.score_thresh = min_length, score_thresh
        self.next_frame = 1
        self._ended: List[Tube] = []  # ended tubes that still cover frames to draw

    def add_ended(self, tubes: Sequence[Tube]) -> None:
        self._ended.extend(t for t in tubes if t.score >= self.score_thresh)

    def _items(self, frame: int, linker: OnlineLinker) -> List[Dict]:
        items = []
        for t in linker.live_tubes:
            box = t.box_at(frame, linker.opts.gap_fill)
            if box is not None and len(t.frames) >= self.min_length and (
                    t.score >= self.score_thresh):
                items.append({"box": np.asarray(box), "label": t.label, "score": t.score})
        for t in self._ended:
            if t.frames[0] <= frame <= t.frames[-1]:
                items.append({"box": t.boxes[frame - t.frames[0]], "label": t.label,
                              "score": t.score})
        return items

    def draw_ready(self, frames: Dict[int, np.ndarray], linked_up_to: int, linker: OnlineLinker,
                   final: bool = False) -> Iterator[np.ndarray]:
        """Yield the drawn frames that can be drawn now (all of them when ``final``)."""
        last = max(frames) if final and frames else linked_up_to - self.delay
        while self.next_frame <= last and self.next_frame in frames:
            f = self.next_frame
            yield draw_boxes(frames[f], self._items(f, linker), self.names)
            self.next_frame += 1
        self._ended = [t for t in self._ended if t.frames[-1] >= self.next_frame]


class VideoSink:
    """Writes RGB frames to an .mp4/.avi through a temporary file renamed at :meth:`close`."""

    FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}

    def __init__(self, path: str, fps: float, size: Tuple[int, int]):
        self.path = path
        ext = os.path.splitext(path)[1].lower()
        fd, self.tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                        prefix="." + os.path.basename(path) + ".", suffix=ext)
        os.close(fd)
        self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*self.FOURCC[ext]), fps,
                                      size)
        if not self.writer.isOpened():
            self.abort()
            raise IOError(f"{path}: OpenCV cannot write {ext} video here")
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        self.writer.release()
        give_default_permissions(self.tmp)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.writer.release()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


class TubeWriter:
    """Collects finished tubes on disk as they come (one JSON line each) and writes them as one
    JSON list at :meth:`close`, atomically. Tubes under ``score_thresh`` are dropped, except the
    best ``fallback`` of them when no tube reaches it."""

    def __init__(self, path: str, class_names: Sequence[str], score_thresh: float,
                 fallback: int = 3):
        self.path, self.names = path, list(class_names)
        self.thresh, self.fallback = score_thresh, fallback
        fd, self.tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                        prefix="." + os.path.basename(path) + ".", suffix=".jsonl")
        self.lines = os.fdopen(fd, "w")
        self.count = 0
        self._best: List[Tuple[float, str]] = []  # the best tubes under the threshold

    def _line(self, tube: Tube) -> str:
        d = tube.to_json()
        d["class"] = self.names[tube.label] if tube.label < len(self.names) else str(tube.label)
        return json.dumps(d)

    def add(self, tubes: Sequence[Tube]) -> None:
        for t in tubes:
            if t.score >= self.thresh:
                self.lines.write(self._line(t) + "\n")
                self.count += 1
            elif not self.count:
                self._best = sorted(self._best + [(t.score, self._line(t))],
                                    key=lambda x: -x[0])[: self.fallback]

    def close(self) -> int:
        """Write the JSON list; returns the number of tubes in it."""
        self.lines.close()
        with open(self.tmp) as lines, atomic_open(self.path, "w") as out:
            out.write("[")
            n = 0
            for line in lines:
                out.write(("," if n else "") + line.rstrip("\n"))
                n += 1
            if not n:
                out.write(",".join(line for _, line in self._best))
                n = len(self._best)
            out.write("]\n")
        os.remove(self.tmp)
        return n

    def abort(self) -> None:
        self.lines.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
