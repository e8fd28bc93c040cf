"""GT files: safe loading, validation, JSON round trip, ROAD conversion (pcsc_d2.data)."""
import copy
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from pcsc_d2.data import UnsafePickleError, load_annotations, save_annotations
from pcsc_d2.data.convert import main as convert_main
from pcsc_d2.data.convert import road_to_annotations


def _gt():
    tube = np.array([[2, 10, 20, 30, 60], [3, 11, 20, 31, 60], [4, 12, 21, 32, 61]], np.float32)
    return {
        "labels": ["Run", "Jump"],
        "gttubes": {"Run/v1": {0: [tube]}, "Jump/v2": {1: [tube + [3, 0, 0, 0, 0]]}},
        "nframes": {"Run/v1": 10, "Jump/v2": 8},
        "resolution": {"Run/v1": (120, 160), "Jump/v2": (120, 160)},
        "train_videos": [["Run/v1"]],
        "test_videos": [["Jump/v2"]],
    }


def _write(tmp_path, gt, name="gt.pkl", protocol=2):
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        pickle.dump(gt, f, protocol=protocol)
    return path


def test_loads_and_normalises(tmp_path):
    gt = load_annotations(_write(tmp_path, _gt()))
    assert gt["labels"] == ["Run", "Jump"]
    assert gt["gttubes"]["Run/v1"][0][0].dtype == np.float32
    assert gt["resolution"]["Jump/v2"] == (120, 160)


def test_python2_style_latin1_pickle(tmp_path):
    # Python 2 pickles store str as 8-bit strings; protocol 0 with a non-ASCII byte stands in.
    gt = _gt()
    gt["labels"] = ["Caf\xe9", "Jump"]
    raw = pickle.dumps(gt, protocol=2).replace(b"Caf\xc3\xa9", b"Caf\xe9")
    raw = raw.replace(b"X\x05\x00\x00\x00Caf\xe9", b"U\x04Caf\xe9")  # SHORT_BINSTRING, as py2
    path = tmp_path / "py2.pkl"
    path.write_bytes(raw)
    assert load_annotations(str(path))["labels"][0] == "Caf\xe9"


def _tube(gt):
    """The first tube of Run/v1 (frames 2..4 of a 10-frame 160x120 video)."""
    return gt["gttubes"]["Run/v1"][0][0]


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda g: g.pop("nframes"), "missing keys"),
        (lambda g: g["test_videos"][0].append("Nope/v9"), "Nope/v9"),
        (lambda g: g["gttubes"]["Run/v1"][0].append(np.zeros((2, 4))), "Run/v1.*shape"),
        (lambda g: _tube(g).__setitem__((0, 0), 2.5), "Run/v1.*integers"),
        (lambda g: _tube(g).__setitem__((2, 0), 11), "Run/v1.*outside 1..10"),
        (lambda g: _tube(g).__setitem__((1, 1), 40), "Run/v1.*x1 > x2"),
        (lambda g: _tube(g).__setitem__((1, 3), 160), "Run/v1.*outside the 160x120"),
        (lambda g: g["gttubes"]["Jump/v2"].__setitem__(5, g["gttubes"]["Jump/v2"][1]),
         "Jump/v2.*label index 5"),
        (lambda g: g.__setitem__("labels", "Run"), "'labels' must be a list"),
        (lambda g: g["nframes"].__setitem__("Jump/v2", 7.5), "Jump/v2: nframes 7.5"),
        # A video without tubes (nothing else checks its resolution) listed in a split.
        (lambda g: (g["nframes"].__setitem__("X/v3", 5), g["test_videos"][0].append("X/v3")),
         r"test_videos\[0\] lists video X/v3, which has no nframes/resolution"),
        (lambda g: g.__setitem__("train_videos", ["Run/v1"]), "'train_videos' must be a list of"),
        (lambda g: _tube(g).__setitem__((0, 0), 0), "Run/v1.*frames 0..4 outside"),
        (lambda g: _tube(g).__setitem__((2, 4), 120), "Run/v1.*frame 4.*outside the 160x120"),
    ],
)
def test_validation_names_the_problem(tmp_path, mutate, message):
    gt = copy.deepcopy(_gt())
    mutate(gt)
    with pytest.raises(ValueError, match=message) as info:
        load_annotations(_write(tmp_path, gt))
    assert "gt.pkl" in str(info.value)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_with_foreign_global_is_refused_and_nothing_runs(tmp_path):
    target = tmp_path / "written_by_pickle.txt"
    gt = _gt()
    gt["labels"] = _Evil(str(target))
    path = _write(tmp_path, gt, "evil.pkl")
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*'(io|builtins)\.open'"):
        load_annotations(path)
    assert not target.exists()


