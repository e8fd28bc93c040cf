"""`python -m pcsc_d2.data.prepare`: real UCF-101-24 clips with ROAD's annotations, the simple
JSON format, shards, resuming and the input errors.

The real-clip tests use ../shared/real_ucf24 (see its README) and skip where it is absent.
"""
import json
import os
import pickle
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog

from pcsc_d2.data import load_annotations, register_pcsc_datasets
from pcsc_d2.data.convert import UCF24_CLASSES
from pcsc_d2.data.prepare import main as prepare_main
from pcsc_d2.utils.safe_pickle import SafeUnpickler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "real_ucf24")
FRAMES = 30
# A re-encoded 340x256 test video (group 1) with two tubes, and an original 320x240 training
# video (group 23).
CLIPS = {"Fencing/v_Fencing_g01_c06": "v_Fencing_g01_c06.mp4",
         "SoccerJuggling/v_SoccerJuggling_g23_c01": "v_SoccerJuggling_g23_c01.avi"}

needs_shared = pytest.mark.skipif(
    not os.path.isdir(SHARED), reason=f"real UCF-101-24 clips not found at {SHARED}"
)


def _road():
    with open(os.path.join(SHARED, "pyannot.pkl"), "rb") as f:
        return SafeUnpickler(f, filename="pyannot.pkl", encoding="latin1").load()


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            out[p] = os.stat(p).st_mtime_ns
    return out


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    if not os.path.isdir(SHARED):
        pytest.skip(f"real UCF-101-24 clips not found at {SHARED}")
    tmp = tmp_path_factory.mktemp("real")
    videos = tmp / "videos"
    videos.mkdir()
    for name in CLIPS.values():
        shutil.copy(os.path.join(SHARED, "videos", name), videos / name)
    out = tmp / "datasets" / "realclips"
    args = ["--videos", str(videos), "--annotations", os.path.join(SHARED, "pyannot.pkl"),
            "--format", "road", "--out", str(out), "--name", "realclips", "--flow", "dis",
            "--max-frames", str(FRAMES), "--workers", "2"]
    prepare_main(args)
    return {"out": str(out), "args": args, "gt": load_annotations(str(out / "realclips-GT.pkl"))}


@needs_shared
def test_real_clips_boxes_frames_splits_and_classes(real):
    gt, road = real["gt"], _road()
    assert gt["labels"] == UCF24_CLASSES
    assert gt["train_videos"] == [["SoccerJuggling/v_SoccerJuggling_g23_c01"]]
    assert gt["test_videos"] == [["Fencing/v_Fencing_g01_c06"]]
    sizes = {"Fencing/v_Fencing_g01_c06": (340, 256),
             "SoccerJuggling/v_SoccerJuggling_g23_c01": (320, 240)}
    for video, (w, h) in sizes.items():
        assert gt["nframes"][video] == FRAMES and gt["resolution"][video] == (h, w)
        for kind in ("rgb-images", "brox-images"):
            names = sorted(os.listdir(os.path.join(real["out"], kind, video)))
            assert names == [f"{i:05d}.jpg" for i in range(1, FRAMES + 1)]
        assert cv2.imread(os.path.join(real["out"], "rgb-images", video, "00001.jpg")).shape == (
            h, w, 3)
        # pyannot: 1-based (x, y, w, h) on 320x240 -> 0-based corners, scaled to the frames.
        sx, sy = w / 320, h / 240
        expected = []
        for ann in road[video]["annotations"]:
            b = ann["boxes"].astype(np.float64)[: FRAMES - ann["sf"]]
            corners = np.stack([(b[:, 0] - 1) * sx, (b[:, 1] - 1) * sy,
                                (b[:, 0] + b[:, 2] - 1) * sx, (b[:, 1] + b[:, 3] - 1) * sy], 1)
            expected.append((ann["label"], ann["sf"] + 1, corners))
        got = [(label, int(t[0, 0]), t[:, 1:]) for label, tubes in gt["gttubes"][video].items()
               for t in tubes]
        assert len(got) == len(expected)
        for e_label, e_first, e_boxes in expected:
            # The prepared tube of the same class and start that is closest to this one.
            candidates = [b for label, first, b in got if (label, first) == (e_label, e_first)
                          and len(b) == len(e_boxes)]
            assert candidates
            best = min(candidates, key=lambda b: np.abs(b - e_boxes).max())
            np.testing.assert_allclose(best, e_boxes, atol=0.5)
    assert [UCF24_CLASSES[k] for k in gt["gttubes"]["Fencing/v_Fencing_g01_c06"]] == ["Fencing"]


