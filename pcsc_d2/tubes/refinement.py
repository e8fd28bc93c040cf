"""Temporal refinement (TR) of linked tubes with per-box actionness scores (PCSC, video level).

Every box of a class-c tube carries the probability, from the class-c actionness classifier,
that it shows action c. TR smooths these along the tube and drops the boxes that fall below a
threshold. Two rules (``TUBES.REFINE.MODE``):

- "ends": the tube keeps the span from its first to its last box above the threshold (TR as a
  temporal boundary refinement: low boxes inside that span stay);
- "split": the tube keeps its boxes above the threshold; dips of at most ``max_gap`` boxes are
  bridged and longer dips split the tube into pieces.

Pure functions on :class:`~pcsc_d2.tubes.linking.Tube` lists.
"""
import dataclasses
import logging
from typing import List, Sequence

import numpy as np
from scipy.ndimage import median_filter

from .linking import Tube, topk_mean

__all__ = ["RefineOptions", "refine_tube", "refine_tubes"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RefineOptions:
    """Options of TR; the defaults equal the ``TUBES.REFINE.*`` config keys.

    Attributes:
        median_window: window (boxes, odd) of the median filter along the tube.
        thresh: boxes whose filtered actionness is below this are dropped.
        mode: "ends" (trim the tube's ends only) or "split" (see the module docstring).
        max_gap: with "split", the tube is split where more than this many consecutive boxes
            were dropped; shorter dips are bridged (their boxes stay in the piece).
        min_length: pieces with fewer boxes than this are discarded.
        score_topk: a piece's score is the mean of its top-k box scores (as in linking).
        key: the name of the per-box actionness in ``Tube.extras``.
    """

    median_window: int = 9
    thresh: float = 0.5
    mode: str = "ends"
    max_gap: int = 5
    min_length: int = 5
    score_topk: int = 40
    key: str = "actionness"

    @classmethod
    def from_config(cls, cfg) -> "RefineOptions":
        r = cfg.TUBES.REFINE
        return cls(
            median_window=r.MEDIAN_WINDOW,
            thresh=r.THRESH,
            mode=r.MODE,
            max_gap=r.MAX_GAP,
            min_length=r.MIN_LENGTH,
            score_topk=cfg.TUBES.SCORE_TOPK,
        )


def smooth_actionness(actionness: np.ndarray, window: int) -> np.ndarray:
    """Median filter along a tube.

    The ends are padded by repeating the end values (not zeros, which would trim every tube
    by half a window).

    Args:
        actionness: (L,) per-box actionness.
        window: filter width; an even width is rounded up to the next odd one.

    Returns:
        (L,) float64 filtered actionness.
    """
    a = np.asarray(actionness, dtype=np.float64).reshape(-1)
    if window <= 1 or len(a) == 0:
        return a
    return median_filter(a, size=window | 1, mode="nearest")


MODES = ("ends", "split")


def _kept_pieces(keep: np.ndarray, max_gap: int, mode: str = "split") -> List[slice]:
    """Contiguous pieces spanning kept boxes: one from the first to the last ("ends"), or split
    where more than max_gap are dropped ("split")."""
    if mode not in MODES:
        raise ValueError(f"TUBES.REFINE.MODE must be one of {MODES}, got {mode!r}")
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        return []
    if mode == "ends":
        return [slice(int(kept[0]), int(kept[-1]) + 1)]
    # kept[i + 1] - kept[i] - 1 boxes were dropped between two kept ones.
    cuts = np.flatnonzero(np.diff(kept) - 1 > max_gap)
    firsts = np.r_[kept[0], kept[cuts + 1]]
    lasts = np.r_[kept[cuts], kept[-1]]
    return [slice(int(a), int(b) + 1) for a, b in zip(firsts, lasts)]


def refine_tube(tube: Tube, opts: RefineOptions) -> List[Tube]:
    """Trim and split one tube by its smoothed actionness.

    Args:
        tube: a tube whose ``extras[opts.key]`` holds (L,) actionness in [0, 1] (the
            probability of the tube's own class).
        opts: the TR options.

    Returns:
        The tube's pieces (possibly none), each re-scored by the mean of its top-k matched box
        scores (as linking scores tubes) and carrying the smoothed actionness in
        ``extras[opts.key + "_smoothed"]``.
    """
    if opts.key not in tube.extras:
        raise KeyError(f"tube of video {tube.video!r} has no per-box {opts.key!r} to refine with")
    smoothed = smooth_actionness(tube.extras[opts.key], opts.median_window)
    if len(smoothed) != len(tube):
        raise ValueError(
            f"tube of video {tube.video!r}: {len(smoothed)} actionness values for "
            f"{len(tube)} boxes"
        )
    pieces = []
    for sl in _kept_pieces(smoothed >= opts.thresh, opts.max_gap, opts.mode):
        if sl.stop - sl.start < opts.min_length:
            continue
        extras = {k: v[sl] for k, v in tube.extras.items()}
        extras[opts.key + "_smoothed"] = smoothed[sl]
        piece = Tube(
            label=tube.label,
            frames=tube.frames[sl],
            boxes=tube.boxes[sl],
            scores=tube.scores[sl],
            score=0.0,
            extras=extras,
            video=tube.video,
            matched=None if tube.matched is None else tube.matched[sl],
        )
        # Scored as linking scores a tube (its matched boxes), so an untouched tube keeps its
        # score; a piece made only of repeated boxes falls back to them.
        scores = piece.matched_scores()
        piece.score = topk_mean(scores if len(scores) else piece.scores, opts.score_topk)
        pieces.append(piece)
    return pieces


def refine_tubes(tubes: Sequence[Tube], opts: RefineOptions) -> List[Tube]:
    """:func:`refine_tube` over a list; the pieces keep the input order."""
    out: List[Tube] = []
    for t in tubes:
        out.extend(refine_tube(t, opts))
    return out
