"""Convert ground-truth files: the field's pickle <-> JSON, and ROAD's pyannot.pkl -> this schema.

    python -m pcsc_d2.data.convert to-json UCF101v2-GT.pkl UCF101v2-GT.json
    python -m pcsc_d2.data.convert to-pkl  UCF101v2-GT.json UCF101v2-GT.pkl
    python -m pcsc_d2.data.convert road pyannot.pkl road-GT.pkl --labels labels.txt \
        [--resolution 240x320] [--splits splits.json]

ROAD's ``pyannot.pkl`` is {video: {"label", "numf", "annotations": [{"label", "sf", "ef",
"boxes"}]}} with 0-based start frame ``sf``, exclusive end ``ef`` and boxes as MATLAB-style
1-based (x, y, w, h). It becomes tubes of frames sf + 1 .. ef (1-based) with the field's 0-based
inclusive corners x1 = x - 1, y1 = y - 1, x2 = x + w - 1, y2 = y + h - 1 (see
:func:`road_to_annotations` for why). ROAD has no class names, resolution or splits: they come
from --labels (one name per line; default: the 24 UCF-101-24 classes, :data:`UCF24_CLASSES`),
--resolution (default 240x320) and --splits (JSON {"train_videos": [[...]], "test_videos":
[[...]]}; default: every video in one test split). Every output is validated before it is
written (atomically).
"""
import argparse
import json
import logging
import numbers
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from pcsc_d2.utils.errors import (
    INPUT_ERRORS,
    CorruptFileError,
    InputError,
    error_line,
    require_file,
)

from .annotations import (
    SafeUnpickler,
    UnsafePickleError,
    load_annotations,
    save_annotations,
    validate_annotations,
)

__all__ = ["UCF24_CLASSES", "road_to_annotations"]

logger = logging.getLogger(__name__)


# The 24 classes of UCF-101-24 in alphabetical order: ROAD's label indices point into this list.
UCF24_CLASSES = [
    "Basketball", "BasketballDunk", "Biking", "CliffDiving", "CricketBowling", "Diving",
    "Fencing", "FloorGymnastics", "GolfSwing", "HorseRiding", "IceDancing", "LongJump",
    "PoleVault", "RopeClimbing", "SalsaSpin", "SkateBoarding", "Skiing", "Skijet",
    "SoccerJuggling", "Surfing", "TennisSwing", "TrampolineJumping", "VolleyballSpiking",
    "WalkingWithDog",
]


def road_boxes_to_corners(boxes: np.ndarray) -> np.ndarray:
    """ROAD's 1-based (x, y, w, h) boxes -> the field's 0-based inclusive corners.

    ROAD's boxes were drawn in MATLAB: a box spans the pixels x .. x + w and y .. y + h,
    counted from 1. On all 573,862 boxes of UCF-101-24 (320x240 frames) min x = min y = 1 and
    max x + w = 320, max y + h = 240: the 1-based extremes touch the first and the last pixel
    on both sides. So x1 = x - 1, y1 = y - 1, x2 = x + w - 1, y2 = y + h - 1 maps them onto
    0 .. width - 1 and 0 .. height - 1 exactly, and a box is w + 1 pixels wide. (Reading the
    boxes as 0-based, or as x .. x + w - 1, would leave the first or the last column of the
    frame unreachable while the other edge overshoots or falls short by one pixel.)

    Args:
        boxes: (N, 4) x, y, w, h, any numeric dtype (ROAD stores uint8 or uint16: the sums
            are done in float32, never in the stored dtype, whose uint8 x + w would wrap).

    Returns:
        (N, 4) float32 x1, y1, x2, y2, 0-based inclusive pixel corners.
    """
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.stack([b[:, 0] - 1, b[:, 1] - 1, b[:, 0] + b[:, 2] - 1, b[:, 1] + b[:, 3] - 1], 1)