@needs_shared
def test_second_run_does_nothing_and_dataset_registers_itself(real, monkeypatch):
    before = _files(real["out"])
    prepare_main(real["args"])
    assert _files(real["out"]) == before  # same files, none rewritten
    monkeypatch.setenv("DETECTRON2_DATASETS", os.path.dirname(real["out"]))
    try:
        assert "realclips_train" in register_pcsc_datasets(num_frames=8)
        train, test = DatasetCatalog.get("realclips_train"), DatasetCatalog.get("realclips_test")
        assert {d["video"] for d in train} == {"SoccerJuggling/v_SoccerJuggling_g23_c01"}
        assert len(test) == FRAMES and all(d["annotations"] for d in test)
        for d in train + test:
            assert all(os.path.isfile(p) for p in d["rgb_files"] + d["flow_files"])
    finally:
        monkeypatch.delenv("DETECTRON2_DATASETS")
        register_pcsc_datasets()


@needs_shared
def test_pyannot_classes_and_the_default_test_split():
    road = _road()
    assert len(road) == 3194
    for video, entry in road.items():
        assert str(video).split("/")[0] == UCF24_CLASSES[entry["label"]]
    with open(os.path.join(SHARED, "testlist01.txt")) as f:
        test_list = {line.strip() for line in f if line.strip()}
    # prepare's default split for road (groups g01..g07 are test) is UCF-101's split 1.
    groups = {str(v) for v in road if int(str(v).split("_g")[1][:2]) <= 7}
    assert groups == test_list


def _write_video(path, n, size=(64, 48), fps=10):
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    rng = np.random.default_rng(n)
    background = (rng.random((h, w + 2 * n, 3)) * 255).astype(np.uint8)
    for i in range(n):
        frame = background[:, 2 * i:2 * i + w].copy()
        cv2.rectangle(frame, (10 + i, 10), (25 + i, 40), (0, 0, 255), -1)
        writer.write(frame)
    writer.release()


@pytest.fixture
def own(tmp_path):
    """Two small videos of the user's own, in folders, with the simple JSON format."""
    (tmp_path / "vids" / "walks").mkdir(parents=True)
    _write_video(tmp_path / "vids" / "walks" / "walk_01.avi", 12)
    _write_video(tmp_path / "vids" / "wave_02.avi", 10)
    (tmp_path / "vids" / "unannotated.avi").write_bytes(b"")  # no annotation: never read
    spec = {
        "labels": ["Walk", "Wave", "TurnLeft", "TurnRight"],
        "flip_pairs": [["TurnLeft", "TurnRight"]],
        "box_format": "xywh",
        "first_frame": 0,
        "videos": {
            "walk_01": {"size": [128, 96], "tubes": [
                {"label": "Walk", "boxes": [[f, 20 + 2 * f, 20, 32, 62] for f in range(2, 9)]}]},
            "wave_02": {"split": "test", "tubes": [
                {"label": "Wave", "boxes": [[f, 10, 10, 16, 31] for f in (0, 1, 2, 4)]}]},
        },
    }
    (tmp_path / "ann.json").write_text(json.dumps(spec))
    return tmp_path


def _prepare_own(own, *extra):
    prepare_main(["--videos", str(own / "vids"), "--annotations", str(own / "ann.json"),
                  "--format", "json", "--out", str(own / "ds"), "--name", "own", "--flow",
                  "dis", "--workers", "1", *extra])
    return own / "ds" / "own-GT.pkl"


