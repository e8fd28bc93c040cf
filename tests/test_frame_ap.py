import numpy as np
import pytest

from pcsc_d2.evaluation import (
    FrameDetections,
    GroundTruth,
    ap_from_pr,
    classify_false_positives,
    frame_ap,
    frame_mabo,
    frame_top_box_iou,
)
from pcsc_d2.evaluation.error_analysis import frame_ap_errors

BOX = [0.0, 0.0, 9.0, 9.0]  # 10 x 10 pixels
FAR = [100.0, 100.0, 109.0, 109.0]


def _gt(boxes_by_video, labels=("a", "b")):
    """boxes_by_video: video -> {label: [(frame, box), ...]} (one tube per label)."""
    gttubes = {v: {c: [np.array([[f] + list(b) for f, b in fb], np.float32)]
                   for c, fb in per.items()} for v, per in boxes_by_video.items()}
    return GroundTruth.from_annotations(
        {"labels": list(labels), "videos": list(boxes_by_video), "gttubes": gttubes}
    )


def _dets(gt, rows):
    """rows: (video index, frame, label, score, box)."""
    return FrameDetections(
        gt.videos,
        np.array([r[0] for r in rows], np.int64),
        np.array([r[1] for r in rows], np.int64),
        np.array([r[2] for r in rows], np.int64),
        np.array([r[3] for r in rows], np.float32),
        np.array([r[4] for r in rows], np.float32).reshape(-1, 4),
    )


def _ap(gt, rows, cls=0, **kw):
    return 100 * frame_ap(gt, _dets(gt, rows), **kw)["ap"][cls]


def test_perfect_detections_give_100():
    gt = _gt({"v0": {0: [(1, BOX), (2, BOX)]}, "v1": {1: [(5, FAR)]}})
    res = frame_ap(gt, _dets(gt, [(0, 1, 0, 0.9, BOX), (0, 2, 0, 0.8, BOX),
                                  (1, 5, 1, 0.7, FAR)]))
    np.testing.assert_allclose(res["ap"], [1.0, 1.0])


def test_false_positive_ranked_first_act_vs_voc():
    gt = _gt({"v0": {0: [(1, BOX)]}})
    rows = [(0, 1, 0, 0.9, FAR), (0, 1, 0, 0.8, BOX)]
    # PR points (0, 0), (1, 0.5); ACT adds (0, 1): trapezoid 0 + 1 * (0 + 0.5) / 2.
    assert _ap(gt, rows) == pytest.approx(25.0)
    # VOC: the envelope is 0.5 over the whole recall range.
    assert _ap(gt, rows, convention="voc") == pytest.approx(50.0)


def test_duplicate_detection_and_frames_without_gt():
    gt = _gt({"v0": {0: [(1, BOX), (2, BOX)]}})
    rows = [(0, 1, 0, 0.9, BOX), (0, 1, 0, 0.8, BOX), (0, 2, 0, 0.7, BOX)]
    # (0.5, 1), (0.5, 0.5), (1, 2/3): 0.5 * 1 + 0 + 0.5 * (0.5 + 2/3) / 2.
    assert _ap(gt, rows) == pytest.approx(100 * (0.5 + 0.5 * (0.5 + 2 / 3) / 2))
    assert _ap(gt, rows, convention="voc") == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
    # A detection on a frame without GT (frame 7) ranked first is a false positive.
    rows = [(0, 7, 0, 0.95, BOX), (0, 1, 0, 0.9, BOX), (0, 2, 0, 0.7, BOX)]
    # (0, 0), (0.5, 0.5), (1, 2/3): 0 + 0.5 * 0.5 / 2 + 0.5 * (0.5 + 2/3) / 2.
    assert _ap(gt, rows) == pytest.approx(100 * (0.125 + 0.5 * (0.5 + 2 / 3) / 2))


def test_threshold_is_inclusive():
    gt = _gt({"v0": {0: [(1, BOX)]}})
    exactly_half = [0.0, 0.0, 9.0, 19.0]  # IoU 100 / 200
    below = [0.0, 0.0, 9.0, 20.0]  # IoU 100 / 210
    assert _ap(gt, [(0, 1, 0, 0.9, exactly_half)]) == pytest.approx(100.0)
    assert _ap(gt, [(0, 1, 0, 0.9, below)]) == 0.0
    assert _ap(gt, [(0, 1, 0, 0.9, below)], iou_thresh=0.45) == pytest.approx(100.0)


def test_greedy_matching_with_several_gt_boxes_in_a_frame():
    left, right = [0.0, 0.0, 9.0, 9.0], [8.0, 0.0, 17.0, 9.0]
    gt = GroundTruth.from_annotations({
        "labels": ["a", "b"], "videos": ["v0"],
        "gttubes": {"v0": {0: [np.array([[1] + left], np.float32),
                               np.array([[1] + right], np.float32)]}},
    })
    # The first detection sits on `right` (IoU 1) and takes it, though it also touches `left`;
    # the second is `right` again: its best unmatched GT is `left` (IoU 0.11): a FP.
    res = frame_ap(gt, _dets(gt, [(0, 1, 0, 0.9, right), (0, 1, 0, 0.8, right),
                                  (0, 1, 0, 0.7, left)]))
    np.testing.assert_array_equal(res["tp"], [True, False, True])
    np.testing.assert_array_equal(res["matched"], [1, -1, 0])
    # Class "b" has no GT: NaN, left out of the mean.
    assert np.isnan(res["ap"][1])


