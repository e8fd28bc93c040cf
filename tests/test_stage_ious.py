"""Per-stage foreground IoU and box-delta weights (MODEL.PCSC.STAGE_IOU_THRESHS,
STAGE_BBOX_REG_WEIGHTS): each stage labels at its own IoU; unset, training is unchanged."""
import pytest
import torch

from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from pcsc_d2.modeling.roi_heads import pcsc_cascade
from pcsc_d2.modeling.roi_heads.stage_sampling import label_and_sample_at_stage

from test_modeling import _cfg, _input, _model


def _losses(model, batch):
    torch.manual_seed(1)  # the fg / bg sampling draws from torch's generator
    with EventStorage():
        return {k: v.item() for k, v in model(batch).items()}


def test_one_iou_for_all_stages_trains_as_detectron2s_sampling(monkeypatch):
    model = _model(_cfg(NUM_STAGES=4))
    model.train()
    batch = [_input(True, 0), _input(True, 1)]
    ours = _losses(model, batch)
    # detectron2's own ROIHeads.label_and_sample_proposals (the heads' one proposal_matcher).
    monkeypatch.setattr(
        pcsc_cascade, "label_and_sample_at_stage",
        lambda heads, proposals, targets, matcher: heads.label_and_sample_proposals(
            proposals, targets
        ),
    )
    assert _losses(model, batch) == ours


def test_each_stage_labels_at_its_own_iou():
    model = _model(_cfg(NUM_STAGES=2, STAGE_IOU_THRESHS=[0.5, 0.7, 0.6]))
    heads = model.roi_heads
    assert [m.thresholds[1] for m in heads.stage_matchers] == [0.5, 0.7, 0.6]
    target = Instances((64, 80))
    target.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 30.0, 30.0]]))  # 20 x 20
    target.gt_classes = torch.tensor([2])
    proposals = Instances((64, 80))
    # IoU with the GT: 340 / 460 = 0.74 (shifted 3 px), 300 / 500 = 0.6 (shifted 5 px), 0.
    proposals.proposal_boxes = Boxes(
        torch.tensor([[13.0, 10.0, 33.0, 30.0], [15.0, 10.0, 35.0, 30.0], [50.0, 40.0, 70.0, 60.0]])
    )
    proposals.objectness_logits = torch.zeros(3)
    labels = {}
    with EventStorage():
        for stage in range(3):
            (out,) = label_and_sample_at_stage(heads, [proposals], [target],
                                               heads.stage_matchers[stage])
            # The appended GT box (IoU 1) is always foreground.
            labels[stage] = {tuple(b.tolist()): int(c)
                             for b, c in zip(out.proposal_boxes.tensor, out.gt_classes)}
    bg = heads.num_classes
    shifted3, shifted5 = (13.0, 10.0, 33.0, 30.0), (15.0, 10.0, 35.0, 30.0)
    far = (50.0, 40.0, 70.0, 60.0)
    assert labels[0] == {(10.0, 10.0, 30.0, 30.0): 2, shifted3: 2, shifted5: 2, far: bg}
    assert labels[1] == {(10.0, 10.0, 30.0, 30.0): 2, shifted3: 2, shifted5: bg, far: bg}
    assert labels[2][shifted5] == 2 and labels[2][far] == bg


def test_per_stage_box_delta_weights():
    weights = [(10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)]
    model = _model(_cfg(NUM_STAGES=2, STAGE_BBOX_REG_WEIGHTS=weights))
    got = {k: p.box2box_transform.weights for k, p in model.roi_heads.box_predictors.items()}
    assert got == {"rgb_s0": weights[0], "flow_s0": weights[0], "rgb_s1": weights[1],
                   "flow_s2": weights[2]}


@pytest.mark.parametrize("key", ["STAGE_IOU_THRESHS", "STAGE_BBOX_REG_WEIGHTS"])
def test_a_per_stage_list_of_the_wrong_length_names_the_key(key):
    value = [0.5, 0.6] if key == "STAGE_IOU_THRESHS" else [(10.0, 10.0, 5.0, 5.0)]
    with pytest.raises(ValueError, match=f"MODEL.PCSC.{key} has {len(value)} entries"):
        _model(_cfg(NUM_STAGES=2, **{key: value}))
