"""The incremental linker (OnlineLinker) against the offline linker's recorded results.

tests/data/linking_golden.json holds the tubes that ``link_video`` produced on these random
videos before linking became incremental (one implementation now serves both); the cases are
rebuilt here from their seeds.
"""
import json
import os

import numpy as np
import pytest

from pcsc_d2.tubes import LinkingOptions, link_video
from pcsc_d2.tubes.linking import GAP_FILLS, OnlineLinker

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "linking_golden.json")

# name -> arguments of make_case
CASES = {
    "dense": dict(seed=0, num_frames=60, num_actors=4, num_classes=3),
    "crowded": dict(seed=1, num_frames=40, num_actors=9, num_classes=2, per_actor=3),
    "every_2nd_shuffled": dict(seed=2, num_frames=80, num_actors=3, num_classes=4, every=2,
                               shuffle=True),
    "sparse_misses": dict(seed=3, num_frames=70, num_actors=5, num_classes=3, miss=0.35,
                          score_topk=3, min_length=3),
}


def make_case(seed, num_frames, num_actors, num_classes, per_actor=2, every=1, shuffle=False,
              miss=0.1, score_topk=40, min_length=5):
    """Random detections around moving actors, with duplicates, misses and false positives.

    Returns:
        frame_ids, boxes, scores, labels, extras ({"actionness": (N,), "features": (N, 3)}
        per frame) and the LinkingOptions.
    """
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 200, (num_actors, 2))
    speed = rng.uniform(-4, 4, (num_actors, 2))
    size = rng.uniform(20, 60, (num_actors, 2))
    actor_label = rng.integers(num_classes, size=num_actors)
    frame_ids = list(range(1, num_frames + 1, every))
    boxes, scores, labels, act, feats = [], [], [], [], []
    for f in frame_ids:
        rows, s, c = [], [], []
        for a in range(num_actors):
            if rng.random() < miss:
                continue
            for _ in range(per_actor):
                xy = start[a] + speed[a] * f + rng.normal(0, 2, 2)
                rows.append([*xy, *(xy + size[a] + rng.normal(0, 2, 2))])
                s.append(rng.uniform(0.05, 1.0))
                # Mostly the actor's class, sometimes another one.
                c.append(actor_label[a] if rng.random() < 0.8 else rng.integers(num_classes))
        for _ in range(rng.integers(0, 4)):  # false positives anywhere
            xy = rng.uniform(0, 250, 2)
            rows.append([*xy, *(xy + rng.uniform(10, 50, 2))])
            s.append(rng.uniform(0.0, 0.6))
            c.append(rng.integers(num_classes))
        n = len(rows)
        boxes.append(np.asarray(rows, np.float32).reshape(n, 4))
        scores.append(np.asarray(s, np.float32))
        labels.append(np.asarray(c, np.int64))
        act.append(rng.random(n).astype(np.float32))
        feats.append(rng.random((n, 3)).astype(np.float32))
    order = rng.permutation(len(frame_ids)) if shuffle else np.arange(len(frame_ids))
    pick = lambda xs: [xs[i] for i in order]  # noqa: E731
    extras = {"actionness": pick(act), "features": pick(feats)}
    opts = LinkingOptions(score_topk=score_topk, min_length=min_length)
    return pick(frame_ids), pick(boxes), pick(scores), pick(labels), extras, opts


def _golden():
    with open(GOLDEN) as f:
        return json.load(f)


