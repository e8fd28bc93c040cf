"""Online linking of per-frame detections into action tubes (Singh et al. 2017).

Every box here is in the ground truth's pixel convention (0-indexed, inclusive corners; see
:mod:`pcsc_d2.structures`), and every overlap is the field's IoU with +1-pixel areas. Model
outputs are converted once, with :func:`pcsc_d2.structures.d2_to_gt`, before they get here.

The linker walks a video's frames once per class. Its cost per frame is bounded by the
number of live tubes times the (at most ``post_nms_topk``) detections of that frame, so very
long videos scale linearly. Frames where a class has no detection are never visited: a tube's
misses are counted from the ordinal of the frame it last matched.
"""
import dataclasses
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "Tube",
    "LinkingOptions",
    "box_iou",
    "paired_box_iou",
    "nms",
    "link_video",
    "link_class",
]

logger = logging.getLogger(__name__)


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


@dataclasses.dataclass
class Tube:
    """An action tube: one box per frame over a contiguous range of frames.

    Attributes:
        label: 0-based class index.
        frames: (L,) int64 1-based frame indices, increasing.
        boxes: (L, 4) float32 x1 y1 x2 y2, inclusive pixel corners.
        scores: (L,) float32 per-box detection scores.
        score: the tube's score (mean of its top-k box scores).
        extras: per-box arrays of shape (L, ...) that travelled with the detections
            (e.g. "actionness" (L,)).
        video: the video key "Class/video" (may be empty when unknown).
    """

    label: int
    frames: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    score: float
    extras: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    video: str = ""

    def __len__(self) -> int:
        return len(self.frames)

    def to_json(self) -> Dict[str, Any]:
        """The CLI's tube format: {"video", "label", "score", "frames", "boxes"}."""
        return {
            "video": self.video,
            "label": int(self.label),
            "score": float(self.score),
            "frames": [int(f) for f in self.frames],
            "boxes": np.round(self.boxes.astype(np.float64), 2).tolist(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Tube":
        """Inverse of :meth:`to_json` (per-box scores are set to the tube score)."""
        frames = np.asarray(d["frames"], dtype=np.int64).reshape(-1)
        boxes = np.asarray(d["boxes"], dtype=np.float32).reshape(-1, 4)
        if len(frames) != len(boxes):
            raise ValueError(f"tube has {len(frames)} frames but {len(boxes)} boxes")
        score = float(d["score"])
        return cls(
            label=int(d["label"]),
            frames=frames,
            boxes=boxes,
            scores=np.full(len(frames), score, dtype=np.float32),
            score=score,
            video=str(d.get("video", "")),
        )


@dataclasses.dataclass
class LinkingOptions:
    """Thresholds of the online linker; the defaults equal the ``TUBES.*`` config keys.

    ``order_window`` is the number of most recent matched box scores whose mean orders the
    live tubes at every frame (better tubes choose first); it is not a config key.
    """

    score_thresh: float = 0.001
    pre_nms_topk: int = 50
    nms_thresh: float = 0.45
    post_nms_topk: int = 10
    iou_thresh: float = 0.1
    max_missed: int = 3
    min_length: int = 5
    score_topk: int = 40
    order_window: int = 5

    @classmethod
    def from_config(cls, cfg) -> "LinkingOptions":
        t = cfg.TUBES
        return cls(
            score_thresh=t.SCORE_THRESH,
            pre_nms_topk=t.PRE_NMS_TOPK,
            nms_thresh=t.NMS_THRESH,
            post_nms_topk=t.POST_NMS_TOPK,
            iou_thresh=t.IOU_THRESH,
            max_missed=t.MAX_MISSED,
            min_length=t.MIN_LENGTH,
            score_topk=t.SCORE_TOPK,
        )


def topk_mean(scores: np.ndarray, k: int) -> float:
    """Mean of the ``k`` largest values (all of them when fewer)."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) > k > 0:
        scores = np.partition(scores, len(scores) - k)[len(scores) - k :]
    return float(scores.mean()) if len(scores) else 0.0


class _LiveTube:
    __slots__ = ("dets", "frames", "last_box", "last_ordinal", "recent")

    def __init__(self, det: int, frame: int, box: List[float], ordinal: int, score: float):
        self.dets = [det]
        self.frames = [frame]
        self.last_box = box
        self.last_ordinal = ordinal
        self.recent = [score]


def link_class(
    frames: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    ordinals: np.ndarray,
    opts: LinkingOptions,
) -> List[List[int]]:
    """Link one class's detections (already filtered and NMS-ed) over a video.

    Args:
        frames: (N,) int 1-based frame of each detection, non-decreasing.
        boxes: (N, 4) x1 y1 x2 y2, inclusive pixel corners.
        scores: (N,) scores, decreasing within each frame.
        ordinals: (N,) position of each detection's frame among the video's processed
            frames (misses are counted in processed frames).
        opts: the linking options.

    Returns:
        For each tube, the indices (into the inputs) of its detections, in frame order. Tubes
        with fewer than ``opts.min_length`` detections are already dropped.
    """
    n = len(frames)
    if n == 0:
        return []
    starts = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]])
    ends = np.r_[starts[1:], n]
    box_list = boxes.tolist()
    score_list = scores.tolist()
    frame_list = frames.tolist()
    ordinal_list = ordinals.tolist()
    live: List[_LiveTube] = []
    finished: List[_LiveTube] = []
    window = opts.order_window
    for s, e in zip(starts.tolist(), ends.tolist()):
        ordinal = ordinal_list[s]
        # Tubes that missed more than max_missed processed frames have ended.
        alive = []
        for t in live:
            (alive if ordinal - t.last_ordinal <= opts.max_missed else finished).append(t)
        live = alive
        claimed = [False] * (e - s)
        if live:
            live.sort(key=lambda t: -sum(t.recent) / len(t.recent))
            gate = _gate([t.last_box for t in live], box_list[s:e], opts.iou_thresh)
            for t, row in zip(live, gate):
                # Detections are sorted by score: the first open one is the best.
                for j, ok in enumerate(row):
                    if ok and not claimed[j]:
                        claimed[j] = True
                        d = s + j
                        t.dets.append(d)
                        t.frames.append(frame_list[d])
                        t.last_box = box_list[d]
                        t.last_ordinal = ordinal
                        t.recent.append(score_list[d])
                        if len(t.recent) > window:
                            del t.recent[0]
                        break
        for j, c in enumerate(claimed):
            if not c:
                d = s + j
                live.append(_LiveTube(d, frame_list[d], box_list[d], ordinal, score_list[d]))
    finished.extend(live)
    finished.sort(key=lambda t: (t.frames[0], t.dets[0]))
    return [t.dets for t in finished if len(t.dets) >= opts.min_length]


def _select_for_linking(
    labels: np.ndarray,
    frames: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    opts: LinkingOptions,
) -> np.ndarray:
    """Per (class, frame): score > thresh, top ``pre_nms_topk``, NMS, top ``post_nms_topk``.

    Returns:
        Indices of the kept detections ordered by (class, frame, decreasing score).
    """
    idx = np.flatnonzero(scores > opts.score_thresh)
    idx = idx[np.lexsort((-scores[idx], frames[idx], labels[idx]))]
    if len(idx) == 0:
        return idx
    lab, fr = labels[idx], frames[idx]
    group = np.r_[True, (lab[1:] != lab[:-1]) | (fr[1:] != fr[:-1])]
    starts = np.flatnonzero(group)
    sizes = np.diff(np.r_[starts, len(idx)])
    rank = np.arange(len(idx)) - np.repeat(starts, sizes)
    idx, rank = idx[rank < opts.pre_nms_topk], rank[rank < opts.pre_nms_topk]
    keep = np.ones(len(idx), dtype=bool)
    starts = np.flatnonzero(rank == 0)
    ends = np.r_[starts[1:], len(idx)]
    # Only groups of two or more boxes need NMS; singletons pass as they are.
    for s, e in zip(starts.tolist(), ends.tolist()):
        if e - s < 2:
            continue
        members = idx[s:e]
        kept = nms(boxes[members], scores[members], opts.nms_thresh, opts.post_nms_topk)
        keep[s:e] = False
        keep[s + kept] = True
    return idx[keep]


def link_video(
    frame_ids: Sequence[int],
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    extras: Optional[Mapping[str, Sequence[np.ndarray]]] = None,
    opts: Optional[LinkingOptions] = None,
    video: str = "",
) -> List[Tube]:
    """Link a video's detections into tubes, independently for every class.

    Args:
        frame_ids: the processed frames (1-based), one entry per frame, in any order. A
            frame without detections must still be listed (with empty arrays): misses are
            counted in processed frames.
        boxes: per frame, (N_f, 4) x1 y1 x2 y2, inclusive pixel corners.
        scores: per frame, (N_f,) detection scores.
        labels: per frame, (N_f,) 0-based class indices.
        extras: name -> per frame (N_f, ...) per-detection arrays (e.g. actionness) that are
            carried into the tubes box by box.
        opts: linking options (defaults: the TUBES.* config defaults).
        video: the video key stored in the tubes.

    Returns:
        Tubes sorted by class then start frame. Gaps inside a tube (frames it missed, or
        frames that were not processed) are filled by repeating the previous box, its score
        and extras; the tube score is the mean of the top ``score_topk`` *matched* box scores.
    """
    opts = opts or LinkingOptions()
    extras = extras or {}
    if not (len(frame_ids) == len(boxes) == len(scores) == len(labels)):
        raise ValueError(f"video {video!r}: per-frame inputs have different lengths")
    sizes = np.asarray([len(s) for s in scores], dtype=np.int64)
    order = np.argsort(np.asarray(frame_ids, dtype=np.int64), kind="stable")
    frame_arr = np.asarray(frame_ids, dtype=np.int64)
    ordinal_of_frame = np.empty(len(order), dtype=np.int64)
    ordinal_of_frame[order] = np.arange(len(order))
    if sizes.sum() == 0:
        return []
    all_boxes = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in boxes])
    all_scores = np.concatenate([np.asarray(s, np.float32).reshape(-1) for s in scores])
    all_labels = np.concatenate([np.asarray(c, np.int64).reshape(-1) for c in labels])
    all_frames = np.repeat(frame_arr, sizes)
    all_ordinals = np.repeat(ordinal_of_frame, sizes)
    all_extras = {k: np.concatenate([np.asarray(x) for x in v]) for k, v in extras.items()}
    for k, v in all_extras.items():
        if len(v) != len(all_scores):
            raise ValueError(
                f"video {video!r}: extra {k!r} has {len(v)} values for "
                f"{len(all_scores)} detections"
            )
    sel = _select_for_linking(all_labels, all_frames, all_boxes, all_scores, opts)
    sel_labels = all_labels[sel]
    bounds = np.flatnonzero(np.r_[True, sel_labels[1:] != sel_labels[:-1], True])
    tubes: List[Tube] = []
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        members = sel[s:e]
        linked = link_class(
            all_frames[members],
            all_boxes[members],
            all_scores[members],
            all_ordinals[members],
            opts,
        )
        for dets in linked:
            tube = _make_tube(
                members[dets],
                int(sel_labels[s]),
                all_frames,
                all_boxes,
                all_scores,
                all_extras,
                opts,
                video,
            )
            tubes.append(tube)
    return tubes


def _make_tube(
    det_idx: np.ndarray,
    label: int,
    frames: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    extras: Dict[str, np.ndarray],
    opts: LinkingOptions,
    video: str,
) -> Tube:
    f = frames[det_idx]
    # Each frame of [first, last] takes the latest matched detection at or before it.
    full = np.arange(f[0], f[-1] + 1)
    src = det_idx[np.searchsorted(f, full, side="right") - 1]
    return Tube(
        label=label,
        frames=full,
        boxes=boxes[src].astype(np.float32),
        scores=scores[src].astype(np.float32),
        score=topk_mean(scores[det_idx], opts.score_topk),
        extras={k: v[src] for k, v in extras.items()},
        video=video,
    )