def test_json_format_rescales_boxes_keeps_flip_pairs_and_splits(own):
    gt = load_annotations(str(_prepare_own(own)))
    assert gt["labels"] == ["Walk", "Wave", "TurnLeft", "TurnRight"]
    assert gt["flip_pairs"] == [["TurnLeft", "TurnRight"]]
    assert gt["train_videos"] == [["walk_01"]] and gt["test_videos"] == [["wave_02"]]
    assert gt["nframes"] == {"walk_01": 12, "wave_02": 10}
    assert gt["resolution"]["walk_01"] == (48, 64)
    (walk,) = gt["gttubes"]["walk_01"][0]
    # Frame 2 (0-based) is frame 3; xywh (24, 20, 32, 62) on 128x96 -> corners (24, 20, 55, 81)
    # -> scaled by 1/2: x1 = 12, x2 = (55 + 1) / 2 - 1 = 27, y1 = 10, y2 = 40.
    np.testing.assert_allclose(walk[0], [3, 12, 10, 27, 40])
    assert walk[:, 0].tolist() == list(range(3, 10))
    (wave,) = gt["gttubes"]["wave_02"][1]
    np.testing.assert_allclose(wave[:, 0], [1, 2, 3, 5])  # a tube may skip frames
    np.testing.assert_allclose(wave[0, 1:], [10, 10, 25, 40])  # drawn on the video's frames


def test_shards_then_merge_equal_one_run(own, capsys):
    whole = _prepare_own(own)
    whole_bytes = whole.read_bytes()
    shutil.rmtree(own / "ds")
    assert _prepare_own(own, "--shard", "2/2") and not whole.exists()
    with pytest.raises(SystemExit) as exc:
        _prepare_own(own, "--merge")
    assert exc.value.code == 2
    assert "1 of the 2 videos are not prepared yet" in capsys.readouterr().err
    _prepare_own(own, "--shard", "1/2")
    _prepare_own(own, "--merge")
    assert whole.read_bytes() == whole_bytes


def _error(own, capsys, *args, annotations=None):
    with pytest.raises(SystemExit) as exc:
        prepare_main(["--videos", str(own / "vids"), "--annotations",
                      str(annotations or own / "ann.json"), "--format", "json", "--out",
                      str(own / "ds"), "--name", "own", "--flow", "dis", "--workers", "1", *args])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert err  # (stderr also holds the progress bars)
    assert not os.path.exists(own / "ds" / "rgb-images")  # found before any work
    return "\n".join(err)


def test_input_errors_name_the_file_before_any_work(own, capsys):
    spec = json.loads((own / "ann.json").read_text())
    # An unreadable video.
    (own / "vids" / "wave_02.avi").write_bytes(b"this is not a video")
    err = _error(own, capsys)
    assert "wave_02.avi" in err and "cannot open the video" in err
    _write_video(own / "vids" / "wave_02.avi", 10)
    # Fewer frames than the annotations reach: both numbers.
    spec["videos"]["wave_02"]["tubes"][0]["boxes"].append([19, 10, 10, 16, 31])
    (own / "bad.json").write_text(json.dumps(spec))
    err = _error(own, capsys, annotations=own / "bad.json")
    assert "wave_02.avi: has 10 frames" in err and "reach frame 20" in err
    # An annotated class missing from the class list.
    spec["videos"]["wave_02"]["tubes"][0].update(label="Jog", boxes=[[0, 1, 1, 4, 4]])
    (own / "bad.json").write_text(json.dumps(spec))
    err = _error(own, capsys, annotations=own / "bad.json")
    assert "bad.json: video 'wave_02', tube 0: class 'Jog' is not in the class list" in err
    # ROAD labels index the 24 UCF-101-24 classes.
    road = {"walks/walk_01": {"label": 30, "numf": 12, "annotations": [
        {"label": 30, "sf": 0, "ef": 2, "boxes": np.array([[1, 1, 5, 5]] * 2, np.uint8)}]}}
    with open(own / "pyannot.pkl", "wb") as f:
        pickle.dump(road, f, protocol=2)
    with pytest.raises(SystemExit):
        prepare_main(["--videos", str(own / "vids"), "--annotations", str(own / "pyannot.pkl"),
                      "--format", "road", "--out", str(own / "ds"), "--name", "own"])
    assert "class 30 is not in the class list (24 classes" in capsys.readouterr().err
    assert "--shard '3/2'" in _error(own, capsys, "--shard", "3/2")


def test_command_line_entry_point(own):
    proc = subprocess.run(
        [sys.executable, "-m", "pcsc_d2.data.prepare", "--videos", str(own / "nowhere"),
         "--annotations", str(own / "ann.json"), "--format", "json", "--out", str(own / "ds"),
         "--name", "own"], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {own / 'nowhere'}: videos folder not found"
