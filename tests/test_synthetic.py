"""The synthetic two-stream action dataset: layout, validity, determinism, untrimmed tubes."""
import hashlib
import os

import numpy as np

from pcsc_d2.data import load_annotations
from pcsc_d2.data.synthetic import (
    CLASSES,
    SyntheticConfig,
    _draw_actor,
    _plan_actor,
    generate_synthetic_dataset,
)

TINY = SyntheticConfig(num_train=2, num_test=1, min_frames=20, max_frames=24)


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            h.update(name.encode())
            with open(os.path.join(dirpath, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_layout_and_gt_are_valid(tmp_path):
    out = str(tmp_path / "s")
    stats = generate_synthetic_dataset(out, seed=0, cfg=TINY, workers=1)
    gt = load_annotations(os.path.join(out, "synthetic-GT.pkl"))  # validates boxes and frames
    assert gt["labels"] == CLASSES
    assert len(gt["train_videos"][0]) == 2 and len(gt["test_videos"][0]) == 1
    for video, n in gt["nframes"].items():
        assert video.split("/")[0] in CLASSES
        for kind in ("rgb-images", "brox-images"):
            files = sorted(os.listdir(os.path.join(out, kind, video)))
            assert files == [f"{i:05d}.jpg" for i in range(1, n + 1)]
        assert gt["resolution"][video] == (TINY.height, TINY.width)
        # Untrimmed: every tube starts after the first frame and ends before the last.
        for tubes in gt["gttubes"][video].values():
            for t in tubes:
                assert t.dtype == np.float32 and t.shape[1] == 5
                assert t[0, 0] > 1 and t[-1, 0] <= n
                # Inclusive pixel boxes inside the image, of an actor's size.
                assert (t[:, 1:3] >= 0).all() and (t[:, 1] < t[:, 3]).all()
                assert (t[:, 3] <= TINY.width - 1).all() and (t[:, 4] <= TINY.height - 1).all()
                assert ((t[:, 4] - t[:, 2] + 1) >= 20).all()
                assert np.all(np.diff(t[:, 0]) == 1)
    assert stats["train"]["videos"] == 2 and 0 < stats["train"]["action_frame_fraction"] < 1


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    generate_synthetic_dataset(a, seed=3, cfg=TINY, workers=2)
    generate_synthetic_dataset(b, seed=3, cfg=TINY, workers=1)
    generate_synthetic_dataset(c, seed=4, cfg=TINY, workers=1)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_actor_is_still_outside_its_tube_and_moves_inside():
    rng = np.random.default_rng(0)
    for label in range(len(CLASSES)):
        actor = _plan_actor(rng, label, 50, SyntheticConfig(), (0.5, 0.0))
        c, s, e = actor["centers"], actor["start"], actor["end"]
        assert np.allclose(c[:s], c[s]) and np.allclose(c[e + 1:], c[e])
        assert np.abs(np.diff(c[s:e + 1], axis=0)).sum() > 5  # it moves during the action
        # The whole motion stays inside the frame.
        assert c[:, 0].min() - actor["w"] / 2 >= 0 and c[:, 0].max() + actor["w"] / 2 <= 160


def test_box_is_the_drawn_figure():
    actor = {"w": 17.0, "h": 40.0, "color": np.array([200.0, 90.0, 60.0]), "tex_seed": 1}
    img = np.zeros((120, 160, 3), np.float32)
    box = _draw_actor(img, actor, np.array([70.3, 50.6]))
    ys, xs = np.nonzero(img.sum(-1) > 0)
    assert box == [xs.min(), ys.min(), xs.max(), ys.max()]
    # The figure fills the planned (w, h) box centred on the actor.
    assert np.allclose(box, [70.3 - 8.5, 50.6 - 20, 70.3 + 8.5, 50.6 + 20], atol=1.5)
    # Clipped by the image border: the box stays inside, tight to what is visible.
    img = np.zeros((120, 160, 3), np.float32)
    box = _draw_actor(img, actor, np.array([3.0, 115.0]))
    assert box[0] == 0 and box[3] == 119 and box[2] < 13
    assert _draw_actor(np.zeros((120, 160, 3), np.float32), actor, np.array([-50.0, 60.0])) is None


def test_balanced_design_gives_each_class_a_look_and_keeps_the_motion_design(tmp_path):
    from pcsc_d2.data.synthetic import _CLASS_WIDTH, DESIGNS

    cfg = SyntheticConfig(num_train=6, num_test=2, min_frames=20, max_frames=24, design="balanced")
    out = str(tmp_path / "synthetic_balanced")
    generate_synthetic_dataset(out, seed=0, cfg=cfg, workers=1)
    assert DESIGNS["balanced"] == "synthetic_balanced-GT.pkl"
    gt = load_annotations(os.path.join(out, "synthetic_balanced-GT.pkl"))
    assert gt["labels"] == CLASSES and gt["flip_pairs"] == [["MoveRight", "MoveLeft"]]
    # Each class's bodies have its own width / height (the figure's drawn box: about 0.95 of
    # the planned width over the planned height), in the class order of _CLASS_WIDTH.
    ratios = {}
    for per_label in gt["gttubes"].values():
        for label, tubes in per_label.items():
            for t in tubes:
                wh = (t[:, 3] - t[:, 1] + 1) / (t[:, 4] - t[:, 2] + 1)
                ratios.setdefault(label, []).append(float(np.median(wh)))
    means = {c: np.mean(r) for c, r in ratios.items()}
    for c, m in means.items():
        assert abs(m - _CLASS_WIDTH[c]) < 0.12, (c, m)
    # The same seed in the default design draws other videos.
    motion = str(tmp_path / "synthetic")
    generate_synthetic_dataset(motion, seed=0, cfg=SyntheticConfig(
        num_train=6, num_test=2, min_frames=20, max_frames=24), workers=1)
    assert _digest(os.path.join(motion, "rgb-images")) != _digest(os.path.join(out, "rgb-images"))
