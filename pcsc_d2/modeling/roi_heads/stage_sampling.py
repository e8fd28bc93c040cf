"""Training labels of a cooperation stage's proposals, at that stage's own foreground IoU.

detectron2's ``ROIHeads.label_and_sample_proposals`` labels with the heads' one
``proposal_matcher``; PCSC's stages may each have their own (MODEL.PCSC.STAGE_IOU_THRESHS, as
Cascade R-CNN raises the IoU from stage to stage). :func:`label_and_sample_at_stage` does the same
steps with a given matcher: add the GT boxes, label, sample foreground / background.
"""
from typing import List, Sequence

import torch

from detectron2.modeling.matcher import Matcher
from detectron2.modeling.proposal_generator.proposal_utils import add_ground_truth_to_proposals
from detectron2.modeling.roi_heads import ROIHeads
from detectron2.structures import Instances, pairwise_iou
from detectron2.utils.events import get_event_storage

__all__ = ["label_and_sample_at_stage", "per_stage"]


def per_stage(values: Sequence, num_stages: int, key: str) -> List:
    """A per-stage config list (one entry for each stage 0..T) checked for its length.

    Args:
        values: the config value; empty when not set.
        num_stages: T.
        key: its name under MODEL.PCSC, for the error.

    Returns:
        list(values), [] when not set.
    """
    if len(values) and len(values) != num_stages + 1:
        raise ValueError(
            f"MODEL.PCSC.{key} has {len(values)} entries; give one per stage 0..{num_stages} "
            f"({num_stages + 1}) or none"
        )
    return list(values)


@torch.no_grad()
def label_and_sample_at_stage(
    heads: ROIHeads, proposals: List[Instances], targets: List[Instances], matcher: Matcher
) -> List[Instances]:
    """``heads.label_and_sample_proposals(proposals, targets)`` with ``matcher`` in place of
    ``heads.proposal_matcher``.

    Args:
        heads: the RoI heads (their GT appending, sampler and class count are used).
        proposals: N Instances with proposal_boxes.
        targets: N Instances with gt_boxes and gt_classes.
        matcher: labels a proposal foreground above the stage's IoU.

    Returns:
        N Instances of the sampled proposals with gt_classes (background = num_classes) and,
        in images with GT, the other gt_ fields of their matched GT box.
    """
    if heads.proposal_append_gt:
        proposals = add_ground_truth_to_proposals(targets, proposals)
    sampled, num_fg, num_bg = [], [], []
    for props, target in zip(proposals, targets):
        matched_idxs, matched_labels = matcher(pairwise_iou(target.gt_boxes, props.proposal_boxes))
        idxs, gt_classes = heads._sample_proposals(matched_idxs, matched_labels, target.gt_classes)
        props = props[idxs]
        props.gt_classes = gt_classes
        if len(target) > 0:
            for name, value in target.get_fields().items():
                if name.startswith("gt_") and not props.has(name):
                    props.set(name, value[matched_idxs[idxs]])
        # Counts stay tensors here (no host copy); the event storage reads them once.
        num_bg.append((gt_classes == heads.num_classes).sum())
        num_fg.append(gt_classes.numel() - num_bg[-1])
        sampled.append(props)
    if sampled:
        storage = get_event_storage()
        storage.put_scalar("roi_head/num_fg_samples", torch.stack(num_fg).float().mean())
        storage.put_scalar("roi_head/num_bg_samples", torch.stack(num_bg).float().mean())
    return sampled
