"""Box voting over the union of PCSC's stages (Gidaris and Komodakis, ICCV 2015, "voting").

PCSC's output is the union of every stage's detections after per-class NMS, and NMS keeps, for
each object, the box with the highest score. The stages that score an object best are not the
ones that place it best: on the synthetic benchmark the cooperation stages classify better but
their boxes overlap the GT less than RGB stage 0's (tools/box_quality.py). Voting keeps NMS's
choice of detections and scores but replaces each kept box by the score-weighted mean of the
boxes of its class, from all stages, that overlap it enough, so every stage's localisation
counts in proportion to its confidence.
"""
import torch

__all__ = ["VOTING_WEIGHTS", "vote_boxes", "voting_weights"]

# MODEL.PCSC.TEST_BOX_VOTING_WEIGHT's values (see :func:`voting_weights`).
VOTING_WEIGHTS = ("class", "foreground")


def vote_boxes(
    kept_boxes: torch.Tensor,
    kept_classes: torch.Tensor,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_thresh: float,
    score_thresh: float = 0.0,
) -> torch.Tensor:
    """Refine NMS-kept boxes by the score-weighted mean of the candidates overlapping them.

    Args:
        kept_boxes: (K, 4) x1 y1 x2 y2 of the detections NMS kept.
        kept_classes: (K,) their classes.
        boxes: (R, 4) class-agnostic or (R, C * 4) class-specific candidate boxes (all stages).
        scores: (R, C) or (R, C + 1) candidate class scores (a last background column is
            ignored).
        iou_thresh: candidates overlapping a kept box by at least this vote for it.
        score_thresh: candidates scoring at most this for the class do not vote.

    Returns:
        (K, 4) voted boxes (a kept box always votes for itself when it is a candidate).
    """
    if len(kept_boxes) == 0 or len(boxes) == 0:
        return kept_boxes
    if boxes.shape[1] == 4:  # class-agnostic: every kept box sees the same candidates
        cand = boxes[None].expand(len(kept_boxes), -1, -1)  # (K, R, 4)
    else:
        cand = boxes.view(len(boxes), -1, 4)[:, kept_classes].transpose(0, 1)  # (K, R, 4)
    weight = scores[:, kept_classes].T  # (K, R)
    overlap = _paired_iou(kept_boxes[:, None], cand)  # (K, R)
    weight = torch.where((overlap >= iou_thresh) & (weight > score_thresh), weight, 0)
    total = weight.sum(dim=1, keepdim=True)
    voted = (weight[..., None] * cand).sum(dim=1) / total.clamp(min=1e-12)
    return torch.where(total > 0, voted, kept_boxes)


def _paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes broadcast against each other: a (..., 4) with b (..., 4)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(dim=-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(dim=-1)
    return inter / (area_a + area_b - inter).clamp(min=1e-12)


def voting_weights(scores: torch.Tensor, weight: str = "class") -> torch.Tensor:
    """What each candidate's vote weighs, per class.

    Args:
        scores: (R, C + 1) class probabilities of the candidates, background last.
        weight: "class": a candidate's probability of the kept box's class; "foreground":
            1 - its background probability for every class (a stage that finds the actor but
            cannot tell its action still places the box).

    Returns:
        (R, C) weights for :func:`vote_boxes`.
    """
    if weight == "class":
        return scores[:, :-1]
    if weight == "foreground":
        return (1 - scores[:, -1:]).expand(-1, scores.shape[1] - 1)
    raise ValueError(f"voting weight must be one of {VOTING_WEIGHTS}, got {weight!r}")
