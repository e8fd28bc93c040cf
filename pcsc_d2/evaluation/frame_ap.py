"""Frame-level evaluation: frame-AP per class, frame-mAP and MABO (ACT conventions).

Boxes are in the ground truth's pixel convention (inclusive corners) and overlaps use the
+1-pixel IoU. Everything is vectorised over the whole test set: the detections and the GT
boxes are flat arrays keyed by (class, video, frame).
"""
import dataclasses
import logging
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

from pcsc_d2.tubes.linking import paired_box_iou

from .ap import average_precision, check_convention, expand_pairs, greedy_match

__all__ = ["GroundTruth", "FrameDetections", "frame_ap", "frame_mabo", "frame_top_box_iou"]

logger = logging.getLogger(__name__)

# Frame indices stay below this in every key built here.
_FRAME_BASE = 1 << 22


@dataclasses.dataclass
class GroundTruth:
    """The ground truth of one split, flattened.

    Attributes:
        labels: class names.
        videos: the split's videos; video indices below point into it.
        box_video, box_frame, box_label, box_tube: (G,) int64 per GT box.
        boxes: (G, 4) float64 x1 y1 x2 y2, inclusive pixel corners.
        tube_video, tube_label: (T,) int64 per GT tube.
        tube_frames: T arrays (L_t,) int64; tube_boxes: T arrays (L_t, 4) float64.
    """

    labels: List[str]
    videos: List[str]
    box_video: np.ndarray
    box_frame: np.ndarray
    box_label: np.ndarray
    box_tube: np.ndarray
    boxes: np.ndarray
    tube_video: np.ndarray
    tube_label: np.ndarray
    tube_frames: List[np.ndarray]
    tube_boxes: List[np.ndarray]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @classmethod
    def from_annotations(cls, ann: Mapping[str, Any]) -> "GroundTruth":
        """Build from ``get_split_annotations``'s dict ("labels", "videos", "gttubes", ...)."""
        labels, videos = list(ann["labels"]), list(ann["videos"])
        tube_video, tube_label, tube_frames, tube_boxes = [], [], [], []
        for vi, video in enumerate(videos):
            for label, tubes in sorted(ann["gttubes"].get(video, {}).items()):
                if not 0 <= int(label) < len(labels):
                    raise ValueError(f"gttubes[{video!r}] has label {label} outside the "
                                     f"{len(labels)} classes")
                for t in tubes:
                    t = np.asarray(t, dtype=np.float64)
                    if t.ndim != 2 or t.shape[1] != 5:
                        raise ValueError(f"gttubes[{video!r}][{label}]: expected (n, 5) "
                                         f"frame x1 y1 x2 y2, got shape {t.shape}")
                    t = t[np.argsort(t[:, 0], kind="stable")]
                    tube_video.append(vi)
                    tube_label.append(int(label))
                    tube_frames.append(t[:, 0].astype(np.int64))
                    tube_boxes.append(t[:, 1:5])
        lengths = np.asarray([len(f) for f in tube_frames], dtype=np.int64)
        tube_video = np.asarray(tube_video, dtype=np.int64)
        tube_label = np.asarray(tube_label, dtype=np.int64)
        return cls(
            labels=labels,
            videos=videos,
            box_video=np.repeat(tube_video, lengths),
            box_frame=np.concatenate(tube_frames) if tube_frames else np.zeros(0, np.int64),
            box_label=np.repeat(tube_label, lengths),
            box_tube=np.repeat(np.arange(len(lengths)), lengths),
            boxes=np.concatenate(tube_boxes) if tube_boxes else np.zeros((0, 4)),
            tube_video=tube_video,
            tube_label=tube_label,
            tube_frames=tube_frames,
            tube_boxes=tube_boxes,
        )

    def restrict_to_frames(self, evaluated: Iterable[Tuple[str, int]]) -> "GroundTruth":
        """Keep only the GT boxes of evaluated (video, frame) pairs, for frame-level metrics.

        With a key-frame stride (or a partial run), GT boxes on frames the detector never saw
        would count as misses and cap recall. GT tubes (video-AP) are kept whole.
        """
        pos = {v: i for i, v in enumerate(self.videos)}
        keys = np.asarray(
            [pos[v] * _FRAME_BASE + int(f) for v, f in evaluated if v in pos], dtype=np.int64
        )
        keep = np.isin(self.box_video * _FRAME_BASE + self.box_frame, keys)
        return dataclasses.replace(
            self,
            box_video=self.box_video[keep],
            box_frame=self.box_frame[keep],
            box_label=self.box_label[keep],
            box_tube=self.box_tube[keep],
            boxes=self.boxes[keep],
        )


