"""Evaluate saved frame detections and/or tubes against a GT pickle.

Usage::

    python -m pcsc_d2.evaluation --gt UCF101v2-GT.pkl --frame-dets dets.json \\
        --tubes tubes.json --split 1 --out metrics.json [--ap-convention act|voc]

dets.json: [{"video", "frame" (1-based), "label" (0-based), "score", "box": [x1, y1, x2, y2]}]
tubes.json: [{"video", "label", "score", "frames": [...], "boxes": [[x1, y1, x2, y2], ...]}]
Boxes are in the GT's pixel convention (0-indexed, inclusive corners). Either input may be
omitted. The split's test videos are evaluated.
"""
import argparse
import json
import logging
import math
import numbers
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from pcsc_d2.tubes.linking import Tube
from pcsc_d2.utils.errors import INPUT_ERRORS, InputError, error_line, require_file
from pcsc_d2.utils.io import atomic_save_json

from .evaluator import compute_metrics, jsonable
from .frame_ap import FrameDetections, GroundTruth

logger = logging.getLogger("pcsc_d2.evaluation")


def split_annotations(gt: Dict[str, Any], split: int, path: str = "<GT>") -> Dict[str, Any]:
    """The GT dict restricted to the test videos of a 1-based split.

    Raises:
        InputError: ``split`` is not one of the file's splits (``path`` names the file).
    """
    splits = gt["test_videos"]
    if not 1 <= split <= len(splits):
        raise InputError(
            f"{path}: --split {split} is out of range: the file has {len(splits)} split(s), "
            f"numbered from 1"
        )
    videos = list(splits[split - 1])
    return {
        "labels": list(gt["labels"]),
        "videos": videos,
        "gttubes": {v: gt["gttubes"].get(v, {}) for v in videos},
        "nframes": {v: gt["nframes"][v] for v in videos if v in gt.get("nframes", {})},
        "resolution": {v: gt["resolution"][v] for v in videos if v in gt.get("resolution", {})},
    }


def _load_list(path: str, what: str) -> List[Any]:
    require_file(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list, got {type(data).__name__}")
    return data


def _field(path: str, i: int, entry: Any, name: str, kind: str) -> Any:
    if not isinstance(entry, dict):
        raise InputError(f"{path}: entry {i} is not an object")
    if name not in entry:
        raise InputError(f"{path}: entry {i} has no field {name!r}")
    v = entry[name]
    if kind == "str" and isinstance(v, str):
        return v
    if kind == "int" and isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    if kind == "num" and isinstance(v, numbers.Real) and not isinstance(v, bool) \
            and math.isfinite(v):
        return float(v)
    raise InputError(f"{path}: entry {i} field {name!r} must be a {kind}, got {v!r}")


def _box(path: str, i: int, v: Any, name: str) -> List[float]:
    ok = isinstance(v, (list, tuple)) and len(v) == 4 and all(
        isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) for x in v
    )
    if not ok or v[2] < v[0] or v[3] < v[1]:
        raise InputError(f"{path}: entry {i} field {name!r} must be 4 finite numbers "
                         f"x1 y1 x2 y2 with x2 >= x1 and y2 >= y1, got {v!r}")
    return [float(x) for x in v]


def _check_frame(
    path: str, i: int, name: str, video: str, frame: int, nframes: Mapping[str, int]
) -> None:
    """A frame must be 1-based and, for a video the GT knows, at most its frame count."""
    n = nframes.get(video)
    if frame < 1 or (n is not None and frame > n):
        span = f"video {video} has frames 1..{n}" if n is not None else "frames are 1-based"
        raise InputError(f"{path}: entry {i} field {name!r} holds frame {frame}, outside the "
                         f"video: {span}")


def _warn_unknown_videos(path: str, videos: Sequence[str], nframes: Mapping[str, int]) -> None:
    unknown = sorted(set(videos) - set(nframes))
    if nframes and unknown:
        logger.warning(
            "%s: %d video(s) are not in the GT file and are ignored, e.g. %r", path,
            len(unknown), unknown[0],
        )


def parse_detections(
    path: str, num_classes: int, nframes: Optional[Mapping[str, int]] = None
) -> FrameDetections:
    """Read and validate dets.json.

    Args:
        path: the JSON list of detections (module docstring).
        num_classes: labels must be in [0, num_classes).
        nframes: {video: number of frames} of the GT; a detection's frame must lie in
            1..nframes[video]. None checks only that frames are 1-based.

    Raises:
        MissingFileError: the file does not exist. InputError: it is not a JSON list of valid
        detections; the message names the file and the entry.
    """
    nframes = nframes or {}
    data = _load_list(path, "detections file")
    videos: Dict[str, int] = {}
    vid, frame, label, score, boxes = [], [], [], [], []
    for i, e in enumerate(data):
        v = _field(path, i, e, "video", "str")
        f = _field(path, i, e, "frame", "int")
        c = _field(path, i, e, "label", "int")
        _check_frame(path, i, "frame", v, f, nframes)
        if not 0 <= c < num_classes:
            raise InputError(f"{path}: entry {i} field 'label' must be in [0, {num_classes}), "
                             f"got {c}")
        score.append(_field(path, i, e, "score", "num"))
        boxes.append(_box(path, i, e.get("box"), "box"))
        vid.append(videos.setdefault(v, len(videos)))
        frame.append(f)
        label.append(c)
    _warn_unknown_videos(path, list(videos), nframes)
    return FrameDetections(
        videos=list(videos),
        video=np.asarray(vid, dtype=np.int64),
        frame=np.asarray(frame, dtype=np.int64),
        label=np.asarray(label, dtype=np.int64),
        score=np.asarray(score, dtype=np.float32),
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
    )


