"""NMS that stops at the top k survivors returns what full NMS then [:k] returns."""
import torch

from detectron2.layers import batched_nms
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference_single_image

from pcsc_d2.modeling.roi_heads.topk_nms import fast_rcnn_inference_topk, topk_batched_nms


def _boxes(num: int, g: torch.Generator, spread: float = 300.0) -> torch.Tensor:
    xy = torch.rand(num, 2, generator=g) * spread
    wh = torch.rand(num, 2, generator=g) * 80 + 4
    return torch.cat([xy, xy + wh], dim=1)


def test_topk_nms_equals_full_nms_then_topk():
    g = torch.Generator().manual_seed(0)
    restarts = 0
    for num, classes, topk, iou, spread in [
        (5000, 24, 100, 0.5, 300.0),   # many survivors: the first try is enough
        (5000, 1, 300, 0.7, 300.0),    # class-agnostic, as the cooperation NMS
        (3000, 2, 100, 0.3, 40.0),     # crowded: few survive, the candidates grow
        (2000, 3, 500, 0.5, 30.0),     # fewer survivors than k: every box ends up a candidate
        (50, 4, 100, 0.5, 300.0),      # fewer boxes than the first try
        (1000, 5, -1, 0.5, 300.0),     # k < 0 keeps all
        (1000, 5, 0, 0.5, 300.0),
    ]:
        boxes = _boxes(num, g, spread)
        scores = torch.rand(num, generator=g)
        idxs = torch.randint(0, classes, (num,), generator=g)
        full = batched_nms(boxes, scores, idxs, iou)
        expected = full if topk < 0 else full[:topk]
        got = topk_batched_nms(boxes, scores, idxs, iou, topk)
        assert torch.equal(got, expected), (num, classes, topk, iou, spread)
        restarts += 0 <= topk < len(full) and len(
            batched_nms(*(t[scores.argsort(descending=True)[: 4 * topk]]
                          for t in (boxes, scores, idxs)), iou)) < topk
    assert restarts >= 1  # the crowded case did need a second, larger try


def test_final_detections_equal_detectron2s():
    g = torch.Generator().manual_seed(1)
    for classes, reg_classes, topk in [(24, 24, 100), (24, 1, 100), (3, 3, 10), (24, 24, -1)]:
        num = 1500
        boxes = _boxes(num * reg_classes, g).view(num, 4 * reg_classes)
        boxes[0, 0] = float("nan")  # a non-finite row is dropped by both
        scores = torch.softmax(torch.randn(num, classes + 1, generator=g) * 2, dim=1)
        expected, _ = fast_rcnn_inference_single_image(boxes, scores, (240, 320), 0.05, 0.5, topk)
        got = fast_rcnn_inference_topk(boxes, scores, (240, 320), 0.05, 0.5, topk)
        assert len(got) == len(expected) > 0
        assert torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)
        assert torch.equal(got.scores, expected.scores)
        assert torch.equal(got.pred_classes, expected.pred_classes)
