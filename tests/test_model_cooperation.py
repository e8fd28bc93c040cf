"""The pure pieces of PCSC's cooperation: the stage schedule, proposal cooperation, g_t / f_l."""
import os

import pytest
import torch

from pcsc_d2.modeling.roi_heads.cooperation import (
    CooperationStage,
    CrossStreamMessage,
    cooperate_proposals,
    cooperation_schedule,
)

_TINY_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "quick", "pcsc_tiny.yaml")


def test_schedule_is_the_papers():
    # REFERENCE: P_1^rgb = B_0^rgb U B_0^flow, P_2^flow = B_0^flow U B_1^rgb,
    # P_3^rgb = B_1^rgb U B_2^flow, P_4^flow = B_2^flow U B_3^rgb.
    assert cooperation_schedule(4) == [
        CooperationStage(1, "rgb", "flow", own_source=0, other_source=0),
        CooperationStage(2, "flow", "rgb", own_source=0, other_source=1),
        CooperationStage(3, "rgb", "flow", own_source=1, other_source=2),
        CooperationStage(4, "flow", "rgb", own_source=2, other_source=3),
    ]
    assert cooperation_schedule(0) == []
    assert cooperation_schedule(2) == cooperation_schedule(4)[:2]
    with pytest.raises(ValueError):
        cooperation_schedule(-1)


def _boxes(rows):
    t = torch.tensor(rows, dtype=torch.float32)
    return t[:, :4], t[:, 4]


# Own stream: A, B overlaps A with IoU 90/110 = 0.82 (> 0.7: suppressed), C is not confident,
# F and G overlap with IoU 80/120 = 0.67 (< 0.7: both kept).
_OWN = _boxes(
    [
        [0, 0, 10, 10, 0.9],  # A
        [1, 0, 11, 10, 0.8],  # B
        [50, 50, 60, 60, 0.01],  # C
        [0, 20, 10, 30, 0.7],  # F
        [2, 20, 12, 30, 0.5],  # G
    ]
)
# Other stream: D, and E overlapping D with IoU 0.67: kept under 0.7 but suppressed by the lower
# threshold 0.5 used for the other stream's boxes; H is not confident.
_OTHER = _boxes([[20, 20, 30, 30, 0.9], [22, 20, 32, 30, 0.6], [70, 0, 80, 10, 0.04]])
_KW = dict(score_thresh=0.05, nms_own=0.7, nms_other=0.5, topk=10)


def test_proposal_cooperation_hand_made():
    boxes = cooperate_proposals(_OWN, _OTHER, **_KW)
    expected = torch.tensor(
        [[0, 0, 10, 10], [0, 20, 10, 30], [2, 20, 12, 30], [20, 20, 30, 30]], dtype=torch.float32
    )
    assert torch.equal(boxes, expected)


def test_proposal_cooperation_other_stream_uses_the_lower_threshold():
    # The same boxes as the own stream's keep both F and G (0.67 < 0.7) ...
    own_only = cooperate_proposals(_OTHER, _boxes([[0, 0, 1, 1, 0.0]]), **_KW)
    assert len(own_only) == 2
    # ... and one of them as the other stream's (0.67 > 0.5).
    as_other = cooperate_proposals(_boxes([[0, 0, 1, 1, 0.0]]), _OTHER, **_KW)
    assert torch.equal(as_other, torch.tensor([[20.0, 20, 30, 30]]))


def test_proposal_cooperation_off_and_topk():
    own = cooperate_proposals(_OWN, _OTHER, use_other=False, **_KW)
    assert torch.equal(own, torch.tensor([[0.0, 0, 10, 10], [0, 20, 10, 30], [2, 20, 12, 30]]))
    top1 = cooperate_proposals(_OWN, _OTHER, **{**_KW, "topk": 1})
    assert torch.equal(top1, torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]))
    empty = cooperate_proposals(_boxes([[0, 0, 5, 5, 0.0]]), _boxes([[0, 0, 5, 5, 0.0]]), **_KW)
    assert empty.shape == (0, 4)


def test_message_block_shapes_and_gradient():
    torch.manual_seed(0)
    msg = CrossStreamMessage(16, reduction=4)
    assert msg.reduce.weight.shape == (4, 16, 1, 1) and msg.restore.weight.shape == (16, 4, 1, 1)
    x = torch.randn(2, 16, 5, 7, requires_grad=True)
    y = msg(x)
    assert y.shape == x.shape
    y.sum().backward()
    # The small (not zero) last conv lets gradient reach the sender from the first step.
    assert x.grad.abs().sum() > 0
    assert msg.reduce.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        CrossStreamMessage(16, reduction=0)


def test_actionness_head_uses_each_samples_own_classifier():
    from pcsc_d2.modeling.actionness import PCSCActionnessHead

    linear = PCSCActionnessHead(in_dim=2, num_classes=3, hidden_dim=0)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
        linear.bias.copy_(torch.tensor([0.0, -1.0, 0.5]))
    x = torch.tensor([[3.0, 4.0], [3.0, 4.0], [3.0, 4.0]])
    assert torch.equal(linear(x, torch.tensor([0, 1, 2])), torch.tensor([3.0, 7.0, 7.5]))

    torch.manual_seed(0)
    mlp = PCSCActionnessHead(in_dim=5, num_classes=4, hidden_dim=3)
    feats, classes = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 1, 0])
    before = mlp(feats, classes)
    assert before.shape == (6,)
    with torch.no_grad():  # class 2's classifier changes: only the sample of class 2 moves
        mlp.hidden_weight[:, 2 * 3 : 3 * 3].add_(1.0)
        mlp.weight[2].add_(1.0)
    after = mlp(feats, classes)
    assert (after != before).tolist() == [False, False, True, False, False, False]
    with pytest.raises(ValueError):
        mlp(feats, classes[:2])


