"""IoU-aware scores (MODEL.PCSC.IOU_SCORING): hand-made values of the target, the loss and the
test score, and the detector training and testing with it."""
import os

import torch
from torch.nn import functional as F

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import pcsc_d2.modeling  # noqa: F401  (registers the PCSC components)
from pcsc_d2.config import add_pcsc_config
from pcsc_d2.modeling.roi_heads.iou_scoring import IoUAwareOutputLayers, matched_iou

_TINY = os.path.join(os.path.dirname(__file__), "..", "configs", "quick", "pcsc_tiny.yaml")


def _cfg(enabled=True, alpha=0.5):
    cfg = get_cfg()
    add_pcsc_config(cfg)
    cfg.merge_from_file(_TINY)
    cfg.MODEL.PCSC.IOU_SCORING.ENABLED = enabled
    cfg.MODEL.PCSC.IOU_SCORING.ALPHA = alpha
    return cfg


def _layers(alpha=0.5):
    from detectron2.modeling.box_regression import Box2BoxTransform

    torch.manual_seed(0)
    return IoUAwareOutputLayers(
        _cfg(alpha=alpha), ShapeSpec(channels=8), box2box_transform=Box2BoxTransform((10, 10, 5, 5)),
        alpha=alpha,
    )


def test_matched_iou_hand_made():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    gt = torch.tensor([[5.0, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]])
    torch.testing.assert_close(matched_iou(boxes, gt), torch.tensor([50 / 150, 1.0, 0.0]))


def test_scores_are_class_probability_and_predicted_iou_mixed_by_alpha():
    layers = _layers(alpha=0.5)
    num_classes = layers.num_classes
    logits = torch.zeros(2, num_classes + 1)
    logits[0, 0] = 2.0
    iou_logits = torch.tensor([0.0, 3.0])  # predicted IoU 0.5 and sigmoid(3)
    prop = Instances((50, 50))
    prop.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]))
    (probs,) = layers.predict_probs((logits, torch.zeros(2, 4), iou_logits), [prop])
    plain = F.softmax(logits, dim=1)
    iou = torch.sigmoid(iou_logits)[:, None]
    torch.testing.assert_close(probs[:, :-1], (plain[:, :-1] * iou).sqrt())
    torch.testing.assert_close(probs[:, -1], plain[:, -1])  # background as it was
    # The better-fitting box outranks a box of equal class probability.
    logits[1, 0] = 2.0
    (probs,) = layers.predict_probs((logits, torch.zeros(2, 4), iou_logits), [prop])
    assert probs[1, 0] > probs[0, 0]
    # alpha = 0: plain class probabilities.
    (probs,) = _layers(alpha=0.0).predict_probs((logits, torch.zeros(2, 4), iou_logits), [prop])
    torch.testing.assert_close(probs, F.softmax(logits, dim=1))


def test_iou_loss_is_bce_on_foreground_against_the_regressed_boxs_iou():
    layers = _layers()
    bg = layers.num_classes
    prop = Instances((60, 60))
    prop.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [30, 30, 40, 40]]))
    prop.gt_boxes = Boxes(torch.tensor([[5.0, 0, 15, 10], [0, 0, 10, 10], [0, 0, 10, 10]]))
    prop.gt_classes = torch.tensor([1, 0, bg])
    scores = torch.zeros(3, bg + 1)
    deltas = torch.zeros(3, 4, requires_grad=True)  # regressed box = proposal
    iou_logits = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    with EventStorage():
        losses = layers.losses((scores, deltas, iou_logits), [prop])
    target = torch.tensor([1 / 3, 1.0])  # the two foreground rows; the background row is out
    expected = F.binary_cross_entropy_with_logits(iou_logits[:2], target)
    torch.testing.assert_close(losses["loss_iou"], expected)
    losses["loss_iou"].backward()
    assert deltas.grad is None or not deltas.grad.any()  # the target is detached from the boxes
    assert iou_logits.grad[2] == 0
    # No foreground: a zero loss that still has a graph.
    prop.gt_classes = torch.tensor([bg, bg, bg])
    with EventStorage():
        zero = layers.losses((scores, deltas, iou_logits), [prop])["loss_iou"]
    assert zero.item() == 0.0 and zero.requires_grad


def _input(with_gt, seed):
    g = torch.Generator().manual_seed(seed)
    inst = Instances((64, 80))
    boxes = [[10.0, 12.0, 40.0, 50.0]] if with_gt else torch.zeros(0, 4)
    inst.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor([1] if with_gt else [], dtype=torch.int64)
    clip = lambda: torch.randint(0, 256, (3, 4, 64, 80), generator=g, dtype=torch.uint8)  # noqa
    return {"rgb": clip(), "flow": clip(), "instances": inst, "height": 64, "width": 80}


def test_detector_trains_and_tests_with_iou_scoring():
    cfg = _cfg()
    cfg.MODEL.PCSC.NUM_STAGES = 2
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    torch.manual_seed(0)
    model = build_model(cfg)
    assert all(isinstance(p, IoUAwareOutputLayers) for p in model.roi_heads.box_predictors.values())
    with EventStorage():
        losses = model([_input(True, 0), _input(False, 1)])
    iou_losses = {k for k in losses if k.startswith("loss_iou")}
    assert iou_losses == {"loss_iou_s0_rgb", "loss_iou_s0_flow", "loss_iou_s1_rgb",
                          "loss_iou_s2_flow"}
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictors["rgb_s0"].iou_pred.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        inst = model([_input(True, 0)])[0]["instances"]
    assert len(inst) > 0 and ((inst.scores >= 0) & (inst.scores <= 1)).all()
    # Off: detectron2's own output layers, no IoU loss.
    assert not any(isinstance(p, IoUAwareOutputLayers)
                   for p in build_model(_cfg(enabled=False)).roi_heads.box_predictors.values())
