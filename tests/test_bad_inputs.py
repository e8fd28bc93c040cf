"""Bad inputs, one row each: the input (built in a temp dir), the entry point, the message.

Every row checks that the error names the file (or the config key / argument) and the problem.
Library entry points must raise a typed error (pcsc_d2.utils.errors: a ValueError, or an OSError
too for missing and corrupt files; UnsafePickleError for a pickle that would run code).
Command-line entry points must exit with status 2 and print one ``error:`` line and no traceback:
most rows call their ``main(argv)`` in-process, and a few run ``python -m ...`` / train_net.py
end to end.
"""
import copy
import json
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, List, Sequence

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from pcsc_d2.data import UnsafePickleError, load_annotations, register_action_dataset
from pcsc_d2.data.convert import main as convert_main
from pcsc_d2.data.datasets import load_action_dataset
from pcsc_d2.data.flow import extract_flow_frames, list_frames
from pcsc_d2.data.mapper import read_clip
from pcsc_d2.engine.checkpoint import PCSCCheckpointer
from pcsc_d2.engine.checks import check_pcsc_setup, load_pcsc_cfg
from pcsc_d2.evaluation.__main__ import main as evaluate_main
from pcsc_d2.utils.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "quick", "pcsc_tiny.yaml")
BOX = [2.0, 3.0, 21.0, 30.0]


# ---------------------------------------------------------------------------- inputs
def _gt(num_labels: int = 2) -> dict:
    """A valid GT: Run/v1 (10 frames) and Jump/v2 (8 frames), 50x40, one tube each."""
    tube = np.array([[2, 10, 20, 30, 35], [3, 11, 20, 31, 35], [4, 12, 21, 32, 36]], np.float32)
    return {
        "labels": ["Run", "Jump", "Wave", "Sit", "Stand"][:num_labels],
        "gttubes": {"Run/v1": {0: [tube]}, "Jump/v2": {1: [tube.copy()]}},
        "nframes": {"Run/v1": 10, "Jump/v2": 8},
        "resolution": {"Run/v1": (40, 50), "Jump/v2": (40, 50)},
        "train_videos": [["Run/v1"]],
        "test_videos": [["Jump/v2"]],
    }


def _pickle(path, obj) -> str:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return str(path)


def _text(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _json(path, obj) -> str:
    return _text(path, json.dumps(obj))


def _gt_pkl(tmp, name: str, mutate: Callable[[dict], None] = lambda g: None) -> str:
    gt = copy.deepcopy(_gt())
    mutate(gt)
    return _pickle(tmp / name, gt)


def _gt_json(tmp, name: str, mutate: Callable[[dict], None]) -> str:
    gt = _gt()
    as_json = {
        **gt,
        "gttubes": {v: {str(k): [t.tolist() for t in ts] for k, ts in p.items()}
                    for v, p in gt["gttubes"].items()},
    }
    mutate(as_json)
    return _json(tmp / name, as_json)


def _tube(gt: dict) -> np.ndarray:
    return gt["gttubes"]["Run/v1"][0][0]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _evil(tmp, name: str = "evil.pkl") -> str:
    return _gt_pkl(tmp, name, lambda g: g.__setitem__("labels", _Evil()))


def _image_bytes(ext: str) -> bytes:
    y, x = np.mgrid[0:48, 0:64]
    img = np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.uint8)
    return cv2.imencode(ext, img)[1].tobytes()


def _frames(tmp, name: str, ext: str = ".jpg", keep: int = 600) -> List[str]:
    """Three frames in tmp/name, of which the second keeps only its first ``keep`` bytes."""
    folder = tmp / name
    folder.mkdir()
    paths = []
    for i in range(1, 4):
        data = _image_bytes(ext)
        (folder / f"{i:05d}{ext}").write_bytes(data[:keep] if i == 2 else data)
        paths.append(str(folder / f"{i:05d}{ext}"))
    return paths


def _cut(path: str, keep: int) -> str:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:keep])
    return path


def _folder(tmp, name: str) -> str:
    (tmp / name).mkdir()
    return str(tmp / name)


def _road(tmp, annotations, name: str = "pyannot.pkl") -> str:
    return _pickle(tmp / name, {"vidA": {"label": 0, "numf": 6, "annotations": annotations}})


