"""Box overlaps and NMS in the field's pixel convention (inclusive corners, +1-pixel areas).

Used by linking, refinement labels and evaluation; re-exported by :mod:`pcsc_d2.tubes.linking`.
"""
from typing import List, Sequence

import numpy as np

__all__ = ["box_iou", "nms", "paired_box_iou"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU with +1-pixel areas, as the field computes it.

    Args:
        a: (N, 4) x1 y1 x2 y2, inclusive pixel corners.
        b: (M, 4) x1 y1 x2 y2, inclusive pixel corners.

    Returns:
        (N, M) float64 IoU.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def paired_box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU with +1-pixel areas: ``iou[i] = IoU(a[i], b[i])``.

    Args:
        a: (N, 4) x1 y1 x2 y2, inclusive pixel corners.
        b: (N, 4) the same convention.

    Returns:
        (N,) float64 IoU.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return inter / (area_a + area_b - inter)


def _iou_py(a: Sequence[float], b: Sequence[float]) -> float:
    """+1-pixel IoU of two boxes given as Python sequences (cheaper than numpy for one pair)."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (union - inter)


def _gate(
    last_boxes: List[List[float]], boxes: List[List[float]], thresh: float
) -> List[List[bool]]:
    """(T, D) IoU >= thresh between tubes' last boxes and a frame's detections."""
    if len(last_boxes) * len(boxes) <= 64:
        # Per-frame sizes are tiny: plain Python beats numpy's per-call overhead here.
        return [[_iou_py(t, d) >= thresh for d in boxes] for t in last_boxes]
    return (box_iou(np.asarray(last_boxes), np.asarray(boxes)) >= thresh).tolist()


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float, topk: int = -1) -> np.ndarray:
    """Greedy NMS with the +1-pixel IoU; a box is suppressed when IoU > ``thresh``.

    Args:
        boxes: (N, 4) x1 y1 x2 y2, inclusive pixel corners.
        scores: (N,) scores.
        thresh: IoU above which the lower-scoring box is removed.
        topk: stop after this many kept boxes (-1: no limit).

    Returns:
        (K,) int64 indices of the kept boxes, highest score first.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    if len(order) <= 1:
        return order.astype(np.int64)
    if len(order) <= 8:
        # Tiny groups (the usual case per class and frame): plain Python is cheaper.
        blist = np.asarray(boxes, dtype=np.float64).tolist()
        kept: List[int] = []
        for i in order.tolist():
            if all(_iou_py(blist[i], blist[k]) <= thresh for k in kept):
                kept.append(i)
                if len(kept) == topk:
                    break
        return np.asarray(kept, dtype=np.int64)
    # One matrix for all pairs: cheaper than per-step overlaps for larger groups.
    suppresses = box_iou(boxes, boxes) > thresh
    removed = np.zeros(len(order), dtype=bool)
    keep: List[int] = []
    for i in order.tolist():
        if removed[i]:
            continue
        keep.append(i)
        if len(keep) == topk:
            break
        removed |= suppresses[i]
    return np.asarray(keep, dtype=np.int64)