def road_to_annotations(
    road: Dict,
    labels: Optional[List[str]] = None,
    resolution: Tuple[int, int] = (240, 320),
    splits: Optional[Dict] = None,
    source: str = "<pyannot>",
) -> Dict:
    """Convert a ROAD ``pyannot`` dict to the field's GT schema.

    Frames: a tube's ``sf`` (0-based) .. ``ef`` (exclusive) become frames sf + 1 .. ef
    (1-based). Boxes: :func:`road_boxes_to_corners` (x1 = x - 1, y1 = y - 1, x2 = x + w - 1,
    y2 = y + h - 1), then clipped to ``resolution`` (no UCF-101-24 box needs it; a warning
    counts the clipped boxes of other files).

    Args:
        road: {video: {"numf", "annotations": [{"label", "sf", "ef", "boxes"}]}}.
        labels: class names indexed by ROAD's labels; default :data:`UCF24_CLASSES`.
        resolution: (height, width) the boxes were drawn on, for every video.
        splits: {"train_videos": [[...]], "test_videos": [[...]]}; default: every video in one
            test split.
        source: the file, for messages.

    Returns:
        the schema of :mod:`pcsc_d2.data.annotations`; video keys as str.

    Raises:
        InputError: a video misses "numf" or "annotations", a tube's box count differs from
            ef - sf, or a label has no entry in ``labels``; the message names the file, the
            video and the tube.
    """
    labels = list(UCF24_CLASSES if labels is None else labels)
    height, width = resolution
    limits = np.array([width - 1, height - 1, width - 1, height - 1], np.float32)
    gttubes, nframes = {}, {}
    clipped = 0
    for video, entry in road.items():
        video = str(video)  # pyannot's keys are numpy str scalars
        try:
            numf = int(entry["numf"])
            annotations = entry["annotations"]
        except (KeyError, TypeError) as e:
            raise InputError(f"{source}: video {video}: missing 'numf' or 'annotations'") from e
        nframes[video] = numf
        per_label: Dict[int, list] = {}
        for i, ann in enumerate(annotations):
            label, sf, ef = int(ann["label"]), int(ann["sf"]), int(ann["ef"])
            if not 0 <= label < len(labels):
                raise InputError(
                    f"{source}: video {video}, annotation {i}: class {label} is not in the "
                    f"class list ({len(labels)} classes: {labels[0]} .. {labels[-1]})"
                )
            corners = road_boxes_to_corners(ann["boxes"])
            if len(corners) != ef - sf:
                raise InputError(
                    f"{source}: video {video}, annotation {i}: {len(corners)} boxes for frames "
                    f"sf={sf}..ef={ef} (exclusive), expected {ef - sf}"
                )
            inside = np.clip(corners, 0, limits)
            clipped += int(np.any(inside != corners, axis=1).sum())
            frames = np.arange(sf + 1, ef + 1, dtype=np.float32)[:, None]
            per_label.setdefault(label, []).append(np.concatenate([frames, inside], 1))
        gttubes[video] = per_label
    if clipped:
        logger.warning("%s: %d boxes reached outside the %dx%d frame and were clipped to it",
                       source, clipped, width, height)
    videos = sorted(gttubes)
    splits = splits or {"train_videos": [[]], "test_videos": [videos]}
    return {
        "labels": labels,
        "gttubes": gttubes,
        "nframes": nframes,
        "resolution": {v: (height, width) for v in videos},
        "train_videos": splits["train_videos"],
        "test_videos": splits["test_videos"],
    }


