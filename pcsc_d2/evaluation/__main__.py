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
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from pcsc_d2.tubes.linking import Tube
from pcsc_d2.utils.io import atomic_save_json

from .evaluator import compute_metrics, jsonable
from .frame_ap import FrameDetections, GroundTruth

logger = logging.getLogger("pcsc_d2.evaluation")


def split_annotations(gt: Dict[str, Any], split: int) -> Dict[str, Any]:
    """The GT dict restricted to the test videos of a 1-based split."""
    splits = gt["test_videos"]
    if not 1 <= split <= len(splits):
        raise ValueError(f"--split {split}: the GT has {len(splits)} split(s)")
    videos = list(splits[split - 1])
    return {
        "labels": list(gt["labels"]),
        "videos": videos,
        "gttubes": {v: gt["gttubes"].get(v, {}) for v in videos},
        "nframes": {v: gt["nframes"][v] for v in videos if v in gt.get("nframes", {})},
        "resolution": {v: gt["resolution"][v] for v in videos if v in gt.get("resolution", {})},
    }


def _load_list(path: str) -> List[Any]:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list, got {type(data).__name__}")
    return data


def _field(path: str, i: int, entry: Any, name: str, kind: str) -> Any:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: entry {i} is not an object")
    if name not in entry:
        raise ValueError(f"{path}: entry {i} has no field {name!r}")
    v = entry[name]
    if kind == "str" and isinstance(v, str):
        return v
    if kind == "int" and isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    if kind == "num" and isinstance(v, numbers.Real) and not isinstance(v, bool) \
            and math.isfinite(v):
        return float(v)
    raise ValueError(f"{path}: entry {i} field {name!r} must be a {kind}, got {v!r}")


def _box(path: str, i: int, v: Any, name: str) -> List[float]:
    ok = isinstance(v, (list, tuple)) and len(v) == 4 and all(
        isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) for x in v
    )
    if not ok or v[2] < v[0] or v[3] < v[1]:
        raise ValueError(f"{path}: entry {i} field {name!r} must be 4 finite numbers "
                         f"x1 y1 x2 y2 with x2 >= x1 and y2 >= y1, got {v!r}")
    return [float(x) for x in v]


def parse_detections(path: str, num_classes: int) -> FrameDetections:
    """Read and validate dets.json."""
    data = _load_list(path)
    videos: Dict[str, int] = {}
    vid, frame, label, score, boxes = [], [], [], [], []
    for i, e in enumerate(data):
        v = _field(path, i, e, "video", "str")
        f = _field(path, i, e, "frame", "int")
        c = _field(path, i, e, "label", "int")
        if f < 1:
            raise ValueError(f"{path}: entry {i} field 'frame' must be >= 1 (1-based), got {f}")
        if not 0 <= c < num_classes:
            raise ValueError(f"{path}: entry {i} field 'label' must be in [0, {num_classes}), "
                             f"got {c}")
        score.append(_field(path, i, e, "score", "num"))
        boxes.append(_box(path, i, e.get("box"), "box"))
        vid.append(videos.setdefault(v, len(videos)))
        frame.append(f)
        label.append(c)
    return FrameDetections(
        videos=list(videos),
        video=np.asarray(vid, dtype=np.int64),
        frame=np.asarray(frame, dtype=np.int64),
        label=np.asarray(label, dtype=np.int64),
        score=np.asarray(score, dtype=np.float32),
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
    )


def parse_tubes(path: str, num_classes: int) -> List[Tube]:
    """Read and validate tubes.json."""
    tubes = []
    for i, e in enumerate(_load_list(path)):
        _field(path, i, e, "video", "str")
        c = _field(path, i, e, "label", "int")
        _field(path, i, e, "score", "num")
        if not 0 <= c < num_classes:
            raise ValueError(f"{path}: entry {i} field 'label' must be in [0, {num_classes}), "
                             f"got {c}")
        frames, boxes = e.get("frames"), e.get("boxes")
        if not isinstance(frames, list) or not frames or not all(
            isinstance(f, numbers.Integral) and not isinstance(f, bool) for f in frames
        ):
            raise ValueError(f"{path}: entry {i} field 'frames' must be a non-empty list of "
                             f"integers")
        if np.any(np.diff(frames) <= 0):
            raise ValueError(f"{path}: entry {i} field 'frames' must be strictly increasing")
        if not isinstance(boxes, list) or len(boxes) != len(frames):
            raise ValueError(f"{path}: entry {i} field 'boxes' must be a list of "
                             f"{len(frames)} boxes (one per frame)")
        for b in boxes:
            _box(path, i, b, "boxes")
        tubes.append(Tube.from_json(e))
    return tubes


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

    gt = GroundTruth.from_annotations(split_annotations(load_annotations(args.gt), args.split))
    try:
        dets = parse_detections(args.frame_dets, gt.num_classes) if args.frame_dets else None
        tubes = parse_tubes(args.tubes, gt.num_classes) if args.tubes else None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    metrics, _ = compute_metrics(
        gt, dets, tubes, ap_convention=args.ap_convention, frame_iou=args.frame_iou,
        video_ious=args.video_ious, tube_nms=args.tube_nms,
    )
    atomic_save_json(jsonable(metrics), args.out, indent=1)
    summary = {k: v for k, v in metrics.items() if "mAP" in k or k == "MABO"}
    width = max(len(k) for k in summary) if summary else 0
    lines = [f"{k:<{width}}  {v:6.2f}" for k, v in summary.items()]
    print(f"split {args.split}, {len(gt.videos)} test videos, AP convention "
          f"{args.ap_convention} (percent):\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
