"""The annotation files ``python -m pcsc_d2.data.prepare`` reads: ROAD, the field's GT, simple JSON.

Each reader returns :class:`SourceAnnotations`: tubes in the pixels of the frames the boxes were
drawn on, before any video is decoded. Every problem is an InputError naming the file, and where
it applies the video, tube and row.

``road``: ROAD's ``pyannot.pkl`` of UCF-101-24 (the 24 class names are built in, boxes are
MATLAB 1-based (x, y, w, h) on 320x240 frames; see :func:`pcsc_d2.data.convert.road_to_annotations`).

``gt``: the field's ``UCF101v2-GT.pkl`` / ``JHMDB-GT.pkl`` or their JSON conversion (its
``resolution`` is the size the boxes were drawn on, its splits are kept).

``json``: the simple format for your own data. A few lines turn an annotation tool's export
into it::

    {
      "labels": ["Walk", "Wave"],                  # optional: the classes, in index order;
                                                   #   default: the sorted names used below
      "flip_pairs": [["TurnLeft", "TurnRight"]],   # optional: classes a horizontal flip swaps
      "box_format": "xyxy",                        # optional: "xyxy" (default) or "xywh"
      "first_frame": 1,                            # optional: number of a video's first frame
                                                   #   in the rows below, 1 (default) or 0
      "videos": {
        "walk_01": {                               # the video file's name without extension
                                                   #   (or its path under --videos, "Walk/walk_01")
          "split": "test",                         # optional: "train" (default) or "test"
          "size": [1280, 720],                     # optional: width, height of the frames the
                                                   #   boxes were drawn on (default: the video's)
          "tubes": [                               # one per actor and action; [] for none
            {"label": "Walk",
             "boxes": [[1, 10, 20, 60, 120],       # frame, x1, y1, x2, y2
                       [2, 12, 20, 62, 121]]}
          ]
        }
      }
    }

Boxes are pixels counted from 0. With "xyxy" (the field's convention) x2, y2 are the last pixel
inside the box (inclusive: a box of the whole 320-pixel-wide frame is 0 .. 319); with "xywh" a
row is frame, x, y, width, height and the box covers x .. x + width - 1. A tube lists each of its
frames at most once, in any order; it may skip frames (no box there).
"""
import dataclasses
import json
import logging
import numbers
from typing import Dict, List, Optional, Tuple

import numpy as np

from pcsc_d2.utils.errors import InputError, require_file

from .annotations import load_annotations
from .convert import UCF24_CLASSES, _read_road, road_to_annotations
from .datasets import class_flip_pairs

__all__ = ["FORMATS", "SourceAnnotations", "read_annotations"]

logger = logging.getLogger(__name__)

FORMATS = ("road", "gt", "json")
# The frame size of UCF-101, on which ROAD's boxes were drawn: (width, height).
UCF101_SIZE = (320, 240)


@dataclasses.dataclass
class SourceAnnotations:
    """Annotations as read from a file, in the pixels of the frames they were drawn on.

    Attributes:
        labels: class names (label index -> name).
        tubes: {video: {label: [(n, 5) float32 frame (1-based), x1, y1, x2, y2]}}; boxes are
            0-based inclusive corners.
        sizes: {video: (width, height) of the frames the boxes were drawn on}; a video absent
            here was annotated on its decoded frames.
        splits: {"train_videos": [[...]], "test_videos": [[...]]} when the file sets them.
        flip_pairs: class pairs that a horizontal flip swaps.
        source: the file.
    """

    labels: List[str]
    tubes: Dict[str, Dict[int, List[np.ndarray]]]
    sizes: Dict[str, Tuple[int, int]]
    splits: Optional[Dict[str, List[List[str]]]]
    flip_pairs: List[Tuple[str, str]]
    source: str