def _read_road(path: str) -> Dict:
    """Read a ROAD ``pyannot.pkl`` safely and check its shape before anything is converted.

    Raises:
        MissingFileError, CorruptFileError, UnsafePickleError: the file is missing, not a
            readable pickle, or names a global that is not numpy's.
        InputError: an entry breaks ROAD's schema (module docstring); names file and video.
    """
    require_file(path, "ROAD annotation pickle")
    try:
        with open(path, "rb") as f:
            road = SafeUnpickler(f, filename=path, encoding="latin1").load()
    except UnsafePickleError:
        raise
    except Exception as e:  # a damaged pickle fails in many ways
        raise CorruptFileError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e
    if not isinstance(road, dict):
        raise InputError(f"{path}: expected a dict {{video: {{numf, annotations}}}}, got "
                         f"{type(road).__name__}")

    def is_int(x) -> bool:
        return isinstance(x, numbers.Integral) and not isinstance(x, bool)

    for video, entry in road.items():
        if not (isinstance(entry, dict) and is_int(entry.get("numf"))
                and isinstance(entry.get("annotations"), (list, tuple, np.ndarray))):
            raise InputError(f"{path}: video {video}: expected {{'numf': int, 'annotations': "
                             "[...]}}")
        for i, ann in enumerate(entry["annotations"]):
            where = f"{path}: video {video}, annotation {i}"
            if not isinstance(ann, dict) or not all(k in ann for k in ("label", "sf", "ef")):
                raise InputError(f"{where}: expected a dict with 'label', 'sf', 'ef', 'boxes'")
            if not all(is_int(ann[k]) for k in ("label", "sf", "ef")):
                raise InputError(f"{where}: 'label', 'sf' and 'ef' must be integers")
            boxes = np.asarray(ann.get("boxes", []))
            if boxes.dtype.kind not in "iuf" or boxes.ndim != 2 or boxes.shape[1] != 4:
                raise InputError(f"{where}: 'boxes' must be an (n, 4) array of numbers "
                                 f"(x, y, w, h), got shape {boxes.shape} of {boxes.dtype}")
    return road


def _read_labels(path: str) -> List[str]:
    require_file(path, "labels file")
    with open(path, encoding="utf-8") as f:
        labels = [line.strip() for line in f if line.strip()]
    if not labels:
        raise InputError(f"{path}: no class names (expected one per line)")
    return labels


def _read_splits(path: str) -> Dict:
    require_file(path, "splits file")
    try:
        with open(path, encoding="utf-8") as f:
            splits = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e
    for key in ("train_videos", "test_videos"):
        value = splits.get(key) if isinstance(splits, dict) else None
        if not (isinstance(value, list) and all(isinstance(s, list) for s in value)):
            raise InputError(f"{path}: '{key}' must be a list of lists of video names "
                             '(e.g. {"train_videos": [["v1"]], "test_videos": [["v2"]]})')
    return splits


def _parse_resolution(text: str) -> Tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        h = w = 0
    if h < 1 or w < 1:
        raise InputError(f"--resolution {text!r}: expected HEIGHTxWIDTH, e.g. 240x320")
    return h, w


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Convert action-detection GT files")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("to-json", "field pickle -> JSON"), ("to-pkl", "JSON -> field pickle")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("input")
        p.add_argument("output")
    road = sub.add_parser("road", help="ROAD pyannot.pkl -> field schema (.pkl or .json)")
    road.add_argument("input")
    road.add_argument("output")
    road.add_argument("--labels", help="text file, one class name per line")
    road.add_argument("--resolution", default="240x320", help="HxW of every video")
    road.add_argument("--splits", help='JSON {"train_videos": [[...]], "test_videos": [[...]]}')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    # Every input problem ends in one "error: <file>: <what>" line and exit status 2.
    try:
        if os.path.isdir(args.output):
            raise InputError(f"{args.output}: is a directory, expected the file to write")
        if args.command == "road":
            resolution = _parse_resolution(args.resolution)
            labels = _read_labels(args.labels) if args.labels else None
            splits = _read_splits(args.splits) if args.splits else None
            road = _read_road(args.input)
            gt = road_to_annotations(road, labels, resolution, splits, args.input)
            validate_annotations(gt, args.input)  # blame the input, not the output
        else:
            gt = load_annotations(args.input)
        save_annotations(gt, args.output)
    except INPUT_ERRORS as e:
        parser.exit(2, f"error: {error_line(e)}\n")
    logger.info("Wrote %s (%d videos)", os.path.abspath(args.output), len(gt["nframes"]))


if __name__ == "__main__":
    main()
