"""The cross-stream pieces of PCSC that are not tied to one module: the message block shared by
image-level message passing (f_l) and feature cooperation (g_t), the stage schedule, and
proposal cooperation. The last two are pure functions so that tests can check them against the
paper on hand-made boxes.
"""
import logging
from dataclasses import dataclass
from typing import List, Tuple

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn

from detectron2.layers import Conv2d, nonzero_tuple

from .topk_nms import topk_batched_nms

logger = logging.getLogger(__name__)

__all__ = [
    "CrossStreamMessage",
    "CooperationStage",
    "cooperation_schedule",
    "cooperate_proposals",
    "STREAMS",
]

# The streams a detector may have, in the order they are built and reported.
STREAMS = ("rgb", "flow")
_OTHER = {"rgb": "flow", "flow": "rgb"}


class CrossStreamMessage(nn.Module):
    """A message from one stream to the other: 1x1 conv (reduce) -> ReLU -> 1x1 conv (restore).

    This is f_l of the image-level message passing (on C_l maps) and g_t of feature cooperation
    (on pooled (C, 7, 7) RoI features). The receiving stream adds the message to its own map.

    Initialisation: the first conv is MSRA-filled; the last conv starts small (normal, std
    ``last_std``) rather than zero. A zero last conv would leave the received map exactly equal to
    the pretrained one at the start (attractive), but it would also block all gradient into the
    sending stream and into the first conv until the last conv has moved; a small one keeps the
    start close to the unmodified features while every parameter learns from the first step.
    """

    def __init__(self, channels: int, reduction: int = 4, last_std: float = 0.01):
        """
        Args:
            channels: channels C of both the sending and the receiving map.
            reduction: the hidden width is ``max(channels // reduction, 1)``.
            last_std: std of the normal initialisation of the last conv.
        """
        super().__init__()
        if reduction < 1:
            raise ValueError(f"MODEL.PCSC.MESSAGE_REDUCTION must be >= 1, got {reduction}")
        hidden = max(channels // reduction, 1)
        self.reduce = Conv2d(channels, hidden, kernel_size=1, activation=nn.ReLU())
        self.restore = Conv2d(hidden, channels, kernel_size=1)
        weight_init.c2_msra_fill(self.reduce)
        nn.init.normal_(self.restore.weight, std=last_std)
        nn.init.zeros_(self.restore.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (N, C, H, W) map of the sending stream.

        Returns:
            (N, C, H, W) message, to be added to the receiving stream's map.
        """
        return self.restore(self.reduce(x))


@dataclass(frozen=True)
class CooperationStage:
    """One cooperation stage t >= 1 of PCSC.

    Attributes:
        stage: t.
        stream: the stream i this stage improves ("rgb" on odd t, "flow" on even t).
        other: the other stream j.
        own_source: the stage whose detections of stream i are its latest (B^i).
        other_source: the stage whose detections of stream j are its latest (B^j).
    """

    stage: int
    stream: str
    other: str
    own_source: int
    other_source: int


def cooperation_schedule(num_stages: int) -> List[CooperationStage]:
    """The schedule of stages 1..T: which stream each improves and which two box sets it unites.

    Stage 0 runs both streams on their own RPN proposals; afterwards odd stages improve RGB and
    even stages Flow, each from the latest detections of both streams:
    P_1^rgb = B_0^rgb U B_0^flow, P_2^flow = B_0^flow U B_1^rgb, P_3^rgb = B_1^rgb U B_2^flow,
    P_4^flow = B_2^flow U B_3^rgb.

    Args:
        num_stages: T >= 0.

    Returns:
        T entries, for t = 1..T.
    """
    if num_stages < 0:
        raise ValueError(f"MODEL.PCSC.NUM_STAGES must be >= 0, got {num_stages}")
    latest = {"rgb": 0, "flow": 0}
    schedule = []
    for t in range(1, num_stages + 1):
        stream = "rgb" if t % 2 == 1 else "flow"
        other = _OTHER[stream]
        schedule.append(CooperationStage(t, stream, other, latest[stream], latest[other]))
        latest[stream] = t
    return schedule


def _filter_boxes(
    boxes: torch.Tensor, scores: torch.Tensor, score_thresh: float, nms_thresh: float, topk: int
) -> torch.Tensor:
    keep = nonzero_tuple(scores > score_thresh)[0]
    boxes, scores = boxes[keep], scores[keep]
    # Class-agnostic NMS: the next stage needs places to look, whatever their class.
    idxs = torch.zeros_like(scores, dtype=torch.int64)
    keep = topk_batched_nms(boxes, scores, idxs, nms_thresh, topk)
    return boxes[keep]


def cooperate_proposals(
    own: Tuple[torch.Tensor, torch.Tensor],
    other: Tuple[torch.Tensor, torch.Tensor],
    *,
    score_thresh: float,
    nms_own: float,
    nms_other: float,
    topk: int,
    use_other: bool = True,
) -> torch.Tensor:
    """Proposal cooperation for one image: P_t^i = B^i U B^j.

    Only confident boxes (score > ``score_thresh``) are kept. The stream's own boxes go through
    NMS at ``nms_own``; the other stream's through a lower ``nms_other``: they are a
    complement, so near-duplicates of them are worth less than the own stream's.

    Args:
        own: (boxes (R1, 4), scores (R1,)) latest detections of the stream i.
        other: (boxes (R2, 4), scores (R2,)) latest detections of the other stream j.
        score_thresh: confidence filter.
        nms_own: NMS IoU threshold for the own boxes.
        nms_other: NMS IoU threshold for the other stream's boxes.
        topk: at most this many boxes are kept from each stream.
        use_other: False turns proposal cooperation off (own boxes only).

    Returns:
        (M, 4) proposal boxes, own boxes first (sorted by score), then the other stream's.
    """
    parts = [_filter_boxes(own[0], own[1], score_thresh, nms_own, topk)]
    if use_other:
        parts.append(_filter_boxes(other[0], other[1], score_thresh, nms_other, topk))
    return torch.cat(parts, dim=0)