@dataclasses.dataclass
class FrameDetections:
    """All frame-level detections of a test set, flattened.

    Attributes:
        videos: video names; ``video`` indexes into it.
        video, frame, label: (N,) int64 (frames 1-based, labels 0-based).
        score: (N,) float32.
        boxes: (N, 4) float32 x1 y1 x2 y2, inclusive pixel corners.
    """

    videos: List[str]
    video: np.ndarray
    frame: np.ndarray
    label: np.ndarray
    score: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.score)

    def reindex(self, videos: Sequence[str]) -> "FrameDetections":
        """Re-express the video indices in ``videos``; detections on other videos are dropped."""
        pos = {v: i for i, v in enumerate(videos)}
        remap = np.asarray([pos.get(v, -1) for v in self.videos], dtype=np.int64)
        new = remap[self.video] if len(self.video) else self.video
        keep = new >= 0
        if not keep.all():
            unknown = sorted({self.videos[i] for i in np.unique(self.video[~keep])})
            logger.warning("Ignoring %d detections on %d videos outside the split (e.g. %s)",
                           int((~keep).sum()), len(unknown), unknown[0])
        return FrameDetections(list(videos), new[keep], self.frame[keep], self.label[keep],
                               self.score[keep], self.boxes[keep])

    def to_json(self) -> List[Dict[str, Any]]:
        """The CLI's detections format: [{"video", "frame", "label", "score", "box"}]."""
        boxes = np.round(self.boxes.astype(np.float64), 2).tolist()
        return [
            {"video": self.videos[v], "frame": f, "label": c, "score": s, "box": b}
            for v, f, c, s, b in zip(self.video.tolist(), self.frame.tolist(),
                                     self.label.tolist(), self.score.tolist(), boxes)
        ]


def _keys(label: np.ndarray, video: np.ndarray, frame: np.ndarray, num_videos: int) -> np.ndarray:
    return (label.astype(np.int64) * num_videos + video) * _FRAME_BASE + frame


def frame_ap(
    gt: GroundTruth,
    dets: FrameDetections,
    iou_thresh: float = 0.5,
    convention: str = "act",
) -> Dict[str, Any]:
    """Frame-AP of every class.

    Every test frame counts, annotated or not: a detection on a frame without a GT box of its
    class is a false positive. Detections are pooled per class over the split, sorted by score
    and matched greedily (:func:`~pcsc_d2.evaluation.ap.greedy_match`) to the GT boxes of their
    class in their frame; IoU >= ``iou_thresh`` (inclusive) makes a true positive.

    Args:
        gt: the split's ground truth.
        dets: detections whose ``videos`` equal ``gt.videos`` (see FrameDetections.reindex).
        iou_thresh: IoU for a true positive.
        convention: "act" or "voc" (see :mod:`pcsc_d2.evaluation.ap`).

    Returns:
        {"ap": (C,) float64 in [0, 1] (NaN: class without GT), "precision"/"recall": C
        arrays, "num_gt": (C,), "tp": (N,) bool, "matched": (N,) GT box index or -1,
        "iou_thresh", "ap_convention"}.
    """
    check_convention(convention)
    if dets.videos != gt.videos:
        raise ValueError("FrameDetections.videos must equal GroundTruth.videos (use reindex)")
    nv = max(len(gt.videos), 1)
    det_keys = _keys(dets.label, dets.video, dets.frame, nv)
    gt_keys = _keys(gt.box_label, gt.box_video, gt.box_frame, nv)
    pd, pg = expand_pairs(det_keys, gt_keys)
    piou = paired_box_iou(dets.boxes[pd], gt.boxes[pg])
    tp, matched = greedy_match(dets.score, pd, pg, piou, iou_thresh)
    num_gt = np.bincount(gt.box_label, minlength=gt.num_classes)
    aps, precisions, recalls = [], [], []
    for c in range(gt.num_classes):
        sel = dets.label == c
        ap, p, r = average_precision(dets.score[sel], tp[sel], int(num_gt[c]), convention)
        aps.append(ap)
        precisions.append(p)
        recalls.append(r)
    return {
        "ap": np.asarray(aps),
        "precision": precisions,
        "recall": recalls,
        "num_gt": num_gt,
        "tp": tp,
        "matched": matched,
        "iou_thresh": iou_thresh,
        "ap_convention": convention,
    }