def _assert_tubes_equal(tubes, expected):
    assert [(t.label, t.frames[0], t.frames[-1]) for t in tubes] == [
        (e["label"], e["frames"][0], e["frames"][-1]) for e in expected
    ]
    for t, e in zip(tubes, expected):
        np.testing.assert_array_equal(t.frames, e["frames"])
        np.testing.assert_allclose(t.boxes, e["boxes"], atol=1e-3)
        np.testing.assert_allclose(t.scores, e["scores"], atol=1e-5)
        assert t.score == pytest.approx(e["score"], abs=1e-6)
        assert sorted(t.extras) == sorted(e["extras"])
        for k, v in e["extras"].items():
            np.testing.assert_allclose(t.extras[k], v, atol=1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_link_video_matches_the_recorded_offline_linker(name):
    frame_ids, boxes, scores, labels, extras, opts = make_case(**CASES[name])
    tubes = link_video(frame_ids, boxes, scores, labels, extras=extras, opts=opts, video=name)
    assert all(t.video == name for t in tubes)
    _assert_tubes_equal(tubes, _golden()[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_online_linker_streams_the_same_tubes(name):
    frame_ids, boxes, scores, labels, extras, opts = make_case(**CASES[name])
    order = np.argsort(frame_ids)
    linker = OnlineLinker(opts, video=name)
    done, max_live = [], 0
    for i in order:
        f = frame_ids[i]
        ended = linker.step(f, boxes[i], scores[i], labels[i],
                            {k: v[i] for k, v in extras.items()})
        for t in ended:
            # A tube ends once it missed more than max_missed processed frames.
            assert t.frames[-1] < f and len(t) >= opts.min_length
        for t in linker.live_tubes:
            # The live box at a frame is what the finished tube will show there.
            assert t.box_at(t.frames[-1]) == t.boxes[-1] and t.box_at(t.frames[0] - 1) is None
        done += ended
        max_live = max(max_live, len(linker.live_tubes))
    done += linker.finish()
    assert linker.live_tubes == [] and max_live > 0
    done.sort(key=lambda t: t.label)  # stable: ends come in end order; the golden is sorted
    expected = _golden()[name]
    by_start = {(e["label"], e["frames"][0], e["score"]): e for e in expected}
    assert len(done) == len(expected)
    for t in done:
        _assert_tubes_equal([t], [by_start[(t.label, int(t.frames[0]), round(t.score, 6))]])


def test_online_linker_running_score_and_errors():
    opts = LinkingOptions(score_topk=2, min_length=1)
    linker = OnlineLinker(opts, video="v")
    box = np.array([[0, 0, 9, 9]], np.float32)
    for f, s in zip((1, 2, 4), (0.5, 0.9, 0.7)):
        linker.step(f, box, np.array([s], np.float32), np.array([0]))
    (live,) = linker.live_tubes
    assert live.frames == [1, 2, 4] and live.score == pytest.approx((0.9 + 0.7) / 2)
    # Frame 3 was not processed: it repeats frame 2's box, as the finished tube will.
    assert live.box_at(3) == live.boxes[1] and live.box_at(5) is None
    with pytest.raises(ValueError, match="frame 4 linked after frame 4"):
        linker.step(4, box, np.array([0.5], np.float32), np.array([0]))
    with pytest.raises(ValueError, match="frame 5: 1 scores"):
        linker.step(5, np.zeros((2, 4)), np.array([0.5]), np.array([0, 0]))
    linker.step(5, np.zeros((0, 4)), np.zeros(0), np.zeros(0))  # the bad frame left no trace
    (tube,) = linker.finish()
    np.testing.assert_array_equal(tube.frames, [1, 2, 3, 4])
    assert tube.score == pytest.approx(0.8)


def test_linear_gap_fill_interpolates_between_matches():
    # An actor moving 4 pixels a frame, detected on frames 1, 3 (stride 2) and 6 (frames 4 and 5
    # missed or not processed): "repeat" leaves each gap frame where the actor was before,
    # "linear" puts it where it is.
    frames = (1, 3, 6)
    boxes = {f: np.array([[4.0 * f, 10, 4.0 * f + 19, 49]], np.float32) for f in range(1, 7)}
    tubes = {}
    for fill in GAP_FILLS:
        opts = LinkingOptions(min_length=1, gap_fill=fill)
        linker = OnlineLinker(opts, video="v")
        for f in frames:
            linker.step(f, boxes[f], np.array([0.9], np.float32), np.array([2]))
        (live,) = linker.live_tubes
        (tubes[fill],) = linker.finish()
        np.testing.assert_array_equal(tubes[fill].frames, [1, 2, 3, 4, 5, 6])
        np.testing.assert_array_equal(tubes[fill].matched, [1, 0, 1, 0, 0, 1])
        for f in range(1, 7):  # the live tube draws what the finished tube will hold
            np.testing.assert_allclose(live.box_at(f, fill), tubes[fill].boxes[f - 1])
    np.testing.assert_allclose(tubes["linear"].boxes, np.concatenate(list(boxes.values())))
    np.testing.assert_allclose(tubes["repeat"].boxes[[1, 3, 4]],
                               np.concatenate([boxes[1], boxes[3], boxes[3]]))
    with pytest.raises(ValueError, match="TUBES.GAP_FILL"):
        LinkingOptions(gap_fill="cubic")