def parse_tubes(
    path: str, num_classes: int, nframes: Optional[Mapping[str, int]] = None
) -> List[Tube]:
    """Read and validate tubes.json (``nframes`` as for :func:`parse_detections`)."""
    nframes = nframes or {}
    tubes = []
    for i, e in enumerate(_load_list(path, "tubes file")):
        video = _field(path, i, e, "video", "str")
        c = _field(path, i, e, "label", "int")
        _field(path, i, e, "score", "num")
        if not 0 <= c < num_classes:
            raise InputError(f"{path}: entry {i} field 'label' must be in [0, {num_classes}), "
                             f"got {c}")
        frames, boxes = e.get("frames"), e.get("boxes")
        if not isinstance(frames, list) or not frames or not all(
            isinstance(f, numbers.Integral) and not isinstance(f, bool) for f in frames
        ):
            raise InputError(f"{path}: entry {i} field 'frames' must be a non-empty list of "
                             f"integers")
        if np.any(np.diff(frames) <= 0):
            raise InputError(f"{path}: entry {i} field 'frames' must be strictly increasing")
        _check_frame(path, i, "frames", video, frames[0], nframes)
        _check_frame(path, i, "frames", video, frames[-1], nframes)
        if not isinstance(boxes, list) or len(boxes) != len(frames):
            raise InputError(f"{path}: entry {i} field 'boxes' must be a list of "
                             f"{len(frames)} boxes (one per frame)")
        for b in boxes:
            _box(path, i, b, "boxes")
        tubes.append(Tube.from_json(e))
    _warn_unknown_videos(path, [t.video for t in tubes], nframes)
    return tubes


def _check_thresholds(args: argparse.Namespace) -> None:
    """IoU thresholds must lie in (0, 1]; the tube-NMS threshold in [0, 1]."""
    named = [("--frame-iou", args.frame_iou)] + [("--video-ious", t) for t in args.video_ious]
    for flag, t in named:
        if not 0 < t <= 1:
            raise InputError(f"{flag} {t}: an IoU threshold must be in (0, 1]")
    if not 0 <= args.tube_nms <= 1:
        raise InputError(f"--tube-nms {args.tube_nms}: an IoU threshold must be in [0, 1]")


def _warn_if_nothing_to_score(
    path: Optional[str], what: str, videos: Sequence[str], gt: GroundTruth
) -> None:
    """A warning line when an input holds nothing on the split's videos (every AP is then 0)."""
    if path is None:
        return
    if not videos:
        logger.warning("%s: holds no %s: their APs are all 0", path, what)
    elif not set(videos) & set(gt.videos):
        logger.warning(
            "%s: none of its %s is on the split's %d test videos: their APs are all 0",
            path, what, len(gt.videos),
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pcsc_d2.evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", required=True, help="GT pickle (UCF101v2-GT.pkl, ...)")
    parser.add_argument("--frame-dets", help="frame detections JSON")
    parser.add_argument("--tubes", help="tubes JSON")
    parser.add_argument("--split", type=int, default=1, help="1-based split (default 1)")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    parser.add_argument("--ap-convention", choices=("act", "voc"), default="act")
    parser.add_argument("--frame-iou", type=float, default=0.5)
    parser.add_argument("--video-ious", type=float, nargs="+", default=[0.2, 0.5, 0.75])
    parser.add_argument("--tube-nms", type=float, default=0.3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.frame_dets and not args.tubes:
        parser.error("give --frame-dets and/or --tubes")

    from pcsc_d2.data import load_annotations

    # Every input is read and checked before any metric is computed.
    try:
        _check_thresholds(args)
        if os.path.isdir(args.out):
            raise InputError(f"{args.out}: is a directory, expected the metrics JSON to write")
        annotations = load_annotations(args.gt)
        gt = GroundTruth.from_annotations(split_annotations(annotations, args.split, args.gt))
        nframes = annotations["nframes"]
        dets = tubes = None
        if args.frame_dets:
            dets = parse_detections(args.frame_dets, gt.num_classes, nframes)
            used = [dets.videos[v] for v in np.unique(dets.video)]
            _warn_if_nothing_to_score(args.frame_dets, "detections", used, gt)
        if args.tubes:
            tubes = parse_tubes(args.tubes, gt.num_classes, nframes)
            _warn_if_nothing_to_score(args.tubes, "tubes", [t.video for t in tubes], gt)
    except INPUT_ERRORS as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    metrics, _ = compute_metrics(
        gt, dets, tubes, ap_convention=args.ap_convention, frame_iou=args.frame_iou,
        video_ious=args.video_ious, tube_nms=args.tube_nms,
    )
    try:
        atomic_save_json(jsonable(metrics), args.out, indent=1)
    except OSError as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in metrics.items() if "mAP" in k or k == "MABO"}
    width = max(len(k) for k in summary) if summary else 0
    lines = [f"{k:<{width}}  {v:6.2f}" for k, v in summary.items()]
    print(f"split {args.split}, {len(gt.videos)} test videos, AP convention "
          f"{args.ap_convention} (percent):\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
