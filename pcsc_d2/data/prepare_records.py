"""Per-video records of ``python -m pcsc_d2.data.prepare`` and the GT file built from them.

A video's record ``<out>/.prepare/<video>.json`` is written (atomically) after its frames and
flow: its presence means the video is finished. It holds what decoding found (frame count, size
of the source and of the written frames, fps) and the options the video was prepared with; a
record with other options does not count. ``<video>.started.json`` marks a video in progress
with its options, so that an interrupted run resumed with other options starts that video over.
"""
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from pcsc_d2.utils.errors import InputError
from pcsc_d2.utils.io import atomic_save_json

from .annotation_formats import SourceAnnotations

__all__ = [
    "PrepareError",
    "build_gt",
    "load_record",
    "record_options",
    "remove_started",
    "scaled_tubes",
    "video_reach",
    "write_started",
]

RECORDS = ".prepare"


class PrepareError(InputError):
    """Several input problems found at once; ``lines`` holds one message per problem."""

    def __init__(self, lines: Sequence[str]):
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


def record_options(flow: str, max_frames: Optional[int], short_side: Optional[int]) -> Dict:
    """The options that decide a video's files (a record made with others is redone)."""
    return {"flow": flow, "max_frames": max_frames, "short_side": short_side}


def _path(out: str, video: str, suffix: str) -> str:
    return os.path.join(out, RECORDS, video + suffix)


def _read_json(path: str) -> Optional[Dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_record(out: str, video: str, options: Dict) -> Optional[Dict]:
    """The finished video's record, or None (absent, unreadable or made with other options)."""
    record = _read_json(_path(out, video, ".json"))
    if record is None or record.get("options") != options:
        return None
    return record


def write_started(out: str, video: str, options: Dict) -> bool:
    """Mark ``video`` as in progress; False when an earlier run started it with other options
    (or left no mark: its files, if any, cannot be trusted)."""
    path = _path(out, video, ".started.json")
    same = _read_json(path) == options
    if not same:
        atomic_save_json(options, path)
    return same


def remove_started(out: str, video: str) -> None:
    try:
        os.remove(_path(out, video, ".started.json"))
    except FileNotFoundError:
        pass


def video_reach(per_label: Dict[int, List[np.ndarray]]) -> int:
    """The last annotated frame of a video (0 when it has no tube)."""
    return max((int(t[:, 0].max()) for tubes in per_label.values() for t in tubes), default=0)


def scaled_tubes(ann: SourceAnnotations, video: str, record: Dict,
                 max_frames: Optional[int]) -> Dict[int, List[np.ndarray]]:
    """A video's tubes in the pixels of its written frames, within its frames.

    Boxes drawn on (w, h) frames (``ann.sizes``, default the decoded frames) are scaled to the
    written (W, H): the inclusive box x1..x2 covers [x1, x2 + 1), so x1' = x1 * W / w and
    x2' = (x2 + 1) * W / w - 1 (likewise y); the frame's edges stay its edges. The result is
    clipped to the frame. Rows past the video's last frame are cut when ``max_frames`` cut the
    video, else they are an error.

    Returns:
        {label: [(n, 5) float32 frame, x1, y1, x2, y2]}; tubes left empty are dropped.
    """
    n, width, height = record["nframes"], record["width"], record["height"]
    src_w, src_h = ann.sizes.get(video, (record["source_width"], record["source_height"]))
    reach = video_reach(ann.tubes[video])
    if reach > n and not (max_frames is not None and n == max_frames):
        raise InputError(f"{record['source']}: has {n} frames, but its annotations in "
                         f"{ann.source} reach frame {reach}")
    scale = np.array([width / src_w, height / src_h] * 2, np.float64)
    shift = np.array([0, 0, 1, 1], np.float64)
    limits = np.array([width - 1, height - 1] * 2, np.float64)
    out: Dict[int, List[np.ndarray]] = {}
    for label, tubes in ann.tubes[video].items():
        for t in tubes:
            t = np.asarray(t, np.float64)
            t = t[t[:, 0] <= n]
            if len(t) == 0:
                continue
            boxes = np.clip((t[:, 1:5] + shift) * scale - shift, 0, limits)
            out.setdefault(int(label), []).append(
                np.concatenate([t[:, :1], boxes], 1).astype(np.float32)
            )
    return out


def build_gt(ann: SourceAnnotations, present: Dict[str, str], out: str, options: Dict,
             splits: Tuple[List[List[str]], List[List[str]]]) -> Dict:
    """The GT dict of the prepared videos, from their records (boxes rescaled to the frames)."""
    gttubes, nframes, resolution, missing, problems = {}, {}, {}, [], []
    for key in sorted(present):
        record = load_record(out, key, options)
        if record is None:
            missing.append(key)
            continue
        try:
            gttubes[key] = scaled_tubes(ann, key, record, options["max_frames"])
        except InputError as e:
            problems.append(str(e))
        nframes[key] = record["nframes"]
        resolution[key] = (record["height"], record["width"])
    if missing:
        problems.append(
            f"{out}: {len(missing)} of the {len(present)} videos are not prepared yet (e.g. "
            f"{', '.join(missing[:3])}): run the shards that hold them, or prepare without "
            "--shard, before --merge"
        )
    if problems:
        raise PrepareError(problems)
    gt = {"labels": list(ann.labels), "gttubes": gttubes, "nframes": nframes,
          "resolution": resolution, "train_videos": splits[0], "test_videos": splits[1]}
    if ann.flip_pairs:
        gt["flip_pairs"] = [list(p) for p in ann.flip_pairs]
    return gt