GOOD_ROAD = [{"label": 0, "sf": 0, "ef": 2, "boxes": np.array([[1, 1, 4, 4], [2, 1, 4, 4]])}]


def _eval_gt(tmp) -> str:
    """GT.pkl of the evaluation rows: run/a and jump/b, 10 frames each, one test split."""
    tube = np.c_[np.arange(1, 9), np.tile(BOX, (8, 1))].astype(np.float32)
    return _pickle(tmp / "GT.pkl", {
        "labels": ["run", "jump"],
        "gttubes": {"run/a": {0: [tube]}, "jump/b": {1: [tube]}},
        "nframes": {"run/a": 10, "jump/b": 10},
        "resolution": {"run/a": (40, 50), "jump/b": (40, 50)},
        "train_videos": [[]],
        "test_videos": [["run/a", "jump/b"]],
    })


def _det(**kw) -> dict:
    return {"video": "run/a", "frame": 1, "label": 0, "score": 0.5, "box": BOX, **kw}


def _tube_entry(frames: Sequence[int]) -> dict:
    return {"video": "run/a", "label": 0, "score": 0.5, "frames": list(frames),
            "boxes": [BOX] * len(frames)}


def _evaluate(tmp, *extra: str, dets=None, tubes=None) -> List[str]:
    argv = ["--gt", _eval_gt(tmp), "--out", str(tmp / "metrics.json"), *extra]
    if dets is not None:
        argv += ["--frame-dets", _json(tmp / "dets.json", dets)]
    if tubes is not None:
        argv += ["--tubes", _json(tmp / "tubes.json", tubes)]
    return argv


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(2, 3)


