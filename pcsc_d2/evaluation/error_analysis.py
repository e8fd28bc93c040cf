"""ACT's error analysis of frame-AP: which false positives cost the most precision.

Every false positive of class c on frame f of video v gets exactly one type, checked in this
order:

* ``localization``: frame f of v has a GT box of class c, but the detection did not match it
  (its best IoU with the class's still-unmatched boxes is below the threshold, or the box it
  overlaps was already taken by a higher-scoring detection: duplicates count here);
* ``classification``: the detection has IoU >= threshold with a GT box of *another* class in
  frame f;
* ``time``: frame f has no GT box of class c, but video v has a GT tube of class c elsewhere in
  time (the detection fires outside the action's temporal extent);
* ``other``: anything else (background, or a class absent from the video).

For each type, the *gain* is how much AP would rise if those false positives were removed
from the ranking (the true positives and the other false positives staying as they are);
``missed`` is 1 - the class's final recall (GT boxes never detected). Both are averaged over
classes with ground truth and reported in percent, with the share of each type among all
false positives.
"""
import logging
from typing import Any, Dict

import numpy as np

from pcsc_d2.tubes.linking import paired_box_iou

from .ap import average_precision, expand_pairs
from .frame_ap import _FRAME_BASE, FrameDetections, GroundTruth

__all__ = ["ERROR_TYPES", "classify_false_positives", "frame_ap_errors"]

logger = logging.getLogger(__name__)

ERROR_TYPES = ("localization", "classification", "time", "other")


def classify_false_positives(
    gt: GroundTruth, dets: FrameDetections, tp: np.ndarray, iou_thresh: float = 0.5
) -> np.ndarray:
    """Type of every detection.

    Args:
        gt: the split's ground truth.
        dets: detections indexed on ``gt.videos``.
        tp: (N,) bool, true positives from :func:`~pcsc_d2.evaluation.frame_ap.frame_ap`.
        iou_thresh: the frame-AP threshold.

    Returns:
        (N,) int8: -1 for true positives, else the index of the type in ERROR_TYPES.
    """
    nv = max(len(gt.videos), 1)
    frame_d = dets.video * _FRAME_BASE + dets.frame
    frame_g = gt.box_video * _FRAME_BASE + gt.box_frame
    pd, pg = expand_pairs(frame_d, frame_g)
    same = dets.label[pd] == gt.box_label[pg]
    n = len(dets)
    has_same_in_frame = np.bincount(pd[same], minlength=n) > 0
    other = ~same
    iou_other = paired_box_iou(dets.boxes[pd[other]], gt.boxes[pg[other]])
    hit_other = np.zeros(n, dtype=bool)
    hit_other[pd[other][iou_other >= iou_thresh]] = True
    video_class_d = dets.video * (gt.num_classes + 1) + dets.label
    video_class_g = np.unique(gt.tube_video * (gt.num_classes + 1) + gt.tube_label)
    in_video = np.isin(video_class_d, video_class_g) if nv else np.zeros(n, dtype=bool)

    kind = np.full(n, 3, dtype=np.int8)
    kind[in_video] = 2
    kind[hit_other & ~has_same_in_frame] = 1
    kind[has_same_in_frame] = 0
    kind[np.asarray(tp, dtype=bool)] = -1
    return kind


def frame_ap_errors(
    gt: GroundTruth,
    dets: FrameDetections,
    frame_result: Dict[str, Any],
) -> Dict[str, Any]:
    """ACT's error breakdown of frame-AP.

    Args:
        gt: the split's ground truth.
        dets: the detections given to frame_ap.
        frame_result: the output of :func:`~pcsc_d2.evaluation.frame_ap.frame_ap`.

    Returns:
        {"gain": {type: percent}, "missed": percent, "share": {type: fraction of the false
        positives}, "counts": {type: (C,) int}, "per_class_gain": {type: (C,) percent}}.
    """
    tp = frame_result["tp"]
    convention = frame_result["ap_convention"]
    kind = classify_false_positives(gt, dets, tp, frame_result["iou_thresh"])
    num_gt = frame_result["num_gt"]
    base = frame_result["ap"]
    per_class_gain = {t: np.full(gt.num_classes, np.nan) for t in ERROR_TYPES}
    counts = {t: np.zeros(gt.num_classes, dtype=np.int64) for t in ERROR_TYPES}
    missed = np.full(gt.num_classes, np.nan)
    for c in range(gt.num_classes):
        sel = np.flatnonzero(dets.label == c)
        kc = kind[sel]
        for ti, t in enumerate(ERROR_TYPES):
            counts[t][c] = int((kc == ti).sum())
        if num_gt[c] == 0:
            continue
        recall = frame_result["recall"][c]
        missed[c] = 1.0 - (recall[-1] if len(recall) else 0.0)
        for ti, t in enumerate(ERROR_TYPES):
            keep = sel[kc != ti]
            ap, _, _ = average_precision(dets.score[keep], tp[keep], int(num_gt[c]), convention)
            per_class_gain[t][c] = 100.0 * (ap - base[c])
    total_fp = max(int(sum(v.sum() for v in counts.values())), 1)
    has_gt = num_gt > 0

    def _mean(x: np.ndarray) -> float:
        return float(np.mean(x[has_gt])) if has_gt.any() else float("nan")

    return {
        "gain": {t: _mean(per_class_gain[t]) for t in ERROR_TYPES},
        "missed": 100.0 * _mean(missed),
        "share": {t: float(counts[t].sum()) / total_fp for t in ERROR_TYPES},
        "counts": counts,
        "per_class_gain": per_class_gain,
        "ap_convention": convention,
    }
