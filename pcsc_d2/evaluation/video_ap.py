"""Video-level evaluation: tube IoU, per-video tube NMS and video-AP (ACT conventions)."""
import collections
import logging
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from pcsc_d2.tubes.linking import Tube, paired_box_iou

from .ap import average_precision, check_convention, greedy_match
from .frame_ap import GroundTruth

__all__ = ["tube_iou", "tube_nms", "video_ap", "VIDEO_IOUS_5095"]

logger = logging.getLogger(__name__)

# The thresholds averaged in "video_mAP@0.5:0.95".
VIDEO_IOUS_5095 = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def _common(frames_a: np.ndarray, frames_b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Indices into a and b of the frames both contain (frames increasing, unique)."""
    lo, hi = max(frames_a[0], frames_b[0]), min(frames_a[-1], frames_b[-1])
    if lo > hi:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    contiguous_a = frames_a[-1] - frames_a[0] + 1 == len(frames_a)
    contiguous_b = frames_b[-1] - frames_b[0] + 1 == len(frames_b)
    if contiguous_a and contiguous_b:
        # The usual case: both tubes cover every frame of their extent.
        ia = np.arange(lo - frames_a[0], hi - frames_a[0] + 1)
        return ia, ia + (frames_a[0] - frames_b[0])
    _, ia, ib = np.intersect1d(frames_a, frames_b, assume_unique=True, return_indices=True)
    return ia, ib


def tube_iou(
    frames_a: np.ndarray, boxes_a: np.ndarray, frames_b: np.ndarray, boxes_b: np.ndarray
) -> float:
    """Spatio-temporal IoU of two tubes.

    temporal IoU x spatial IoU, where the temporal IoU is that of the inclusive frame ranges
    [first, last] (a tube on frames 1..10 has length 10) and the spatial IoU is the mean
    per-frame +1-pixel IoU over the frames both tubes hold a box on (0 without any).

    Args:
        frames_a: (La,) increasing frame indices; boxes_a: (La, 4) inclusive pixel boxes.
        frames_b: (Lb,) increasing frame indices; boxes_b: (Lb, 4) inclusive pixel boxes.
    """
    if len(frames_a) == 0 or len(frames_b) == 0:
        return 0.0
    inter = min(frames_a[-1], frames_b[-1]) - max(frames_a[0], frames_b[0]) + 1
    if inter <= 0:
        return 0.0
    union = max(frames_a[-1], frames_b[-1]) - min(frames_a[0], frames_b[0]) + 1
    ia, ib = _common(frames_a, frames_b)
    if len(ia) == 0:
        return 0.0
    spatial = float(paired_box_iou(boxes_a[ia], boxes_b[ib]).mean())
    return float(inter) / float(union) * spatial


def tube_nms(tubes: Sequence[Tube], thresh: float) -> List[int]:
    """Greedy NMS of tubes by tube IoU (suppressed when IoU > ``thresh``).

    Meant for the tubes of one class in one video.

    Returns:
        Indices of the kept tubes, highest score first.
    """
    order = sorted(range(len(tubes)), key=lambda i: -tubes[i].score)
    keep: List[int] = []
    for i in order:
        t = tubes[i]
        if all(
            tube_iou(t.frames, t.boxes, tubes[k].frames, tubes[k].boxes) <= thresh for k in keep
        ):
            keep.append(i)
    return keep


def video_ap(
    gt: GroundTruth,
    tubes: Sequence[Tube],
    iou_threshs: Sequence[float] = (0.2, 0.5, 0.75) + VIDEO_IOUS_5095,
    convention: str = "act",
    nms_thresh: float = 0.3,
) -> Dict[str, Any]:
    """Video-AP of every class at several tube-IoU thresholds.

    Per video and class, tubes go through tube NMS at ``nms_thresh``; then per class the
    tubes of all videos are pooled, sorted by score and matched greedily to the class's GT
    tubes of their video; a tube IoU >= threshold (inclusive) makes a true positive.

    Args:
        gt: the split's ground truth.
        tubes: detected tubes; ``Tube.video`` names the video (tubes on videos outside the
            split are ignored with a warning).
        iou_threshs: tube-IoU thresholds.
        convention: "act" or "voc".
        nms_thresh: tube NMS threshold (a value >= 1 disables NMS).

    Returns:
        {"ap": {thresh: (C,) float64 in [0, 1], NaN for classes without GT}, "precision",
        "recall": {thresh: C arrays}, "num_gt": (C,), "num_tubes": after NMS,
        "ap_convention"}.
    """
    check_convention(convention)
    pos = {v: i for i, v in enumerate(gt.videos)}
    groups: Dict[Tuple[int, int], List[Tube]] = collections.defaultdict(list)
    unknown = 0
    for t in tubes:
        vi = pos.get(t.video, -1)
        if vi < 0:
            unknown += 1
            continue
        if not 0 <= t.label < gt.num_classes:
            raise ValueError(f"tube of video {t.video!r} has label {t.label} outside the "
                             f"{gt.num_classes} classes")
        groups[(vi, int(t.label))].append(t)
    if unknown:
        logger.warning("Ignoring %d tubes on videos outside the split", unknown)
    gt_of: Dict[Tuple[int, int], List[int]] = collections.defaultdict(list)
    for g, (vi, c) in enumerate(zip(gt.tube_video.tolist(), gt.tube_label.tolist())):
        gt_of[(vi, c)].append(g)

    kept: List[Tube] = []
    pair_det, pair_gt, pair_iou = [], [], []
    for key in sorted(groups):
        group = groups[key]
        if nms_thresh < 1:
            group = [group[i] for i in tube_nms(group, nms_thresh)]
        for t in group:
            for g in gt_of.get(key, []):
                pair_det.append(len(kept))
                pair_gt.append(g)
                pair_iou.append(tube_iou(t.frames, t.boxes, gt.tube_frames[g], gt.tube_boxes[g]))
            kept.append(t)
    scores = np.asarray([t.score for t in kept], dtype=np.float64)
    labels = np.asarray([t.label for t in kept], dtype=np.int64)
    pair_det = np.asarray(pair_det, dtype=np.int64)
    pair_gt = np.asarray(pair_gt, dtype=np.int64)
    pair_iou = np.asarray(pair_iou, dtype=np.float64)
    num_gt = np.bincount(gt.tube_label, minlength=gt.num_classes)
    class_sel = [labels == c for c in range(gt.num_classes)]
    out: Dict[str, Any] = {"ap": {}, "precision": {}, "recall": {}, "num_gt": num_gt,
                           "num_tubes": len(kept), "ap_convention": convention}
    for thr in iou_threshs:
        tp, _ = greedy_match(scores, pair_det, pair_gt, pair_iou, thr)
        res = [average_precision(scores[s], tp[s], int(num_gt[c]), convention)
               for c, s in enumerate(class_sel)]
        out["ap"][thr] = np.asarray([r[0] for r in res])
        out["precision"][thr] = [r[1] for r in res]
        out["recall"][thr] = [r[2] for r in res]
    return out