def _truncated_pth(tmp, name: str = "trunc.pth") -> str:
    path = str(tmp / name)
    torch.save({"model": _Net().state_dict()}, path)
    return _cut(path, os.path.getsize(path) // 2)


# A dataset "badinputs_train" of 5 classes whose GT file lies in the temp dir.
DATASET = "badinputs_train"


def _cfg(tmp, *opts: str, dataset: str = DATASET, write_gt: bool = True):
    """The tiny config training on ``dataset``, with DATASET registered (GT in ``tmp``)."""
    if write_gt:
        _pickle(tmp / "GT5.pkl", _gt(num_labels=5))
    register_action_dataset(DATASET, str(tmp), "GT5.pkl", 1, True, "ucf", 4)
    return load_pcsc_cfg(
        TINY, ["DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", "()", *opts]
    )


# ---------------------------------------------------------------------------- entry points
def _raises(fn, error=InputError):
    """Library entry point: it must raise ``error``; the row checks the message."""

    def run(arg, capsys) -> str:
        with pytest.raises(error) as info:
            fn(arg)
        return str(info.value)

    return run


def _cli(main):
    """In-process command line: status 2, exactly one "error:" line, no traceback."""

    def run(argv, capsys) -> str:
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        assert code == 2, err
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, err
        return lines[0]

    return run


def _setup_checks(**kw):
    return _raises(lambda cfg: check_pcsc_setup(cfg, dataset_keys=("TRAIN",), **kw))


load_gt = _raises(load_annotations)
convert = _cli(convert_main)
evaluate = _cli(evaluate_main)
read_frames = _raises(read_clip, OSError)
flow_frames = _raises(lambda folder: extract_flow_frames(list_frames(folder), folder + "_flow",
                                                         "dis"), OSError)
checks = _setup_checks()
checks_trained = _setup_checks(weights_required=True)
load_cfg = _raises(lambda args: load_pcsc_cfg(*args))
load_checkpoint = _raises(lambda path: PCSCCheckpointer(_Net()).load(path), OSError)
load_dataset = _raises(lambda args: load_action_dataset(os.path.dirname(args[0]), args[0], args[1], True))


@dataclass
class Row:
    name: str
    entry: Callable  # (input, capsys) -> the error message
    make: Callable  # tmp_path -> the entry point's input
    expect: Sequence[str]  # substrings of the message


def _nan(g):
    _tube(g)[1, 1] = np.nan


ROWS = [
    # GT files: silent wrong results before.
    Row("gt NaN coordinate", load_gt, lambda t: _gt_pkl(t, "nan.pkl", _nan),
        ["nan.pkl", "Run/v1", "tube 0", "NaN or infinity"]),
    Row("gt infinite coordinate", load_gt,
        lambda t: _gt_pkl(t, "inf.pkl", lambda g: _tube(g).__setitem__((2, 4), np.inf)),
        ["inf.pkl", "Run/v1", "NaN or infinity"]),
    Row("gt JSON row of 10 numbers", load_gt,
        lambda t: _gt_json(t, "row10.json", lambda g: g["gttubes"]["Run/v1"]["0"].__setitem__(
            0, [[2, 10, 20, 30, 35, 3, 11, 20, 31, 35]])),
        ["row10.json", "Run/v1", "shape (1, 10)"]),
    Row("gt JSON tube as one flat list", load_gt,
        lambda t: _gt_json(t, "flat.json", lambda g: g["gttubes"]["Run/v1"]["0"].__setitem__(
            0, [2, 10, 20, 30, 35, 3, 11, 20, 31, 35])),
        ["flat.json", "shape (10,)"]),
    Row("gt JSON ragged rows", load_gt,
        lambda t: _gt_json(t, "ragged.json", lambda g: g["gttubes"]["Run/v1"]["0"].__setitem__(
            0, [[2, 10, 20, 30, 35], [3, 11, 20, 31]])),
        ["ragged.json", "rows must all be 5 numbers"]),
    Row("gt JSON coordinates as strings", load_gt,
        lambda t: _gt_json(t, "strings.json", lambda g: g["gttubes"]["Run/v1"]["0"].__setitem__(
            0, [["2", "10", "20", "30", "35"]])),
        ["strings.json", "rows must hold numbers"]),
    Row("gt duplicate frame", load_gt,
        lambda t: _gt_pkl(t, "dup.pkl", lambda g: _tube(g).__setitem__((1, 0), 2)),
        ["dup.pkl", "Run/v1", "frame 2 appears twice"]),
    Row("gt unsorted frames", load_gt,
        lambda t: _gt_pkl(t, "unsorted.pkl", lambda g: _tube(g).__setitem__((2, 0), 1)),
        ["unsorted.pkl", "frame 1 comes after frame 3"]),
    # GT files: tracebacks before.
    Row("gt nframes as a list", load_gt,
        lambda t: _gt_pkl(t, "nf.pkl", lambda g: g.__setitem__("nframes", [10, 8])),
        ["nf.pkl", "'nframes' must be a dict", "got list"]),
    Row("gt gttubes as a list", load_gt,
        lambda t: _gt_pkl(t, "tubes.pkl", lambda g: g.__setitem__("gttubes", [])),
        ["tubes.pkl", "'gttubes' must be a dict"]),
    Row("gt resolution of one number", load_gt,
        lambda t: _gt_pkl(t, "res1.pkl", lambda g: g["resolution"].__setitem__("Run/v1", 240)),
        ["res1.pkl", "Run/v1", "resolution 240 is not a pair"]),
    Row("gt resolution of three numbers", load_gt,
        lambda t: _gt_pkl(t, "res3.pkl",
                          lambda g: g["resolution"].__setitem__("Run/v1", (40, 50, 3))),
        ["res3.pkl", "is not a pair (height, width)"]),
    Row("gt label key not a class index", load_gt,
        lambda t: _gt_json(t, "key.json", lambda g: g["gttubes"]["Run/v1"].__setitem__(
            "Run", g["gttubes"]["Run/v1"].pop("0"))),
        ["key.json", "label key 'Run' is not a class index"]),
    Row("gt without any class", load_gt,
        lambda t: _gt_pkl(t, "nolabels.pkl", lambda g: (
            g.__setitem__("labels", []), g.__setitem__("gttubes", {}))),
        ["nolabels.pkl", "'labels' is empty"]),
    Row("gt JSON that does not parse", load_gt, lambda t: _text(t / "broken.json", '{"labels": '),
        ["broken.json", "not valid JSON"]),
    Row("gt path is a directory", load_gt, lambda t: _folder(t, "gtdir.pkl"),
        ["gtdir.pkl", "is a directory, expected a GT file"]),
    Row("gt file missing", load_gt, lambda t: str(t / "missing.pkl"),
        ["missing.pkl", "GT file not found"]),
    Row("gt empty file", load_gt, lambda t: _text(t / "empty.pkl", ""),
        ["empty.pkl: empty file"]),
    Row("gt truncated pickle", load_gt, lambda t: _cut(_gt_pkl(t, "cut.pkl"), 100),
        ["cut.pkl", "not a readable GT pickle"]),
    Row("gt pickle that would run code", _raises(load_annotations, UnsafePickleError),
        lambda t: _evil(t), ["evil.pkl", "refusing to unpickle", "system"]),
    # The converter.
    Row("convert: unsafe pickle", convert,
        lambda t: ["to-json", _evil(t), str(t / "o.json")], ["evil.pkl", "refusing to unpickle"]),
    Row("convert: nframes as a list", convert,
        lambda t: ["to-json", _gt_pkl(t, "nf.pkl", lambda g: g.__setitem__("nframes", [10])),
                   str(t / "o.json")],
        ["nf.pkl", "'nframes' must be a dict"]),
    Row("convert: input missing", convert,
        lambda t: ["to-pkl", str(t / "absent.json"), str(t / "o.pkl")],
        ["absent.json: GT file not found"]),
    Row("convert: output is a directory", convert,
        lambda t: ["to-json", _gt_pkl(t, "ok.pkl"), _folder(t, "outdir.json")],
        ["outdir.json", "is a directory"]),
    Row("convert road: bad --resolution", convert,
        lambda t: ["road", _road(t, GOOD_ROAD), str(t / "o.json"), "--resolution", "240"],
        ["--resolution '240'", "HEIGHTxWIDTH"]),
    Row("convert road: labels file missing", convert,
        lambda t: ["road", _road(t, GOOD_ROAD), str(t / "o.json"), "--labels",
                   str(t / "labels.txt")],
        ["labels.txt", "labels file not found"]),
    Row("convert road: splits JSON that does not parse", convert,
        lambda t: ["road", _road(t, GOOD_ROAD), str(t / "o.json"), "--splits",
                   _text(t / "splits.json", "[[")],
        ["splits.json", "not valid JSON"]),
    Row("convert road: splits without test_videos", convert,
        lambda t: ["road", _road(t, GOOD_ROAD), str(t / "o.json"), "--splits",
                   _json(t / "splits.json", {"train_videos": [["vidA"]]})],
        ["splits.json", "'test_videos' must be a list of lists"]),
    Row("convert road: annotation without a label", convert,
        lambda t: ["road", _road(t, [{"sf": 0, "ef": 1, "boxes": [[1, 1, 4, 4]]}]),
                   str(t / "o.json")],
        ["pyannot.pkl", "vidA, annotation 0", "expected a dict with 'label'"]),
    Row("convert road: boxes of 5 numbers", convert,
        lambda t: ["road", _road(t, [{"label": 0, "sf": 0, "ef": 2,
                                      "boxes": np.zeros((2, 5))}]), str(t / "o.json")],
        ["pyannot.pkl", "'boxes' must be an (n, 4) array"]),
    Row("convert road: NaN box", convert,
        lambda t: ["road", _road(t, [{"label": 0, "sf": 0, "ef": 1,
                                      "boxes": np.array([[np.nan, 1, 4, 4]])}]),
                   str(t / "o.json")],
        ["pyannot.pkl", "vidA", "NaN or infinity"]),
    Row("convert road: not a dict of videos", convert,
        lambda t: ["road", _pickle(t / "list.pkl", [1, 2]), str(t / "o.json")],
        ["list.pkl", "expected a dict"]),
    # The evaluation command line.
    Row("evaluate: detections file missing", evaluate,
        lambda t: _evaluate(t) + ["--frame-dets", str(t / "nodets.json")],
        ["nodets.json", "detections file not found"]),
    Row("evaluate: detections JSON that does not parse", evaluate,
        lambda t: _evaluate(t) + ["--frame-dets", _text(t / "dets.json", "[{")],
        ["dets.json", "not valid JSON"]),
    Row("evaluate: --split out of range", evaluate,
        lambda t: _evaluate(t, "--split", "3", tubes=[_tube_entry([1, 2])]),
        ["GT.pkl", "--split 3 is out of range", "1 split(s)"]),
    Row("evaluate: detection frame past the video's end", evaluate,
        lambda t: _evaluate(t, dets=[_det(), _det(frame=11)]),
        ["dets.json", "entry 1", "frame 11", "run/a has frames 1..10"]),
    Row("evaluate: detection frame 0", evaluate,
        lambda t: _evaluate(t, dets=[_det(frame=0)]), ["dets.json", "entry 0", "frame 0"]),
    Row("evaluate: negative tube frames", evaluate,
        lambda t: _evaluate(t, tubes=[_tube_entry([-2, -1, 0, 1])]),
        ["tubes.json", "entry 0", "frame -2"]),
    Row("evaluate: tube frames past the video's end", evaluate,
        lambda t: _evaluate(t, tubes=[_tube_entry([9, 10, 11])]),
        ["tubes.json", "frame 11", "frames 1..10"]),
    Row("evaluate: frame IoU above 1", evaluate,
        lambda t: _evaluate(t, "--frame-iou", "1.5", dets=[_det()]),
        ["--frame-iou 1.5", "(0, 1]"]),
    Row("evaluate: video IoU of 0", evaluate,
        lambda t: _evaluate(t, "--video-ious", "0.5", "0", tubes=[_tube_entry([1])]),
        ["--video-ious 0.0", "(0, 1]"]),
    Row("evaluate: GT pickle that would run code", evaluate,
        lambda t: ["--gt", _evil(t), "--out", str(t / "m.json"), "--frame-dets",
                   _json(t / "d.json", [])],
        ["evil.pkl", "refusing to unpickle"]),
    Row("evaluate: GT resolution of one number", evaluate,
        lambda t: ["--gt", _gt_pkl(t, "res.pkl", lambda g: g["resolution"].__setitem__(
            "Jump/v2", 240)), "--out", str(t / "m.json"), "--frame-dets", _json(t / "d.json", [])],
        ["res.pkl", "resolution 240"]),
    # Frames.
    Row("frame: truncated JPEG", read_frames, lambda t: _frames(t, "cut"),
        ["00002.jpg", "truncated JPEG"]),
    Row("frame: truncated PNG (J-HMDB)", read_frames, lambda t: _frames(t, "cutpng", ".png"),
        ["00002.png", "truncated PNG"]),
    Row("frame: empty file", read_frames, lambda t: _frames(t, "zero", keep=0),
        ["00002.jpg", "empty file"]),
    Row("frame: missing", read_frames, lambda t: [str(t / "00001.jpg")],
        ["00001.jpg", "frame not found"]),
    Row("flow: truncated JPEG frame", flow_frames,
        lambda t: os.path.dirname(_frames(t, "video")[0]),
        ["00002.jpg", "truncated JPEG"]),
    # Pre-flight checks of train_net.py and the tools.
    # Dataset loading (what train_net.py's data loader calls).
    Row("dataset: the GT path is a directory", load_dataset,
        lambda t: (_folder(t, "GTdir.pkl"), 1), ["GTdir.pkl", "is a directory"]),
    Row("dataset: split out of range", load_dataset,
        lambda t: (_pickle(t / "GT5.pkl", _gt(num_labels=5)), 3),
        ["GT5.pkl", "split 3 requested, the file has 1"]),
    Row("checks: misspelled dataset name", checks, lambda t: _cfg(t, dataset="badinputs_trian"),
        ["DATASETS.TRAIN", "'badinputs_trian'", "did you mean 'badinputs_train'",
         "GT5.pkl", "synthetic-GT.pkl"]),
    Row("checks: the dataset's GT file is missing", checks,
        lambda t: _cfg(t, write_gt=False),
        ["GT5.pkl", "not found", "badinputs_train", "DETECTRON2_DATASETS"]),
    Row("checks: NUM_CLASSES below the dataset's", checks,
        lambda t: _cfg(t, "MODEL.ROI_HEADS.NUM_CLASSES", "3"),
        ["MODEL.ROI_HEADS.NUM_CLASSES is 3", "'badinputs_train' has 5 classes", "GT5.pkl"]),
    Row("checks: MODEL.WEIGHTS missing", checks,
        lambda t: _cfg(t, "MODEL.WEIGHTS", str(t / "i3d.pth")),
        ["i3d.pth", "not found"]),
    Row("checks: MODEL.WEIGHTS truncated", checks,
        lambda t: _cfg(t, "MODEL.WEIGHTS", _truncated_pth(t)),
        ["trunc.pth", "truncated"]),
    Row("checks: MODEL.WEIGHTS is a directory", checks,
        lambda t: _cfg(t, "MODEL.WEIGHTS", _folder(t, "weights.pth")),
        ["weights.pth", "is a directory"]),
    Row("checks: trained weights needed, none given", checks_trained,
        lambda t: _cfg(t), ["MODEL.WEIGHTS is empty", "trained checkpoint"]),
    Row("config file missing", load_cfg, lambda t: (str(t / "nope.yaml"), []),
        ["nope.yaml", "config file not found"]),
    Row("config override of an unknown key", load_cfg,
        lambda t: (TINY, ["MODEL.ROI_HEADS.NUM_CLASES", "3"]),
        ["pcsc_tiny.yaml", "MODEL.ROI_HEADS.NUM_CLASES"]),
    Row("checkpoint: truncated .pth", load_checkpoint, lambda t: _truncated_pth(t),
        ["trunc.pth", "truncated"]),
    Row("checkpoint: missing", load_checkpoint, lambda t: str(t / "gone.pth"),
        ["gone.pth", "not found"]),
]


@pytest.fixture
def restore_catalog():
    yield
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for catalog in (DatasetCatalog, MetadataCatalog):
        if DATASET in catalog.list():
            catalog.remove(DATASET)


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_bad_input_gives_one_clear_error(row, tmp_path, capsys, restore_catalog):
    message = row.entry(row.make(tmp_path), capsys)
    assert "\n" not in message
    for part in row.expect:
        assert part in message, f"{part!r} not in {message!r}"


def test_larger_num_classes_is_a_warning(tmp_path, caplog, restore_catalog):
    check_pcsc_setup(_cfg(tmp_path, "MODEL.ROI_HEADS.NUM_CLASSES", "7"), dataset_keys=("TRAIN",))
    assert "NUM_CLASSES is 7 but dataset 'badinputs_train' has 5 classes" in caplog.text


def test_misspelled_dataset_lists_action_datasets_only(tmp_path, restore_catalog):
    with pytest.raises(InputError) as info:
        check_pcsc_setup(_cfg(tmp_path, dataset="ucf24_trian"), dataset_keys=("TRAIN",))
    assert "did you mean 'ucf24_train'" in str(info.value)
    assert "coco" not in str(info.value) and "lvis" not in str(info.value)


@pytest.mark.parametrize(
    "dets,message",
    [([], "holds no detections"), ([_det(video="nope/x")], "not in the GT file")],
)
def test_empty_or_unmatched_detections_warn(tmp_path, caplog, dets, message):
    """Nothing to score is not silent: a warning line, then the (zero) metrics."""
    assert evaluate_main(_evaluate(tmp_path, dets=dets)) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(message in w and "dets.json" in w for w in warnings), warnings


def _run(args: Sequence[str], env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, **(env or {})), timeout=300)


