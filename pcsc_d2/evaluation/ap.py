"""Average precision and greedy detection-to-ground-truth matching, shared by frame-AP and
video-AP.

Two AP conventions are offered and every report names the one it used:

* ``"act"`` (the field's, as ACT computes it): the area under the *raw* precision/recall
  points by the trapezoid rule, starting from (recall 0, precision 1).
* ``"voc"``: VOC's all-points interpolated AP (precision made monotone from the right, then
  summed over the recall steps).
"""
import logging
from typing import Tuple

import numpy as np

__all__ = ["AP_CONVENTIONS", "pr_curve", "ap_from_pr", "average_precision", "greedy_match",
           "expand_pairs"]

logger = logging.getLogger(__name__)

AP_CONVENTIONS = ("act", "voc")


def check_convention(convention: str) -> str:
    if convention not in AP_CONVENTIONS:
        raise ValueError(f"ap_convention must be one of {AP_CONVENTIONS}, got {convention!r}")
    return convention


def pr_curve(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> Tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each detection, detections ranked by decreasing score.

    Ties keep the input order (stable sort), so results are reproducible.

    Args:
        scores: (N,) detection scores.
        tp: (N,) bool, True for true positives.
        num_gt: number of ground-truth instances (> 0).

    Returns:
        precision (N,), recall (N,), float64.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = np.asarray(tp, dtype=bool)[order]
    ctp = np.cumsum(tp)
    precision = ctp / np.arange(1, len(tp) + 1)
    recall = ctp / float(num_gt)
    return precision, recall


def ap_from_pr(precision: np.ndarray, recall: np.ndarray, convention: str = "act") -> float:
    """Area under a precision/recall curve, in [0, 1].

    Args:
        precision: (N,) precision after each ranked detection.
        recall: (N,) recall after each ranked detection (non-decreasing).
        convention: "act" (trapezoid over raw points from (0, 1)) or "voc" (all-points
            interpolated).
    """
    check_convention(convention)
    if convention == "act":
        p = np.r_[1.0, precision]
        r = np.r_[0.0, recall]
        return float(np.sum(np.diff(r) * (p[1:] + p[:-1]) / 2.0))
    p = np.r_[0.0, precision, 0.0]
    r = np.r_[0.0, recall, 1.0]
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def average_precision(
    scores: np.ndarray, tp: np.ndarray, num_gt: int, convention: str = "act"
) -> Tuple[float, np.ndarray, np.ndarray]:
    """AP of one class.

    Returns:
        (ap, precision, recall). ``ap`` is NaN when the class has no ground truth (it is left
        out of the mean), 0 when it has ground truth but no detection.
    """
    if num_gt <= 0:
        return float("nan"), np.zeros(0), np.zeros(0)
    if len(scores) == 0:
        return 0.0, np.zeros(0), np.zeros(0)
    precision, recall = pr_curve(scores, tp, num_gt)
    return ap_from_pr(precision, recall, convention), precision, recall


def expand_pairs(keys_a: np.ndarray, keys_b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j) with ``keys_a[i] == keys_b[j]``, without a Python loop.

    Args:
        keys_a: (N,) int64 keys.
        keys_b: (M,) int64 keys.

    Returns:
        ia (P,), jb (P,) int64 indices into a and b, grouped by i.
    """
    keys_a = np.asarray(keys_a, dtype=np.int64)
    order_b = np.argsort(keys_b, kind="stable")
    sorted_b = np.asarray(keys_b, dtype=np.int64)[order_b]
    lo = np.searchsorted(sorted_b, keys_a, side="left")
    hi = np.searchsorted(sorted_b, keys_a, side="right")
    counts = hi - lo
    ia = np.repeat(np.arange(len(keys_a), dtype=np.int64), counts)
    offsets = np.arange(len(ia), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    jb = order_b[np.repeat(lo, counts) + offsets]
    return ia, jb


def greedy_match(
    scores: np.ndarray,
    pair_det: np.ndarray,
    pair_gt: np.ndarray,
    pair_iou: np.ndarray,
    thresh: float,
) -> Tuple[np.ndarray, np.ndarray]:
    """The field's greedy matching, given the candidate (detection, GT) pairs.

    Detections are visited by decreasing score (ties: input order). Each takes, among its
    candidate GT instances not yet matched, the one of highest overlap; it is a true positive
    when that overlap is >= ``thresh`` (inclusive), and the GT instance is then used up.
    Candidates are the GT instances of the detection's class in its frame (frame-AP) or video
    (video-AP): every detection of one group shares the same candidates.

    Groups with a single GT instance (the common case) are resolved at once with numpy: the
    highest-scoring detection reaching the threshold wins; the others go through a loop.

    Args:
        scores: (N,) detection scores.
        pair_det: (P,) detection index of each candidate pair.
        pair_gt: (P,) GT index of each candidate pair.
        pair_iou: (P,) overlap of each pair.
        thresh: overlap needed for a true positive.

    Returns:
        tp (N,) bool and matched (N,) int64 GT index (-1 when none).
    """
    n = len(scores)
    tp = np.zeros(n, dtype=bool)
    matched = np.full(n, -1, dtype=np.int64)
    if len(pair_det) == 0:
        return tp, matched
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")] = np.arange(n)
    ncand = np.bincount(pair_det, minlength=n)
    single = ncand[pair_det] == 1
    ok = single & (pair_iou >= thresh)
    if ok.any():
        d, g = pair_det[ok], pair_gt[ok]
        order = np.lexsort((rank[d], g))
        _, first = np.unique(g[order], return_index=True)
        winners = d[order][first]
        tp[winners] = True
        matched[winners] = g[order][first]
    multi = np.flatnonzero(~single)
    if len(multi):
        # Visit multi-candidate detections by rank; their GT instances are disjoint from the
        # single-candidate groups', so the two parts do not interact.
        md, mg, mi = pair_det[multi], pair_gt[multi], pair_iou[multi]
        order = np.lexsort((-mi, rank[md]))
        used = set()
        current, done = -1, False
        for d, g, iou in zip(md[order].tolist(), mg[order].tolist(), mi[order].tolist()):
            if d != current:
                current, done = d, False
            if done or g in used:
                continue
            # The best still-unmatched candidate decides; below threshold it is a miss.
            done = True
            if iou >= thresh:
                used.add(g)
                tp[d] = True
                matched[d] = g
    return tp, matched