def frame_mabo(gt: GroundTruth, dets: FrameDetections) -> Dict[str, Any]:
    """Mean Average Best Overlap (ACT's definition).

    For every GT box, its best IoU with any detection (of any class: MABO measures
    localisation, not classification) in the same frame, 0 when the frame has none. These are
    averaged per class over the class's GT boxes, then over the classes that have GT.

    Returns:
        {"mabo": float in [0, 1], "per_class": (C,) (NaN for classes without GT)}.
    """
    nv = max(len(gt.videos), 1)
    zeros_d = np.zeros(len(dets), dtype=np.int64)
    zeros_g = np.zeros(len(gt.box_frame), dtype=np.int64)
    pg, pd = expand_pairs(_keys(zeros_g, gt.box_video, gt.box_frame, nv),
                          _keys(zeros_d, dets.video, dets.frame, nv))
    best = np.zeros(len(gt.box_frame))
    if len(pg):
        np.maximum.at(best, pg, paired_box_iou(gt.boxes[pg], dets.boxes[pd]))
    mabo, per_class = _class_mean(best, gt.box_label, gt.num_classes)
    return {"mabo": mabo, "per_class": per_class}


def _class_mean(
    values: np.ndarray, labels: np.ndarray, num_classes: int
) -> Tuple[float, np.ndarray]:
    """(mean over the classes with GT of the per-class mean of ``values`` (G,), per-class
    means (C,) with NaN for classes without GT)."""
    counts = np.bincount(labels, minlength=num_classes)
    sums = np.bincount(labels, weights=values, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    mean = float(np.nanmean(per_class)) if (counts > 0).any() else float("nan")
    return mean, per_class


def frame_top_box_iou(
    gt: GroundTruth, dets: FrameDetections, min_iou: float = 0.1
) -> Dict[str, Any]:
    """How well the box that scores highest fits: for every GT box, the IoU of the
    highest-scoring detection of its class in its frame among those overlapping it by at least
    ``min_iou`` (online linking's gate: the box a tube through this GT box would follow); 0 when
    there is none. Averaged like MABO (per class, then over the classes with GT).

    MABO asks whether some detection fits; this asks whether the one the scores pick does. The
    gap between the two is the box quality that the scores give away.

    Args:
        gt: the split's ground truth.
        dets: detections whose ``videos`` equal ``gt.videos``.
        min_iou: the overlap below which a detection is another object's.

    Returns:
        {"top_box_iou": float in [0, 1], "per_class": (C,) (NaN for classes without GT)}.
    """
    if dets.videos != gt.videos:
        raise ValueError("FrameDetections.videos must equal GroundTruth.videos (use reindex)")
    nv = max(len(gt.videos), 1)
    pg, pd = expand_pairs(_keys(gt.box_label, gt.box_video, gt.box_frame, nv),
                          _keys(dets.label, dets.video, dets.frame, nv))
    iou = paired_box_iou(gt.boxes[pg], dets.boxes[pd]) if len(pg) else np.zeros(0)
    near = iou >= min_iou
    pg, pd, iou = pg[near], pd[near], iou[near]
    top = np.zeros(len(gt.box_frame))
    if len(pg):
        # Per GT box, its pairs by falling score: the first is the top-scoring detection.
        order = np.lexsort((-dets.score[pd], pg))
        pg, iou = pg[order], iou[order]
        first = np.r_[True, pg[1:] != pg[:-1]]
        top[pg[first]] = iou[first]
    mean, per_class = _class_mean(top, gt.box_label, gt.num_classes)
    return {"top_box_iou": mean, "per_class": per_class}
