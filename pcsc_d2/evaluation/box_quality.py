"""Where box quality is lost: MABO along the detector's steps, and boxes against the motion.

Two measurements on one split, both in the GT's pixel convention:

- :func:`mabo_by_step`: MABO (ACT's mean best overlap, per class then averaged) of each RPN's
  proposals, of every stage's boxes B_t^i and of the final detections. A step that lowers it
  loses box quality; one that is low for moving classes only points at motion.
- :func:`motion_offsets`: for every GT box, the final detection that overlaps it best, and the
  offset between their centres along and across the GT's direction of motion (from the GT
  tube's centre track), plus the size differences along and across it. A time-averaged feature
  of a moving actor would show as a box that lags (negative along-offset) or is stretched
  along the motion.
"""
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from pcsc_d2.tubes.linking import box_iou

from .frame_ap import FrameDetections, GroundTruth, frame_mabo

__all__ = ["boxes_to_detections", "mabo_by_step", "motion_offsets"]

# A GT box moves when its centre moves at least this many pixels per frame.
MOVING_PX_PER_FRAME = 0.5


def boxes_to_detections(
    videos: Sequence[str], per_frame: Dict[Tuple[str, int], np.ndarray]
) -> FrameDetections:
    """(video, frame) -> boxes (R, 4) into a FrameDetections (labels 0, scores 1)."""
    index = {v: i for i, v in enumerate(videos)}
    keys = [k for k in sorted(per_frame) if k[0] in index]
    sizes = [len(per_frame[k]) for k in keys]
    total = int(sum(sizes))
    boxes = [np.asarray(per_frame[k], np.float32).reshape(-1, 4) for k in keys]
    return FrameDetections(
        videos=list(videos),
        video=np.repeat(np.array([index[v] for v, _ in keys], np.int64), sizes),
        frame=np.repeat(np.array([f for _, f in keys], np.int64), sizes),
        label=np.zeros(total, np.int64),
        score=np.ones(total, np.float32),
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
    )


def mabo_by_step(
    gt: GroundTruth, steps: Dict[str, Dict[Tuple[str, int], np.ndarray]]
) -> Dict[str, Dict[str, Any]]:
    """MABO of every step's boxes.

    Args:
        gt: the split's GT, restricted to the evaluated frames.
        steps: step name -> {(video, frame): boxes (R, 4)}.

    Returns:
        step -> {"mabo": percent, "per_class": {class: percent}}.
    """
    out = {}
    for name, per_frame in steps.items():
        r = frame_mabo(gt, boxes_to_detections(gt.videos, per_frame))
        out[name] = {
            "mabo": 100 * r["mabo"],
            "per_class": {c: 100 * float(v) for c, v in zip(gt.labels, r["per_class"])},
        }
    return out


def _centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)


def _sizes(boxes: np.ndarray) -> np.ndarray:
    return np.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1], 1)


def motion_offsets(
    gt: GroundTruth, finals: Dict[Tuple[str, int], np.ndarray]
) -> Dict[str, Dict[str, float]]:
    """Best final box of every GT box, against the GT's motion.

    Args:
        gt: the split's GT (whole tubes: the motion is taken from them).
        finals: (video, frame) -> final detections (R, 4) of the evaluated frames.

    Returns:
        class -> {"boxes", "moving_fraction", "iou_moving", "iou_static" (mean best IoU),
        "along", "across" (mean centre offset in pixels along / across the motion, sign:
        positive = ahead of the actor), "abs_along", "abs_across", "size_along",
        "size_across" (mean size difference, predicted - GT, in pixels), "speed" (mean GT
        centre speed, pixels per frame, of the moving boxes)}; values NaN where undefined.
    """
    rows: List[Dict[str, Any]] = []
    for t, (video_i, label) in enumerate(zip(gt.tube_video, gt.tube_label)):
        frames, boxes = gt.tube_frames[t], gt.tube_boxes[t].astype(np.float64)
        video = gt.videos[video_i]
        centres = _centres(boxes)
        # Centre velocity per frame (central differences over the tube's frame numbers).
        velocity = (
            np.gradient(centres, frames.astype(np.float64), axis=0)
            if len(frames) > 1 else np.zeros_like(centres)
        )
        for i, frame in enumerate(frames):
            dets = finals.get((video, int(frame)))
            if dets is None:
                continue
            row = {"label": int(label), "speed": float(np.hypot(*velocity[i])), "iou": 0.0}
            if len(dets):
                ious = box_iou(boxes[i : i + 1], dets)[0]
                best = dets[int(np.argmax(ious))].astype(np.float64)[None]
                row["iou"] = float(ious.max())
                offset = _centres(best)[0] - centres[i]
                size = _sizes(best)[0] - _sizes(boxes[i : i + 1])[0]
                if row["speed"] >= MOVING_PX_PER_FRAME:
                    d = velocity[i] / row["speed"]
                    row["along"] = float(offset @ d)
                    row["across"] = float(offset @ np.array([-d[1], d[0]]))
                    # The extent of an axis-aligned box along a unit direction d: |dx| w + |dy| h.
                    row["size_along"] = float(np.abs(d) @ size)
                    row["size_across"] = float(np.abs(d[::-1]) @ size)
            rows.append(row)
    out = {}
    for c, name in enumerate(gt.labels):
        mine = [r for r in rows if r["label"] == c]
        moving = [r for r in mine if r["speed"] >= MOVING_PX_PER_FRAME]
        static = [r for r in mine if r["speed"] < MOVING_PX_PER_FRAME]
        placed = [r for r in moving if "along" in r]

        def mean(values) -> float:
            values = list(values)
            return float(np.mean(values)) if values else float("nan")

        out[name] = {
            "boxes": len(mine),
            "moving_fraction": len(moving) / max(len(mine), 1),
            "speed": mean(r["speed"] for r in moving),
            "iou_moving": mean(r["iou"] for r in moving),
            "iou_static": mean(r["iou"] for r in static),
            "along": mean(r["along"] for r in placed),
            "across": mean(r["across"] for r in placed),
            "abs_along": mean(abs(r["along"]) for r in placed),
            "abs_across": mean(abs(r["across"]) for r in placed),
            "size_along": mean(r["size_along"] for r in placed),
            "size_across": mean(r["size_across"] for r in placed),
        }
    return out
