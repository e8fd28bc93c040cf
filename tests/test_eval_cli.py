import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pcsc_d2.evaluation.__main__ import main
from pcsc_d2.utils.io import atomic_save_pickle

BOX = [2.0, 3.0, 21.0, 30.0]


@pytest.fixture
def gt_file(tmp_path):
    f = np.arange(1, 9)
    tube = np.c_[f, np.tile(BOX, (8, 1))].astype(np.float32)
    gt = {
        "labels": ["run", "jump"],
        "gttubes": {"run/a": {0: [tube]}, "jump/b": {1: [tube]}, "run/train": {0: [tube]}},
        "nframes": {"run/a": 10, "jump/b": 10, "run/train": 10},
        "resolution": {"run/a": (40, 50), "jump/b": (40, 50), "run/train": (40, 50)},
        "train_videos": [["run/train"]],
        "test_videos": [["run/a", "jump/b"]],
    }
    path = str(tmp_path / "GT.pkl")
    atomic_save_pickle(gt, path)
    return path


def _write(tmp_path, name, obj):
    path = str(tmp_path / name)
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def _perfect(tmp_path):
    dets = [{"video": v, "frame": f, "label": c, "score": 0.9, "box": BOX}
            for v, c in (("run/a", 0), ("jump/b", 1)) for f in range(1, 9)]
    # A detection on the training video is outside the split: ignored.
    dets.append({"video": "run/train", "frame": 1, "label": 0, "score": 1.0, "box": BOX})
    tubes = [{"video": v, "label": c, "score": 0.8, "frames": list(range(1, 9)),
              "boxes": [BOX] * 8} for v, c in (("run/a", 0), ("jump/b", 1))]
    return _write(tmp_path, "dets.json", dets), _write(tmp_path, "tubes.json", tubes)


def test_cli_round_trip(tmp_path, gt_file, capsys):
    dets, tubes = _perfect(tmp_path)
    out = str(tmp_path / "metrics.json")
    assert main(["--gt", gt_file, "--frame-dets", dets, "--tubes", tubes, "--out", out]) == 0
    m = json.load(open(out))
    for k in ("frame_mAP@0.5", "video_mAP@0.2", "video_mAP@0.5", "video_mAP@0.75",
              "video_mAP@0.5:0.95", "frame_AP@0.5-run", "video_AP@0.5-jump"):
        assert m[k] == pytest.approx(100.0), k
    assert m["ap_convention"] == "act"
    assert "frame_mAP@0.5" in capsys.readouterr().out
    # Tubes only, VOC.
    assert main(["--gt", gt_file, "--tubes", tubes, "--out", out, "--ap-convention", "voc"]) == 0
    m = json.load(open(out))
    assert m["ap_convention"] == "voc" and "frame_mAP@0.5" not in m
    assert m["video_mAP@0.5"] == pytest.approx(100.0)


def test_cli_as_module(tmp_path, gt_file):
    dets, _ = _perfect(tmp_path)
    out = str(tmp_path / "m.json")
    proc = subprocess.run(
        [sys.executable, "-m", "pcsc_d2.evaluation", "--gt", gt_file, "--frame-dets", dets,
         "--split", "1", "--out", out], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.load(open(out))["frame_mAP@0.5"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"video": "run/a", "frame": 0, "label": 0, "score": 0.5, "box": BOX},
         "entry 1 field 'frame'"),
        ({"video": "run/a", "frame": 1, "label": 5, "score": 0.5, "box": BOX},
         "entry 1 field 'label'"),
        ({"video": "run/a", "frame": 1, "label": 0, "score": "high", "box": BOX},
         "entry 1 field 'score'"),
        ({"video": "run/a", "frame": 1, "label": 0, "score": 0.5, "box": [1, 2, 3]},
         "entry 1 field 'box'"),
        ({"frame": 1, "label": 0, "score": 0.5, "box": BOX}, "entry 1 has no field 'video'"),
    ],
)
def test_cli_malformed_detections(tmp_path, gt_file, capsys, entry, message):
    good = {"video": "run/a", "frame": 1, "label": 0, "score": 0.5, "box": BOX}
    dets = _write(tmp_path, "bad.json", [good, entry])
    out = str(tmp_path / "metrics.json")
    assert main(["--gt", gt_file, "--frame-dets", dets, "--out", out]) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(out)


def test_cli_malformed_tubes(tmp_path, gt_file, capsys):
    bad = [{"video": "run/a", "label": 0, "score": 0.5, "frames": [1, 2], "boxes": [BOX]}]
    tubes = _write(tmp_path, "tubes.json", bad)
    assert main(["--gt", gt_file, "--tubes", tubes, "--out", str(tmp_path / "m.json")]) == 2
    assert "entry 0 field 'boxes'" in capsys.readouterr().err
    assert main(["--gt", gt_file, "--tubes", tubes, "--split", "2", "--out", "x.json"]) == 2
    assert "--split 2 is out of range" in capsys.readouterr().err
