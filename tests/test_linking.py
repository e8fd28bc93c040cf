import numpy as np
import pytest

from pcsc_d2.tubes import LinkingOptions, Tube, box_iou, link_video, paired_box_iou


def _box(x, y=0.0, w=20.0, h=40.0):
    return [x, y, x + w - 1, y + h - 1]


def _video(frames, per_frame):
    """per_frame: frame -> list of (box, score, label)."""
    boxes, scores, labels = [], [], []
    for f in frames:
        dets = per_frame.get(f, [])
        boxes.append(np.asarray([d[0] for d in dets], dtype=np.float32).reshape(-1, 4))
        scores.append(np.asarray([d[1] for d in dets], dtype=np.float32))
        labels.append(np.asarray([d[2] for d in dets], dtype=np.int64))
    return list(frames), boxes, scores, labels


def test_box_iou_plus_one_pixel():
    # 10x10 boxes overlapping on 5 columns: 50 / (100 + 100 - 50).
    a = np.array([[0, 0, 9, 9]], dtype=np.float32)
    b = np.array([[5, 0, 14, 9], [20, 20, 29, 29]], dtype=np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1 / 3, 0.0]])
    np.testing.assert_allclose(paired_box_iou(a, b[:1]), [1 / 3])


def test_two_crossing_actors_keep_their_identity():
    # At the crossing both tubes may take both boxes: the better tube chooses first.
    frames = range(1, 21)
    # Offset vertically so that at the crossing IoU = 0.23: below NMS (0.45), above the gate.
    per_frame = {
        f: [(_box(5.0 * f), 0.9, 0), (_box(105.0 - 5.0 * f, y=25.0), 0.6, 0)] for f in frames
    }
    tubes = link_video(*_video(frames, per_frame))
    assert len(tubes) == 2
    tubes = sorted(tubes, key=lambda t: -t.score)
    for t, start, step, score in [(tubes[0], 0.0, 5.0, 0.9), (tubes[1], 105.0, -5.0, 0.6)]:
        np.testing.assert_array_equal(t.frames, np.arange(1, 21))
        np.testing.assert_allclose(t.boxes[:, 0], start + step * np.arange(1, 21))
        assert t.score == pytest.approx(score)


def test_short_gap_is_bridged_by_repeating_the_box():
    frames = range(1, 21)
    per_frame = {f: [(_box(float(f)), 0.5, 3)] for f in frames if f not in (11, 12)}
    (tube,) = link_video(*_video(frames, per_frame))
    assert tube.label == 3
    np.testing.assert_array_equal(tube.frames, np.arange(1, 21))
    np.testing.assert_allclose(tube.boxes[10], tube.boxes[9])
    np.testing.assert_allclose(tube.boxes[11], tube.boxes[9])
    np.testing.assert_allclose(tube.boxes[12, 0], 13.0)


def test_long_gap_ends_the_tube():
    frames = range(1, 21)
    # Frames 11..14 missed: 4 > MAX_MISSED = 3 consecutive misses.
    per_frame = {f: [(_box(float(f)), 0.5, 0)] for f in frames if not 11 <= f <= 14}
    tubes = link_video(*_video(frames, per_frame))
    assert [(t.frames[0], t.frames[-1]) for t in tubes] == [(1, 10), (15, 20)]


def test_empty_frames_short_tubes_and_unprocessed_frames():
    frames = range(1, 31)
    assert link_video(*_video(frames, {})) == []
    # 4 boxes < MIN_LENGTH = 5: dropped; the 5-box one in the empty video survives.
    per_frame = {f: [(_box(0.0), 0.5, 0)] for f in range(3, 7)}
    per_frame.update({f: [(_box(200.0), 0.4, 1)] for f in range(20, 25)})
    tubes = link_video(*_video(frames, per_frame))
    assert [(t.label, len(t)) for t in tubes] == [(1, 5)]
    # Only every 5th frame processed: 1 miss-free tube whose gaps are filled.
    frames = range(1, 31, 5)
    (tube,) = link_video(*_video(frames, {f: [(_box(0.0), 0.5, 0)] for f in frames}))
    np.testing.assert_array_equal(tube.frames, np.arange(1, 27))


def test_nms_threshold_topk_score_and_extras():
    frames = list(range(1, 11))
    # A duplicate (IoU 0.9 > 0.45) is suppressed; a 0.0005 score is below the threshold.
    per_frame = {
        f: [(_box(0.0), 0.1 * (f % 5) + 0.5, 0), (_box(1.0), 0.3, 0), (_box(100.0), 0.0005, 0)]
        for f in frames
    }
    fids, boxes, scores, labels = _video(frames, per_frame)
    act = [np.asarray([f / 10.0, -1.0, -2.0], dtype=np.float32) for f in frames]
    opts = LinkingOptions(score_topk=2)
    (tube,) = link_video(fids, boxes, scores, labels, extras={"actionness": act}, opts=opts,
                         video="A/v1")
    assert tube.video == "A/v1"
    assert tube.score == pytest.approx(0.9)
    np.testing.assert_allclose(tube.extras["actionness"], np.arange(1, 11) / 10.0)
    np.testing.assert_allclose(tube.boxes[:, 0], 0.0)


def test_classes_are_linked_independently_and_json_round_trip():
    frames = range(1, 8)
    per_frame = {f: [(_box(0.0), 0.8, 0), (_box(0.0), 0.7, 2)] for f in frames}
    tubes = link_video(*_video(frames, per_frame), video="C/v")
    assert [t.label for t in tubes] == [0, 2]
    d = tubes[1].to_json()
    assert set(d) == {"video", "label", "score", "frames", "boxes"}
    back = Tube.from_json(d)
    assert back.label == 2 and back.video == "C/v"
    np.testing.assert_array_equal(back.frames, tubes[1].frames)
    np.testing.assert_allclose(back.boxes, tubes[1].boxes)


def test_many_live_tubes_numpy_path():
    # 12 actors per frame: the tube/detection gate takes the numpy path (12 x 10 > 64).
    frames = range(1, 9)
    per_frame = {f: [(_box(30.0 * a + f), 1.0 - 0.01 * a, 0) for a in range(12)] for f in frames}
    tubes = link_video(*_video(frames, per_frame))
    # POST_NMS_TOPK = 10 detections per frame survive: 10 tubes of 8 frames.
    assert len(tubes) == 10 and all(len(t) == 8 for t in tubes)