def test_ap_from_pr_hand_values():
    p, r = np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])
    assert ap_from_pr(p, r, "act") == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2)
    assert ap_from_pr(p, r, "voc") == pytest.approx(0.5 + 0.5 * 2 / 3)
    with pytest.raises(ValueError, match="ap_convention"):
        ap_from_pr(p, r, "coco")


def test_mabo_and_error_types():
    half = [0.0, 0.0, 9.0, 19.0]  # IoU 0.5 with BOX
    gt = _gt({"v0": {0: [(1, BOX), (2, BOX), (3, BOX)]}, "v1": {1: [(1, FAR)]}})
    rows = [
        (0, 1, 0, 0.9, BOX),  # TP
        (0, 1, 0, 0.8, BOX),  # duplicate: localization
        (0, 2, 0, 0.7, [0.0, 0.0, 9.0, 29.0]),  # IoU 1/3 in a frame with GT: localization
        (0, 3, 1, 0.6, half),  # class 1 on class 0's box: classification
        (0, 9, 0, 0.5, BOX),  # frame 9 of a video with a class-0 tube: time
        (1, 1, 0, 0.4, BOX),  # class 0 absent from v1: other
        (0, 3, 0, 0.3, BOX),  # TP, ranked below every false positive
    ]
    dets = _dets(gt, rows)
    res = frame_ap(gt, dets)
    kind = classify_false_positives(gt, dets, res["tp"], 0.5)
    np.testing.assert_array_equal(kind, [-1, 0, 0, 1, 2, 3, -1])
    errs = frame_ap_errors(gt, dets, res)
    assert errs["counts"]["localization"][0] == 2 and errs["counts"]["classification"][1] == 1
    assert errs["share"]["time"] == pytest.approx(0.2)
    # Class 0 recall 2/3: 1/3 missed; class 1 nothing detected: all missed.
    assert errs["missed"] == pytest.approx(100 * (1 / 3 + 1) / 2)
    # Class 0's last PR step goes from (1/3, 1/5) to (2/3, 1/3); without the two localization
    # FPs, from (1/3, 1/3) to (2/3, 1/2).
    gain = 100 / 3 * ((1 / 3 + 1 / 2) / 2 - (1 / 5 + 1 / 3) / 2)
    assert errs["per_class_gain"]["localization"][0] == pytest.approx(gain)
    # MABO: class 0 boxes best 1, 1/3, 1 (any class); class 1's box: nothing in frame -> 0.
    m = frame_mabo(gt, dets)
    np.testing.assert_allclose(m["per_class"], [(1 + 1 / 3 + 1) / 3, 0.0])
    assert m["mabo"] == pytest.approx(((1 + 1 / 3 + 1) / 3) / 2)


def test_reindex_drops_videos_outside_the_split():
    gt = _gt({"v0": {0: [(1, BOX)]}})
    dets = FrameDetections(["other", "v0"], np.array([0, 1]), np.array([1, 1]),
                           np.array([0, 0]), np.array([0.9, 0.5], np.float32),
                           np.array([BOX, BOX], np.float32))
    d = dets.reindex(gt.videos)
    assert len(d) == 1 and d.video.tolist() == [0]
    assert 100 * frame_ap(gt, d)["ap"][0] == pytest.approx(100.0)


def test_top_box_iou_follows_the_scores_not_the_best_fit():
    half = [5.0, 0.0, 14.0, 9.0]  # shifted by half the width: IoU 50 / 150 = 1/3
    gt = _gt({"v0": {0: [(1, BOX), (2, BOX), (3, BOX)]}, "v1": {1: [(1, BOX)]}})
    dets = _dets(gt, [
        # frame 1: the exact box scores lower than the shifted one; the top box gives 1/3.
        (0, 1, 0, 0.9, half), (0, 1, 0, 0.5, BOX),
        # frame 2: a higher-scoring box of another class and one far away do not count.
        (0, 2, 1, 0.99, half), (0, 2, 0, 0.8, FAR), (0, 2, 0, 0.3, BOX),
        # frame 3: only a far box: 0. v1's class-1 box: exact.
        (0, 3, 0, 0.9, FAR), (1, 1, 1, 0.2, BOX),
    ])
    r = frame_top_box_iou(gt, dets)
    np.testing.assert_allclose(r["per_class"], [(1 / 3 + 1 + 0) / 3, 1.0])
    assert r["top_box_iou"] == pytest.approx(((1 / 3 + 1) / 3 + 1) / 2)
    # MABO, by contrast, finds the exact boxes of frames 1 and 2.
    assert frame_mabo(gt, dets)["per_class"][0] == pytest.approx(2 / 3)
