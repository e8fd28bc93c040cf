import numpy as np
import pytest
import torch
from torch import nn

from pcsc_d2.tubes import RefineOptions, Tube, label_tube_boxes, refine_tube
from pcsc_d2.tubes.actionness_data import balanced_weights, train_actionness_classifiers


def _tube(actionness, scores=None, start=1):
    n = len(actionness)
    scores = np.full(n, 0.5, np.float32) if scores is None else np.asarray(scores, np.float32)
    boxes = np.tile(np.array([[10, 10, 49, 89]], np.float32), (n, 1))
    return Tube(label=1, frames=np.arange(start, start + n), boxes=boxes, scores=scores,
                score=float(scores.mean()), extras={"actionness": np.asarray(actionness)},
                video="A/v")


def test_trims_a_tube_whose_actionness_dips_at_its_ends():
    act = np.r_[np.full(5, 0.1), np.full(20, 0.9), np.full(5, 0.2)]
    (piece,) = refine_tube(_tube(act), RefineOptions(median_window=3))
    np.testing.assert_array_equal(piece.frames, np.arange(6, 26))
    assert piece.video == "A/v" and piece.label == 1


def test_splits_at_a_long_dip_and_bridges_a_short_one():
    act = np.r_[np.full(10, 0.9), np.full(10, 0.1), np.full(10, 0.9)]
    pieces = refine_tube(_tube(act), RefineOptions(median_window=3, max_gap=5, mode="split"))
    assert [(p.frames[0], p.frames[-1]) for p in pieces] == [(1, 10), (21, 30)]
    # A dip of 3 <= MAX_GAP boxes is bridged: one piece keeps every box.
    act = np.r_[np.full(10, 0.9), np.full(3, 0.1), np.full(10, 0.9)]
    (piece,) = refine_tube(_tube(act), RefineOptions(median_window=1, max_gap=5, mode="split"))
    assert len(piece) == 23


def test_median_filter_short_pieces_and_rescoring():
    # A one-box spike is removed by the median filter; a lone drop is filled.
    act = np.r_[np.full(10, 0.1), 0.9, np.full(10, 0.1)]
    assert refine_tube(_tube(act), RefineOptions(median_window=3)) == []
    act = np.r_[np.full(8, 0.9), 0.0, np.full(8, 0.9)]
    (piece,) = refine_tube(_tube(act), RefineOptions(median_window=3))
    assert len(piece) == 17
    # Pieces shorter than MIN_LENGTH are discarded; the rest are re-scored (top-k mean).
    act = np.r_[np.full(4, 0.9), np.full(10, 0.0), np.full(6, 0.9)]
    scores = np.r_[np.full(14, 0.9), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]
    (piece,) = refine_tube(_tube(act, scores), RefineOptions(median_window=1, score_topk=2, mode="split"))
    np.testing.assert_array_equal(piece.frames, np.arange(15, 21))
    assert piece.score == pytest.approx(0.55)


def test_refine_needs_actionness():
    t = _tube(np.ones(10))
    t.extras = {}
    with pytest.raises(KeyError, match="actionness"):
        refine_tube(t, RefineOptions())


def test_label_tube_boxes():
    t = _tube(np.ones(6), start=3)  # frames 3..8, box [10, 10, 49, 89]
    gt_box = np.array([10, 10, 49, 89], np.float32)
    shifted = gt_box + np.array([20, 0, 20, 0])  # IoU 20x80 / (2 * 3200 - 1600) = 1/3
    gt = {1: [np.c_[np.arange(1, 7), np.r_[[gt_box] * 3, [shifted] * 3]]],
          0: [np.c_[np.arange(1, 20), np.tile(gt_box, (19, 1))]]}
    (labels,) = label_tube_boxes([t], gt)
    # frames 3 (same box), 4..6 (shifted: IoU 1/3), 7..8 (no GT of class 1).
    np.testing.assert_array_equal(labels, [1, 0, 0, 0, 0, 0])
    (labels,) = label_tube_boxes([t], {0: gt[0]})
    np.testing.assert_array_equal(labels, np.zeros(6))


class _StandIn(nn.Module):
    """head(features, classes) -> logits of each sample's class (one linear per class)."""

    def __init__(self, dim, num_classes):
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, features, classes):
        return self.linear(features).gather(1, classes[:, None])[:, 0]


def test_balanced_weights():
    w = balanced_weights(np.array([0, 0, 0, 0, 1, 1]), np.array([1, 0, 0, 0, 1, 1]))
    # class 0: 1 positive (weight 4 / 2), 3 negatives (4 / 6); class 1 only positives: 1.
    np.testing.assert_allclose(w, [2, 2 / 3, 2 / 3, 2 / 3, 1, 1], rtol=1e-6)