def _assert_one_error_line(proc: subprocess.CompletedProcess, *parts: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for part in parts:
        assert part in lines[0]


def test_command_lines_end_to_end(tmp_path):
    """The real entry points: exit status 2, one error line, no traceback."""
    _assert_one_error_line(
        _run(["-m", "pcsc_d2.evaluation", "--gt", _eval_gt(tmp_path), "--frame-dets",
              str(tmp_path / "nodets.json"), "--out", str(tmp_path / "m.json")]),
        "nodets.json", "not found",
    )
    _assert_one_error_line(
        _run(["-m", "pcsc_d2.data.convert", "to-json", _evil(tmp_path), str(tmp_path / "o.json")]),
        "evil.pkl", "refusing to unpickle",
    )


def test_train_net_checks_before_building_anything(tmp_path):
    """A misspelled dataset stops train_net.py in one line, before any model or output dir."""
    env = {"DETECTRON2_DATASETS": str(tmp_path)}
    proc = _run(["train_net.py", "--config-file", TINY, "OUTPUT_DIR", str(tmp_path / "out"),
                 "DATASETS.TRAIN", "('synthetic_trian',)"], env)
    _assert_one_error_line(proc, "'synthetic_trian'", "did you mean 'synthetic_train'",
                           "synthetic-GT.pkl", "UCF101v2-GT.pkl")
    assert "coco_2017_train" not in proc.stderr
    assert not os.path.exists(tmp_path / "out")
