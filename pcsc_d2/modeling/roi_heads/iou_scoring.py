"""IoU-aware scores for a box head: rank the boxes of one object by how well they fit it.

A Fast R-CNN head's class probability says *what* a box shows, not how well it fits: the box
that wins NMS is often not the best-fitting one (on the synthetic benchmark the top-scoring
box of a GT overlaps it by 0.64 on average where the best box reaches 0.77), which caps the
video-mAP at high IoU thresholds. :class:`IoUAwareOutputLayers` adds a third output, the
predicted IoU of the head's regressed box with its object, trained on the foreground proposals
(binary cross-entropy against the IoU, as a soft target), and scores a box at test time by

    score_k = p_k ** (1 - alpha) * iou ** alpha        (k a foreground class)

(the background probability is kept as it is). With ``alpha = 0`` the scores are the plain
class probabilities. MODEL.PCSC.IOU_SCORING turns it on for every stage's head.
"""
from typing import Dict, List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.layers import cat
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Boxes, Instances
from detectron2.structures.boxes import matched_pairwise_iou

__all__ = ["IoUAwareOutputLayers", "matched_iou"]


def matched_iou(boxes: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of row i of ``boxes`` with row i of ``gt``, both (R, 4) XYXY; returns (R,)."""
    return matched_pairwise_iou(Boxes(boxes), Boxes(gt))


class IoUAwareOutputLayers(FastRCNNOutputLayers):
    """FastRCNNOutputLayers with an IoU branch; predictions are (scores, deltas, iou_logits)."""

    def __init__(self, *args, alpha: float = 0.5, iou_loss_weight: float = 1.0, **kwargs):
        """
        Args:
            args, kwargs: for :class:`FastRCNNOutputLayers` (``cfg, input_shape, ...``).
            alpha: the weight of the predicted IoU in the test score, in [0, 1].
            iou_loss_weight: the weight of the IoU branch's loss.
        """
        super().__init__(*args, **kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"MODEL.PCSC.IOU_SCORING.ALPHA must lie in [0, 1], got {alpha}")
        self.alpha = alpha
        self.iou_loss_weight = iou_loss_weight
        self.iou_pred = nn.Linear(self.cls_score.in_features, 1)
        nn.init.normal_(self.iou_pred.weight, std=0.01)
        nn.init.constant_(self.iou_pred.bias, 0.0)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (R, D) features; returns scores (R, K + 1), deltas (R, 4 or 4K), IoU logits (R,)."""
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        scores, deltas = super().forward(x)
        return scores, deltas, self.iou_pred(x).squeeze(1)

    def losses(self, predictions, proposals: List[Instances]) -> Dict[str, torch.Tensor]:
        """detectron2's losses plus ``loss_iou``: BCE of the IoU logit against the IoU of the
        regressed box (its GT class's, detached) with the matched GT box, on foreground
        proposals; 0 where a batch has none."""
        scores, deltas, iou_logits = predictions
        losses = super().losses((scores, deltas), proposals)
        if not len(proposals):
            losses["loss_iou"] = iou_logits.sum() * 0.0
            return losses
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        fg = (gt_classes >= 0) & (gt_classes < self.num_classes)
        boxes = torch.cat(self.predict_boxes((scores, deltas.detach()), proposals))
        if boxes.shape[1] > 4:  # class-specific regression: the GT class's box
            idx = gt_classes.clamp(max=self.num_classes - 1)
            boxes = boxes.view(len(boxes), -1, 4)[torch.arange(len(boxes), device=idx.device), idx]
        # An image without GT has only background proposals: its own boxes stand in (masked).
        gt = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor
                  for p in proposals], dim=0)
        target = matched_iou(boxes, gt).detach()
        # Sum over the foreground, divided by their count (a mean that is 0 without any).
        loss = F.binary_cross_entropy_with_logits(iou_logits, target, reduction="none")
        losses["loss_iou"] = self.iou_loss_weight * (loss * fg).sum() / fg.sum().clamp(min=1)
        return losses

    def predict_boxes(self, predictions, proposals: List[Instances]):
        return super().predict_boxes(predictions[:2], proposals)

    def predict_probs(self, predictions, proposals: List[Instances]):
        """Per image (R_i, K + 1): foreground columns p_k^(1 - alpha) * iou^alpha, background
        column p_bg."""
        probs = torch.cat(super().predict_probs(predictions[:2], proposals))
        iou = predictions[2].sigmoid()[:, None]
        fg = probs[:, :-1].clamp(min=0) ** (1.0 - self.alpha) * iou ** self.alpha
        return torch.cat([fg, probs[:, -1:]], dim=1).split([len(p) for p in proposals])