def _separable_samples(m, seed):
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 2, m)
    labels = rng.integers(0, 2, m)
    # The sign of feature `class` tells the label: separable per class.
    feats = rng.normal(0, 1, (m, 4)).astype(np.float32)
    feats[np.arange(m), classes] = np.where(labels == 1, 2.0, -2.0) + 0.1 * feats[:, 3]
    return {"features": feats, "classes": classes, "labels": labels}


def test_train_actionness_classifiers_learns_by_epochs_and_is_deterministic():
    train, val = _separable_samples(400, 0), _separable_samples(100, 1)

    def run():
        torch.manual_seed(0)
        head = _StandIn(4, 2)
        hist = train_actionness_classifiers(head, train, val, epochs=8, lr=0.1, batch_size=64,
                                            seed=1)
        return head, hist

    head, hist = run()
    _, hist2 = run()
    assert hist == hist2
    assert len(hist["train_loss"]) == len(hist["val_loss"]) == 8
    assert hist["train_loss"][-1] < 0.5 * hist["train_loss"][0]
    assert hist["val_accuracy"][hist["best_epoch"] - 1] > 0.95
    with torch.no_grad():
        pred = head(torch.from_numpy(val["features"]), torch.from_numpy(val["classes"])) > 0
    assert (pred.numpy() == (val["labels"] == 1)).mean() > 0.95


def test_train_actionness_keeps_the_best_validation_epoch():
    """A validation set whose labels are the opposite of training's: the more the head learns,
    the worse it gets there, so the first epoch is kept and the head says the training rule
    with less confidence than after the last epoch."""
    train = _separable_samples(400, 0)
    flipped = dict(train, labels=1 - train["labels"])
    torch.manual_seed(0)
    head = _StandIn(4, 2)
    hist = train_actionness_classifiers(head, train, flipped, epochs=6, lr=0.1, batch_size=64)
    assert hist["best_epoch"] == 1
    assert hist["val_loss"][0] == min(hist["val_loss"])
    with torch.no_grad():
        kept, _ = torch.sort(head(torch.from_numpy(train["features"]),
                                  torch.from_numpy(train["classes"])).abs())
    torch.manual_seed(0)
    last = _StandIn(4, 2)
    train_actionness_classifiers(last, train, None, epochs=6, lr=0.1, batch_size=64)
    with torch.no_grad():
        final, _ = torch.sort(last(torch.from_numpy(train["features"]),
                                   torch.from_numpy(train["classes"])).abs())
    assert kept.mean() < final.mean()


def test_ends_mode_trims_the_ends_and_keeps_inner_dips():
    act = np.r_[np.full(4, 0.1), np.full(10, 0.9), np.full(10, 0.1), np.full(10, 0.9),
                np.full(4, 0.2)]
    opts = RefineOptions(median_window=3, mode="ends")
    (piece,) = refine_tube(_tube(act), opts)
    # Frames 5..34: the long inner dip stays (it would split the tube in "split" mode).
    np.testing.assert_array_equal(piece.frames, np.arange(5, 35))
    split = refine_tube(_tube(act), RefineOptions(median_window=3, mode="split"))
    assert [(p.frames[0], p.frames[-1]) for p in split] == [(5, 14), (25, 34)]
    assert refine_tube(_tube(np.full(10, 0.1)), opts) == []
    with pytest.raises(ValueError, match="MODE"):
        refine_tube(_tube(act), RefineOptions(mode="middle"))


def test_tr_scores_pieces_like_linking_scores_tubes():
    """Linking scores a tube by its matched boxes; a piece TR leaves whole keeps that score,
    however high the boxes repeated across gaps score."""
    from pcsc_d2.tubes import LinkingOptions, link_video

    boxes = np.array([[10, 10, 49, 89]], np.float32)
    frames = [1, 2, 3, 4, 5, 9, 10, 11, 12]  # frames 6..8 unprocessed: bridged by repeats
    scores = [0.9, 0.9, 0.9, 0.9, 0.1, 0.5, 0.5, 0.5, 0.5]
    (tube,) = link_video(
        frames, [boxes] * len(frames), [np.array([s], np.float32) for s in scores],
        [np.array([1])] * len(frames), extras={"actionness": [np.array([0.9])] * len(frames)},
        opts=LinkingOptions(score_topk=40, min_length=3),
    )
    assert len(tube) == 12 and tube.matched.sum() == 9
    assert tube.score == pytest.approx(np.mean(scores))
    (piece,) = refine_tube(tube, RefineOptions(median_window=3, score_topk=40))
    assert len(piece) == 12 and piece.score == pytest.approx(tube.score)
    for mode in ("ends", "split"):
        (piece,) = refine_tube(tube, RefineOptions(mode=mode, score_topk=40))
        assert piece.score == pytest.approx(tube.score)
