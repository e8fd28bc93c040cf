import numpy as np
import pytest

from pcsc_d2.evaluation import GroundTruth, tube_iou, tube_nms, video_ap
from pcsc_d2.tubes import Tube

BOX = np.array([0.0, 0.0, 9.0, 9.0])


def _tube(video, label, first, last, score, box=BOX):
    frames = np.arange(first, last + 1)
    return Tube(label=label, frames=frames, boxes=np.tile(box, (len(frames), 1)),
                scores=np.full(len(frames), score), score=score, video=video)


def _gt(spans, labels=("a", "b")):
    """spans: video -> [(label, first, last)]."""
    gttubes = {}
    for v, tubes in spans.items():
        per = gttubes.setdefault(v, {})
        for c, a, b in tubes:
            per.setdefault(c, []).append(np.c_[np.arange(a, b + 1), np.tile(BOX, (b - a + 1, 1))])
    return GroundTruth.from_annotations(
        {"labels": list(labels), "videos": list(spans), "gttubes": gttubes})


def test_tube_iou_hand_example():
    f1, f2 = np.arange(1, 11), np.arange(6, 16)
    boxes = np.tile(BOX, (10, 1))
    # Frames 6..10 in common out of 1..15: 5 / 15; identical boxes.
    assert tube_iou(f1, boxes, f2, boxes) == pytest.approx(1 / 3)
    # Half-overlapping boxes on the common frames (IoU 1/3): 1/3 * 1/3.
    shifted = boxes + np.array([5.0, 0.0, 5.0, 0.0])
    assert tube_iou(f1, boxes, f2, shifted) == pytest.approx(1 / 9)
    assert tube_iou(f1, boxes, np.arange(11, 15), boxes[:4]) == 0.0
    # A tube with holes: extent 2..5 of 1..9, mean IoU over the frames both hold (2, 4).
    holes = np.array([2, 4, 9])
    assert tube_iou(np.arange(1, 6), boxes[:5], holes, boxes[:3]) == pytest.approx(4 / 9)


def test_perfect_tubes_give_100_at_every_threshold():
    gt = _gt({"v0": [(0, 1, 20)], "v1": [(1, 5, 30), (1, 40, 50)]})
    tubes = [_tube("v0", 0, 1, 20, 0.9), _tube("v1", 1, 5, 30, 0.8), _tube("v1", 1, 40, 50, 0.7)]
    res = video_ap(gt, tubes)
    for thr, ap in res["ap"].items():
        np.testing.assert_allclose(ap, [1.0, 1.0], err_msg=str(thr))


def test_right_boxes_wrong_extent():
    # Detected on 1..10 of a 1..20 tube: tube IoU 0.5 exactly (thresholds are inclusive).
    gt = _gt({"v0": [(0, 1, 20)]})
    res = video_ap(gt, [_tube("v0", 0, 1, 10, 0.9)], iou_threshs=(0.2, 0.5, 0.75))
    assert res["ap"][0.2][0] == pytest.approx(1.0)
    assert res["ap"][0.5][0] == pytest.approx(1.0)
    assert res["ap"][0.75][0] == 0.0


def test_false_positive_first_act_vs_voc_and_nms():
    gt = _gt({"v0": [(0, 1, 20)], "v1": [(1, 1, 5)]})
    tubes = [
        _tube("v1", 0, 1, 20, 0.95),  # no class-0 tube in v1: FP ranked first
        _tube("v0", 0, 1, 20, 0.9),  # TP
        _tube("v0", 0, 1, 19, 0.85),  # duplicate, removed by tube NMS (IoU 0.95 > 0.3)
        _tube("v0", 0, 30, 40, 0.8),  # no temporal overlap with the kept tube: stays, FP
    ]
    act = video_ap(gt, tubes, iou_threshs=(0.5,))
    voc = video_ap(gt, tubes, iou_threshs=(0.5,), convention="voc")
    assert act["num_tubes"] == 3
    assert act["ap"][0.5][0] == pytest.approx(0.25)
    assert voc["ap"][0.5][0] == pytest.approx(0.5)
    # Class 1 has GT but no tube: AP 0. Without NMS the duplicate is one more FP after the
    # TP, which leaves the ACT AP unchanged.
    assert act["ap"][0.5][1] == 0.0
    no_nms = video_ap(gt, tubes, iou_threshs=(0.5,), nms_thresh=1.0)
    assert no_nms["num_tubes"] == 4 and no_nms["ap"][0.5][0] == pytest.approx(0.25)


def test_each_gt_tube_matches_once_and_tube_nms_order():
    gt = _gt({"v0": [(0, 1, 10), (0, 21, 30)]})
    # Two tubes on the first GT tube (not suppressed: NMS off); the second cannot reuse it.
    tubes = [_tube("v0", 0, 1, 10, 0.9), _tube("v0", 0, 1, 10, 0.8), _tube("v0", 0, 21, 30, 0.7)]
    res = video_ap(gt, tubes, iou_threshs=(0.5,), nms_thresh=1.0)
    # (0.5, 1), (0.5, 0.5), (1, 2/3).
    assert res["ap"][0.5][0] == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2)
    assert tube_nms(tubes, 0.3) == [0, 2]