def read_annotations(
    path: str, fmt: str, annotation_size: Optional[Tuple[int, int]] = None
) -> SourceAnnotations:
    """Read an annotation file of one of :data:`FORMATS` (module docstring).

    Args:
        path: the file.
        fmt: "road", "gt" or "json".
        annotation_size: (width, height) the boxes were drawn on, for every video; overrides
            the file's sizes (default: 320x240 for road, the GT's resolution for gt, each
            video's "size" or its decoded frames for json).
    """
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    require_file(path, f"{fmt} annotation file")
    if fmt == "road":
        width, height = annotation_size or UCF101_SIZE
        gt = road_to_annotations(_read_road(path), UCF24_CLASSES, (height, width), source=path)
        ann = SourceAnnotations(gt["labels"], gt["gttubes"], {}, None, [], path)
    elif fmt == "gt":
        gt = load_annotations(path)
        sizes = {v: (int(r[1]), int(r[0])) for v, r in gt["resolution"].items()}
        splits = {k: gt[k] for k in ("train_videos", "test_videos")}
        tubes = {v: gt["gttubes"].get(v, {}) for v in gt["nframes"]}
        ann = SourceAnnotations(gt["labels"], tubes, sizes, splits, class_flip_pairs(gt, path),
                                path)
    else:
        ann = _read_json(path)
    if annotation_size is not None or fmt == "road":
        size = annotation_size or UCF101_SIZE
        ann.sizes = {v: size for v in ann.tubes}
    return ann


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _read_json(path: str) -> SourceAnnotations:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("videos"), dict):
        raise InputError(f'{path}: expected an object with "videos": {{video: {{"tubes": '
                         "[...]}}}} (see the JSON format in datasets/README.md)")
    box_format = raw.get("box_format", "xyxy")
    first_frame = raw.get("first_frame", 1)
    if box_format not in ("xyxy", "xywh"):
        raise InputError(f'{path}: "box_format" is {box_format!r}, expected "xyxy" or "xywh"')
    if first_frame not in (0, 1) or isinstance(first_frame, bool):
        raise InputError(f'{path}: "first_frame" is {first_frame!r}, expected 0 or 1')
    videos = raw["videos"]
    names = [t.get("label") for v in videos.values() if isinstance(v, dict)
             for t in (v.get("tubes") or []) if isinstance(t, dict)]
    labels = raw.get("labels")
    if labels is None:
        labels = sorted({str(n) for n in names if n is not None})
    elif not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise InputError(f'{path}: "labels" must be a list of class names')
    if len(set(labels)) != len(labels):
        raise InputError(f'{path}: "labels" names a class twice')
    tubes, sizes, split_of = {}, {}, {}
    for video, entry in videos.items():
        where = f"{path}: video {video!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("tubes", []), list):
            raise InputError(f'{where}: expected {{"tubes": [{{"label", "boxes"}}, ...]}}')
        split = entry.get("split", "train")
        if split not in ("train", "test"):
            raise InputError(f'{where}: "split" is {split!r}, expected "train" or "test"')
        split_of[video] = split
        if "size" in entry:
            size = entry["size"]
            if not (isinstance(size, list) and len(size) == 2 and all(
                    _is_int(x) and x > 0 for x in size)):
                raise InputError(f'{where}: "size" must be [width, height] in pixels')
            sizes[video] = (size[0], size[1])
        per_label: Dict[int, List[np.ndarray]] = {}
        for i, tube in enumerate(entry.get("tubes", [])):
            label = tube.get("label") if isinstance(tube, dict) else None
            if label not in labels:
                raise InputError(f"{where}, tube {i}: class {label!r} is not in the class list "
                                 f"{labels}")
            rows = _tube_rows(tube.get("boxes"), box_format, first_frame, f"{where}, tube {i}")
            per_label.setdefault(labels.index(label), []).append(rows)
        tubes[video] = per_label
    splits = None
    if any("split" in e for e in videos.values() if isinstance(e, dict)):
        splits = {"train_videos": [[v for v, s in split_of.items() if s == "train"]],
                  "test_videos": [[v for v, s in split_of.items() if s == "test"]]}
    gt = {"labels": labels, "flip_pairs": raw.get("flip_pairs") or []}
    return SourceAnnotations(labels, tubes, sizes, splits, class_flip_pairs(gt, path), path)


def _tube_rows(rows, box_format: str, first_frame: int, where: str) -> np.ndarray:
    """A tube's rows as (n, 5) float32 frame (1-based), x1, y1, x2, y2, sorted by frame."""
    try:
        a = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        a = np.zeros((0, 0))
    if a.ndim != 2 or a.shape[1] != 5 or len(a) == 0 or not np.isfinite(a).all():
        raise InputError(f'{where}: "boxes" must be a non-empty list of [frame, x1, y1, x2, y2] '
                         "rows of numbers")
    frames = a[:, 0]
    if not np.all(frames == np.round(frames)) or frames.min() < first_frame:
        raise InputError(f"{where}: frame numbers must be integers from {first_frame}")
    a = a[np.argsort(frames, kind="stable")]
    if np.any(np.diff(a[:, 0]) == 0):
        raise InputError(f"{where}: frame {int(a[np.argmax(np.diff(a[:, 0]) == 0), 0])} has "
                         "two boxes in one tube")
    if box_format == "xywh":
        if np.any(a[:, 3:5] <= 0):
            bad = int(a[np.argmax((a[:, 3:5] <= 0).any(1)), 0])
            raise InputError(f"{where}: frame {bad}: width and height must be positive")
        a[:, 3:5] = a[:, 1:3] + a[:, 3:5] - 1
    bad = (a[:, 1] > a[:, 3]) | (a[:, 2] > a[:, 4]) | (a[:, 1:3] < 0).any(1)
    if bad.any():
        row = a[np.argmax(bad)]
        raise InputError(f"{where}: frame {int(row[0])}: box {row[1:].tolist()} has x1 > x2, "
                         "y1 > y2 or a negative corner")
    a[:, 0] += 1 - first_frame  # 1-based, as the field numbers frames
    return a.astype(np.float32)
