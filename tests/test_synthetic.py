"""The synthetic two-stream action dataset: layout, validity, determinism, untrimmed tubes."""
import hashlib
import os

import numpy as np

from pcsc_d2.data import load_annotations
from pcsc_d2.data.synthetic import CLASSES, SyntheticConfig, _plan_actor, generate_synthetic_dataset

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
                assert t[0, 0] > 1 and t[-1, 0] <= n
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
