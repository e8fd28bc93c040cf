"""Online linking of per-frame detections into action tubes (Singh et al. 2017).

Every box here is in the ground truth's pixel convention (0-indexed, inclusive corners; see
:mod:`pcsc_d2.structures`), and every overlap is the field's IoU with +1-pixel areas. Model
outputs are converted once, with :func:`pcsc_d2.structures.d2_to_gt`, before they get here.

One implementation serves both uses: :class:`OnlineLinker` takes the frames one at a time
(the streaming demo links as frames arrive, holding only the live tubes), and
:func:`link_video` feeds it a whole video's detections. The cost per frame is bounded by the
number of live tubes times the (at most ``post_nms_topk``) detections of that frame, so very
long videos scale linearly. Misses are counted in processed frames (ordinals), so a frame
stride links across the frames that were not processed.
"""
import bisect
import dataclasses
import heapq
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .boxes import _gate, box_iou, nms, paired_box_iou

__all__ = [
    "Tube",
    "LinkingOptions",
    "GAP_FILLS",
    "box_iou",
    "paired_box_iou",
    "nms",
    "link_video",
    "LiveTube",
    "OnlineLinker",
]

logger = logging.getLogger(__name__)


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
        matched: (L,) bool, True where the box is a detection the linker matched, False where
            it repeats the previous one across a gap; None when unknown (every box counts).
            Tube scores average the matched boxes' scores only.
    """

    label: int
    frames: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    score: float
    extras: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    video: str = ""
    matched: Optional[np.ndarray] = None

    def matched_scores(self) -> np.ndarray:
        """The scores of the matched boxes (all of them when ``matched`` is unknown)."""
        return self.scores if self.matched is None else self.scores[self.matched]

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


GAP_FILLS = ("repeat", "linear")


@dataclasses.dataclass
class LinkingOptions:
    """Thresholds of the online linker; the defaults equal the ``TUBES.*`` config keys.

    ``order_window`` is the number of most recent matched box scores whose mean orders the
    live tubes at every frame (better tubes choose first); it is not a config key.
    ``gap_fill`` gives the boxes of a tube's frames between two matches (missed, or not
    processed with a frame stride): "repeat" the earlier match's box (Singh et al.'s released
    code) or "linear", interpolated between the two matches.
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
    gap_fill: str = "repeat"

    def __post_init__(self):
        if self.gap_fill not in GAP_FILLS:
            raise ValueError(f"TUBES.GAP_FILL must be one of {GAP_FILLS}, got {self.gap_fill!r}")

    @classmethod
    def from_config(cls, cfg) -> "LinkingOptions":
        t = cfg.TUBES
        return cls(
            gap_fill=t.GAP_FILL,
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


class LiveTube:
    """A tube that is still being linked (the state of :class:`OnlineLinker`).

    Attributes:
        label: 0-based class index.
        tube_id: a number unique within the linker, in order of creation.
        frames: the frames (1-based, increasing) of its matched detections.
        boxes: per matched frame, x1 y1 x2 y2 (inclusive pixel corners) as float32 values.
        scores: per matched frame, the detection score.
        extras: name -> per matched frame, that detection's extra value or row.
        rank: the rank (by score) of its first detection within its first frame; it orders
            tubes that start at the same frame.
    """

    __slots__ = ("label", "tube_id", "frames", "boxes", "scores", "extras", "rank", "last_ordinal",
                 "recent", "_topk", "_topk_sum")

    def __init__(self, label: int, tube_id: int, rank: int):
        self.label = label
        self.tube_id = tube_id
        self.rank = rank
        self.frames: List[int] = []
        self.boxes: List[List[float]] = []
        self.scores: List[float] = []
        self.extras: Dict[str, list] = {}
        self.last_ordinal = -1
        self.recent: List[float] = []
        self._topk: List[float] = []  # min-heap of the best score_topk scores
        self._topk_sum = 0.0

    def add(self, frame: int, box: List[float], score: float, ordinal: int, extras: Dict,
            opts: "LinkingOptions") -> None:
        """Append a matched detection."""
        self.frames.append(frame)
        self.boxes.append(box)
        self.scores.append(score)
        for k, v in extras.items():
            self.extras.setdefault(k, []).append(v)
        self.last_ordinal = ordinal
        self.recent.append(score)
        if len(self.recent) > opts.order_window:
            del self.recent[0]
        if opts.score_topk <= 0 or len(self._topk) < opts.score_topk:
            heapq.heappush(self._topk, score)
            self._topk_sum += score
        elif score > self._topk[0]:
            self._topk_sum += score - heapq.heapreplace(self._topk, score)

    @property
    def score(self) -> float:
        """The running tube score: mean of the top ``score_topk`` matched scores so far."""
        return self._topk_sum / len(self._topk) if self._topk else 0.0

    def box_at(self, frame: int, gap_fill: str = "repeat") -> Optional[List[float]]:
        """The box at ``frame`` as the finished tube will have it, if already known.

        Frames between two matches are filled as :meth:`to_tube` fills them (``gap_fill`` of
        :class:`LinkingOptions`); frames before the first match or after the last one give None.
        """
        if not self.frames or not self.frames[0] <= frame <= self.frames[-1]:
            return None
        i = bisect.bisect_right(self.frames, frame) - 1
        if gap_fill == "repeat" or self.frames[i] == frame:
            return self.boxes[i]
        a, b = self.frames[i], self.frames[i + 1]
        w = (frame - a) / (b - a)
        return [(1 - w) * p + w * q for p, q in zip(self.boxes[i], self.boxes[i + 1])]

    def to_tube(self, opts: "LinkingOptions", video: str = "") -> Tube:
        """The finished :class:`Tube`: every frame from the first match to the last, gaps
        (missed or unprocessed frames) filled with the previous match's score and extras and a
        box as ``opts.gap_fill`` says; scored by the mean of its top ``score_topk`` matched
        scores."""
        f = np.asarray(self.frames, dtype=np.int64)
        full = np.arange(f[0], f[-1] + 1)
        src = np.searchsorted(f, full, side="right") - 1
        scores = np.asarray(self.scores, dtype=np.float32)
        boxes = np.asarray(self.boxes, dtype=np.float32)
        if opts.gap_fill == "linear" and len(f) < len(full):
            boxes = np.stack([np.interp(full, f, boxes[:, c]) for c in range(4)], 1)
        else:
            boxes = boxes[src]
        return Tube(
            label=self.label,
            frames=full,
            boxes=boxes.astype(np.float32, copy=False),
            scores=scores[src],
            score=topk_mean(scores, opts.score_topk),
            extras={k: np.stack(v)[src] for k, v in self.extras.items()},
            video=video,
            matched=np.isin(full, f),
        )


class OnlineLinker:
    """Links detections into tubes as frames arrive, independently for every class.

    The online linking of Singh et al. (2017): at every processed frame, per class, the
    detections are filtered (score > ``score_thresh``, top ``pre_nms_topk``, NMS at
    ``nms_thresh``, top ``post_nms_topk``); the live tubes, best first (mean of their last
    ``order_window`` matched scores), each take the best unclaimed detection whose IoU with
    their last box is >= ``iou_thresh``; unclaimed detections start new tubes; a tube that
    missed more than ``max_missed`` consecutive processed frames ends.

    Memory holds the live tubes only: ended tubes are handed back by :meth:`step` and
    :meth:`finish`, so a video of any length can be linked in a stream.

    Example::

        linker = OnlineLinker(LinkingOptions(), video="Class/v1")
        done = []
        for frame, det in detections:              # in increasing frame order
            done += linker.step(frame, det["boxes"], det["scores"], det["classes"])
        done += linker.finish()
    """

    def __init__(self, opts: Optional[LinkingOptions] = None, video: str = ""):
        self.opts = opts or LinkingOptions()
        self.video = video
        self._live: Dict[int, List[LiveTube]] = {}
        self._ordinal = -1
        self._last_frame: Optional[int] = None
        self._next_id = 0

    @property
    def live_tubes(self) -> List[LiveTube]:
        """The tubes still being linked (every class), including those still too short."""
        return [t for label in sorted(self._live) for t in self._live[label]]

    def step(
        self,
        frame: int,
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        extras: Optional[Mapping[str, np.ndarray]] = None,
    ) -> List[Tube]:
        """Link the detections of the next processed frame.

        Args:
            frame: the frame (1-based); larger than the previous step's. Frames never passed
                to step (e.g. with a frame stride) are bridged, and misses are counted in
                processed frames.
            boxes: (N, 4) x1 y1 x2 y2, inclusive pixel corners.
            scores: (N,) detection scores.
            labels: (N,) 0-based class indices.
            extras: name -> (N, ...) per-detection values carried into the tubes box by box
                (e.g. actionness).

        Returns:
            The tubes that ended at this frame (missed more than ``max_missed`` processed
            frames) and have at least ``min_length`` matched boxes, sorted by (class, start
            frame, rank of the first detection).
        """
        return self._to_tubes(self._advance(frame, boxes, scores, labels, extras))

    def _advance(self, frame, boxes, scores, labels, extras) -> List[LiveTube]:
        """:meth:`step` without the conversion: returns every tube that ended."""
        frame = int(frame)
        if self._last_frame is not None and frame <= self._last_frame:
            raise ValueError(
                f"video {self.video!r}: frame {frame} linked after frame {self._last_frame}; "
                "frames must arrive in increasing order"
            )
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        extras = {k: np.asarray(v) for k, v in (extras or {}).items()}
        n = len(scores)
        if len(boxes) != n or len(labels) != n or any(len(v) != n for v in extras.values()):
            sizes = {"boxes": len(boxes), "labels": len(labels)}
            sizes.update({k: len(v) for k, v in extras.items()})
            raise ValueError(
                f"video {self.video!r}, frame {frame}: {n} scores but per-detection sizes {sizes}"
            )
        self._last_frame = frame
        self._ordinal += 1
        ordinal, opts = self._ordinal, self.opts
        ended: List[LiveTube] = []
        for label, live in self._live.items():
            alive = []
            for t in live:
                # A tube that missed more than max_missed processed frames has ended.
                (alive if ordinal - t.last_ordinal <= opts.max_missed else ended).append(t)
            self._live[label] = alive
        sel = _select_for_linking(labels, boxes, scores, opts)
        if len(sel):
            sel_labels = labels[sel]
            starts = np.flatnonzero(np.concatenate(([True], sel_labels[1:] != sel_labels[:-1])))
            starts = starts.tolist()
            for s, e in zip(starts, starts[1:] + [len(sel)]):
                self._link_class(int(sel_labels[s]), frame, ordinal, sel[s:e], boxes, scores,
                                 extras)
        return ended

    def finish(self) -> List[Tube]:
        """End every live tube; returns those with at least ``min_length`` matched boxes,
        sorted by (class, start frame, rank of the first detection). The linker is then empty.
        """
        return self._to_tubes(self._end_all())

    def _end_all(self) -> List[LiveTube]:
        ended = [t for live in self._live.values() for t in live]
        self._live = {}
        return ended

    def _to_tubes(self, ended: List[LiveTube]) -> List[Tube]:
        """The ended tubes long enough to keep, as Tubes in (class, start, rank) order."""
        kept = [t for t in ended if len(t.frames) >= self.opts.min_length]
        kept.sort(key=lambda t: (t.label, t.frames[0], t.rank))
        return [t.to_tube(self.opts, self.video) for t in kept]

    def _link_class(self, label: int, frame: int, ordinal: int, members: np.ndarray,
                    boxes: np.ndarray, scores: np.ndarray, extras: Dict[str, np.ndarray]) -> None:
        """Match one class's selected detections (best first) to its live tubes."""
        box_list = boxes[members].tolist()
        score_list = scores[members].tolist()

        def extras_of(j: int) -> Dict:
            # Rows of multi-dimensional extras are copied: a view would keep the frame's array.
            d = members[j]
            return {k: v[d].copy() if v.ndim > 1 else v[d] for k, v in extras.items()}

        live = self._live.setdefault(label, [])
        claimed = [False] * len(members)
        if live:
            # Better tubes choose first (a stable sort: ties keep their order).
            live.sort(key=lambda t: -sum(t.recent) / len(t.recent))
            gate = _gate([t.boxes[-1] for t in live], box_list, self.opts.iou_thresh)
            for t, row in zip(live, gate):
                # Detections are sorted by score: the first open one is the best.
                for j, ok in enumerate(row):
                    if ok and not claimed[j]:
                        claimed[j] = True
                        t.add(frame, box_list[j], score_list[j], ordinal, extras_of(j), self.opts)
                        break
        for j, c in enumerate(claimed):
            if not c:
                t = LiveTube(label, self._next_id, rank=j)
                self._next_id += 1
                t.add(frame, box_list[j], score_list[j], ordinal, extras_of(j), self.opts)
                live.append(t)


def _select_for_linking(
    labels: np.ndarray, boxes: np.ndarray, scores: np.ndarray, opts: LinkingOptions
) -> np.ndarray:
    """One frame's detections to link, per class: score > thresh, top ``pre_nms_topk``, NMS,
    top ``post_nms_topk``.

    Args:
        labels: (N,) int64 classes; boxes: (N, 4) float32; scores: (N,) float32.

    Returns:
        Indices of the kept detections ordered by (class, decreasing score).
    """
    idx = np.flatnonzero(scores > opts.score_thresh)
    if len(idx) == 0:
        return idx
    idx = idx[np.lexsort((-scores[idx], labels[idx]))]
    lab = labels[idx]
    starts = np.flatnonzero(np.concatenate(([True], lab[1:] != lab[:-1]))).tolist()
    kept = []
    for s, e in zip(starts, starts[1:] + [len(idx)]):
        members = idx[s : min(e, s + opts.pre_nms_topk)]
        # Only groups of two or more boxes need NMS; singletons pass as they are.
        if len(members) > 1:
            members = members[
                nms(boxes[members], scores[members], opts.nms_thresh, opts.post_nms_topk)
            ]
        kept.append(members)
    return np.concatenate(kept)


def link_video(
    frame_ids: Sequence[int],
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    extras: Optional[Mapping[str, Sequence[np.ndarray]]] = None,
    opts: Optional[LinkingOptions] = None,
    video: str = "",
) -> List[Tube]:
    """Link a whole video's detections into tubes, independently for every class.

    The offline entry point of :class:`OnlineLinker`: the frames are fed to it in order.

    Args:
        frame_ids: the processed frames (1-based), one entry per frame, in any order, each
            once. A frame without detections must still be listed (with empty arrays): misses
            are counted in processed frames.
        boxes: per frame, (N_f, 4) x1 y1 x2 y2, inclusive pixel corners.
        scores: per frame, (N_f,) detection scores.
        labels: per frame, (N_f,) 0-based class indices.
        extras: name -> per frame (N_f, ...) per-detection arrays (e.g. actionness) that are
            carried into the tubes box by box.
        opts: linking options (defaults: the TUBES.* config defaults).
        video: the video key stored in the tubes.

    Returns:
        Tubes sorted by class then start frame. Gaps inside a tube (frames it missed, or
        frames that were not processed) repeat the previous match's score and extras, and
        their boxes follow ``opts.gap_fill``; the tube score is the mean of the top
        ``score_topk`` *matched* box scores.
    """
    extras = extras or {}
    if not (len(frame_ids) == len(boxes) == len(scores) == len(labels)) or any(
        len(v) != len(frame_ids) for v in extras.values()
    ):
        raise ValueError(f"video {video!r}: per-frame inputs have different lengths")
    order = np.argsort(np.asarray(frame_ids, dtype=np.int64), kind="stable")
    linker = OnlineLinker(opts, video)
    ended: List[LiveTube] = []
    for i in order.tolist():
        ended += linker._advance(frame_ids[i], boxes[i], scores[i], labels[i],
                                 {k: v[i] for k, v in extras.items()})
    return linker._to_tubes(ended + linker._end_all())