def test_box_voting_weights_overlapping_boxes_of_the_class_by_score():
    from pcsc_d2.modeling.roi_heads.box_voting import vote_boxes

    kept = torch.tensor([[10.0, 10.0, 30.0, 50.0], [100.0, 0.0, 120.0, 20.0]])
    classes = torch.tensor([1, 0])
    boxes = torch.tensor([
        [10.0, 10.0, 30.0, 50.0],   # the kept box itself
        [12.0, 10.0, 32.0, 50.0],   # overlaps it (IoU 0.82), class-1 score 0.5
        [60.0, 60.0, 80.0, 90.0],   # far away: no vote
        [100.0, 0.0, 120.0, 20.0],  # the second kept box, class 0
    ])
    scores = torch.tensor([[0.0, 0.9, 0.1], [0.3, 0.5, 0.2], [0.0, 0.9, 0.1], [0.8, 0.1, 0.1]])
    out = vote_boxes(kept, classes, boxes, scores[:, :2], iou_thresh=0.7)
    # (0.9 * 10 + 0.5 * 12) / 1.4 for x1 and (0.9 * 30 + 0.5 * 32) / 1.4 for x2.
    assert torch.allclose(out[0], torch.tensor([15 / 1.4, 10.0, 43 / 1.4, 50.0]), atol=1e-4)
    # The class-0 box: the overlapping class-1 candidates vote with their class-0 scores only.
    assert torch.allclose(out[1], kept[1])
    # A higher IoU threshold leaves the lone box; a score threshold above 0.5 too.
    assert torch.allclose(vote_boxes(kept, classes, boxes, scores[:, :2], 0.9), kept)
    assert torch.allclose(vote_boxes(kept, classes, boxes, scores[:, :2], 0.7, 0.6), kept)
    # Class-specific candidates: each class votes with its own boxes.
    specific = torch.cat([boxes + 100, boxes], dim=1)  # class 0 far away, class 1 as before
    assert torch.allclose(vote_boxes(kept, classes, specific, scores[:, :2], 0.7)[0], out[0])


def test_box_voting_by_foreground_weighs_every_box_by_one_minus_background():
    from pcsc_d2.modeling.roi_heads.box_voting import vote_boxes, voting_weights

    scores = torch.tensor([[0.0, 0.9, 0.1], [0.6, 0.2, 0.2], [0.5, 0.0, 0.5]])  # bg last
    assert torch.equal(voting_weights(scores, "class"), scores[:, :2])
    torch.testing.assert_close(voting_weights(scores, "foreground"),
                               torch.tensor([[0.9, 0.9], [0.8, 0.8], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="voting weight"):
        voting_weights(scores, "iou")
    # The second box is sure it is an actor, not of which class: by foreground it pulls the
    # class-1 box (0.9 * 10 + 0.8 * 12) / 1.7, by class score only (0.9 * 10 + 0.2 * 12) / 1.1.
    kept, classes = torch.tensor([[10.0, 10.0, 30.0, 50.0]]), torch.tensor([1])
    boxes = torch.tensor([[10.0, 10.0, 30.0, 50.0], [12.0, 10.0, 32.0, 50.0],
                          [60.0, 60.0, 80.0, 90.0]])
    fg = vote_boxes(kept, classes, boxes, voting_weights(scores, "foreground"), 0.7)
    by_class = vote_boxes(kept, classes, boxes, voting_weights(scores, "class"), 0.7)
    torch.testing.assert_close(fg[0, 0], torch.tensor(18.6 / 1.7))
    torch.testing.assert_close(by_class[0, 0], torch.tensor(11.4 / 1.1))


@pytest.mark.parametrize("pass_gt", [False, True])
def test_predictions_on_added_gt_boxes_stay_out_of_the_next_stage(pass_gt):
    """In training, sampling adds the GT boxes to a stage's proposals; what the stage predicts
    on them is not passed to the next stage's proposal cooperation (no GT box at test)."""
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances

    from pcsc_d2.config import add_pcsc_config

    cfg = get_cfg()
    add_pcsc_config(cfg)
    cfg.merge_from_file(_TINY_CONFIG)
    cfg.MODEL.PCSC.PASS_GT_PROPOSALS = pass_gt
    torch.manual_seed(0)
    heads = build_model(cfg).roi_heads.train()
    prop = Instances((64, 96))
    prop.proposal_boxes = Boxes(torch.tensor([[10.0, 12, 40, 50], [0, 0, 30, 30], [50, 5, 90, 60]]))
    prop.gt_boxes = Boxes(torch.tensor([[10.0, 12, 40, 50], [10, 12, 40, 50], [50, 5, 80, 60]]))
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    logits = torch.zeros(3, num_classes + 1)
    logits[:, 0] = 5.0  # confident class 0 everywhere
    predictions = (logits, torch.zeros(3, 4))
    (boxes, scores), = heads._detections({("rgb", 0): (predictions, [prop])}, "rgb", 0)
    # Row 0 is a GT box (proposal == its GT): kept only when PASS_GT_PROPOSALS is on.
    assert len(boxes) == (3 if pass_gt else 2)
    assert torch.equal(boxes[-2:], prop.proposal_boxes.tensor[1:])