def test_json_round_trip_is_exact(tmp_path):
    gt = load_annotations(_write(tmp_path, _gt()))
    save_annotations(gt, str(tmp_path / "gt.json"))
    back = load_annotations(str(tmp_path / "gt.json"))
    save_annotations(back, str(tmp_path / "back.pkl"))
    again = load_annotations(str(tmp_path / "back.pkl"))
    for other in (back, again):
        assert other["labels"] == gt["labels"] and other["nframes"] == gt["nframes"]
        assert other["train_videos"] == gt["train_videos"]
        assert other["resolution"] == gt["resolution"]
        for v, per_label in gt["gttubes"].items():
            for label, tubes in per_label.items():
                for a, b in zip(tubes, other["gttubes"][v][label]):
                    np.testing.assert_array_equal(a, b)


def test_road_conversion_by_hand():
    road = {"vidA": {"label": 1, "numf": 6, "annotations": [
        {"label": 1, "sf": 2, "ef": 4, "boxes": np.array([[10, 20, 5, 8], [12, 20, 5, 8]])},
        {"label": 0, "sf": 0, "ef": 1, "boxes": np.array([[315, 230, 10, 20]])},
    ]}}
    gt = road_to_annotations(road, ["a", "b"], (240, 320))
    # 1-based (x, y, w, h) -> 0-based inclusive corners (x - 1, y - 1, x + w - 1, y + h - 1).
    np.testing.assert_array_equal(gt["gttubes"]["vidA"][1][0],
                                  [[3, 9, 19, 14, 27], [4, 11, 19, 16, 27]])
    # Clipped to the image: x2 = 315 + 10 - 1 = 324 -> 319, y2 = 249 -> 239.
    np.testing.assert_array_equal(gt["gttubes"]["vidA"][0][0], [[1, 314, 229, 319, 239]])
    assert gt["test_videos"] == [["vidA"]] and gt["nframes"]["vidA"] == 6
    with pytest.raises(ValueError, match="vidA, annotation 0: 2 boxes"):
        road_to_annotations({"vidA": {"numf": 6, "annotations": [
            {"label": 0, "sf": 0, "ef": 3, "boxes": np.zeros((2, 4))}]}})


def test_convert_cli(tmp_path, capsys):
    pkl = _write(tmp_path, _gt())
    # One real `python -m` run checks the entry point; the rest call main() in-process (each
    # subprocess pays ~6 s of torch/detectron2 imports).
    done = subprocess.run(
        [sys.executable, "-m", "pcsc_d2.data.convert", "to-json", pkl, str(tmp_path / "a.json")],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    convert_main(["to-pkl", str(tmp_path / "a.json"), str(tmp_path / "b.pkl")])
    back = load_annotations(str(tmp_path / "b.pkl"))
    np.testing.assert_array_equal(back["gttubes"]["Run/v1"][0][0], _gt()["gttubes"]["Run/v1"][0][0])
    road = {"v": {"numf": 3, "annotations": [{"label": 0, "sf": 0, "ef": 2,
                                              "boxes": [[1, 1, 4, 4], [2, 1, 4, 4]]}]}}
    road_file = _write(tmp_path, road, "pyannot.pkl")
    (tmp_path / "labels.txt").write_text("walk\n")
    convert_main(["road", road_file, str(tmp_path / "road.json"), "--labels",
                  str(tmp_path / "labels.txt"), "--resolution", "100x200"])
    road_gt = load_annotations(str(tmp_path / "road.json"))
    assert road_gt["labels"] == ["walk"] and road_gt["resolution"]["v"] == (100, 200)
    np.testing.assert_array_equal(road_gt["gttubes"]["v"][0][0], [[1, 0, 0, 4, 4], [2, 1, 0, 5, 4]])
    with pytest.raises(SystemExit) as exc:
        convert_main(["to-json", str(tmp_path / "missing.pkl"), str(tmp_path / "c.json")])
    assert exc.value.code == 2 and "missing.pkl" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "c.json")
