"""The streaming video demo: bounded memory, fps and size kept, online tubes, TR from the
weights, and the checks that run before any frame is decoded."""
import json
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import pcsc_d2.demo as demo
from pcsc_d2.engine import PCSCCheckpointer, get_pcsc_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quick", "pcsc_tiny.yaml")
W, H = 80, 64


def _x(i):
    """Left edge of the moving rectangle in frame i (0-based): back and forth, 1 px a frame."""
    return 10 + abs(i % 80 - 40)


def _write_video(path, n, fps=12.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    rng = np.random.default_rng(0)
    background = (rng.random((H, W + 40, 3)) * 255).astype(np.uint8)
    for i in range(n):
        frame = background[:, i % 40:i % 40 + W].copy()
        x = _x(i)
        cv2.rectangle(frame, (x, 15), (x + 20, 50), (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    return str(path)


def _read_video(path):
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


class _StubDetector:
    """Stands in for the model: one box per key frame following the moving rectangle, and
    records the clips it was given."""

    def __init__(self):
        self.frames, self.clip_shapes = [], set()

    def __call__(self, batch):
        out = []
        for inp in batch:
            f = inp["frame"]
            self.frames.append(f)
            self.clip_shapes.add((tuple(inp["rgb"].shape), tuple(inp["flow"].shape)))
            x = float(_x(f - 1))
            inst = Instances((inp["height"], inp["width"]))
            inst.pred_boxes = Boxes(torch.tensor([[x, 15.0, x + 21.0, 51.0]]))
            inst.scores = torch.tensor([0.9])
            inst.pred_classes = torch.tensor([2])
            out.append({"instances": inst})
        return out


@pytest.fixture(scope="module")
def tiny_cfg():
    cfg = get_pcsc_cfg(CONFIG, ["TUBES.MIN_LENGTH", "2"])
    cfg.freeze()
    return cfg


def test_memory_is_bounded_whatever_the_length_and_fps_size_are_kept(tmp_path, tiny_cfg):
    held = {}
    for n in (24, 240):
        video = _write_video(tmp_path / f"in{n}.avi", n)
        out = str(tmp_path / f"out{n}.avi")
        stub = _StubDetector()
        stats = demo.run_demo(tiny_cfg, stub, video, out, class_names=list("ABCDE"))
        held[n] = stats["max_frames_held"]
        frames, fps = _read_video(out)
        assert len(frames) == n and frames[0].shape == (H, W, 3) and fps == pytest.approx(12.0)
        assert stats["frames"] == stats["processed"] == n and stub.frames == list(range(1, n + 1))
        # Clips of K = 4 frames at the config's test size (64 px short side).
        assert stub.clip_shapes == {((3, 4, 64, 80), (3, 4, 64, 80))}
        with open(str(tmp_path / f"out{n}.tubes.json")) as f:
            (tube,) = json.load(f)
        assert tube["class"] == "C" and tube["frames"] == list(range(1, n + 1))
        assert tube["boxes"][0] == [50.0, 15.0, 70.0, 50.0]  # the GT pixel convention
        # The tube is drawn: the output differs from the input on the box's left edge only.
        inputs, _ = _read_video(video)
        f = n // 2
        diff = np.abs(frames[f].astype(int) - inputs[f].astype(int)).sum(-1)
        x = _x(f)
        assert diff[20:45, x].mean() > 3 * diff[55:, :].mean() + 30
    # Images held (full-size frames, resized frames and flow images) are bounded by the clip
    # length K = 4, the batch (4) and the drawing delay (4), the same for a 10x longer video.
    assert held[24] == held[240] <= 3 * (4 + 4 + 4 + 2)


def test_every_and_max_frames(tmp_path, tiny_cfg):
    video = _write_video(tmp_path / "in.avi", 40)
    stub = _StubDetector()
    stats = demo.run_demo(tiny_cfg, stub, video, str(tmp_path / "out.mp4"), every=3,
                          max_frames=20, class_names=list("ABCDE"))
    assert stub.frames == [1, 4, 7, 10, 13, 16, 19] and stats["processed"] == 7
    frames, _ = _read_video(str(tmp_path / "out.mp4"))
    assert len(frames) == stats["frames"] == 20
    with open(str(tmp_path / "out.tubes.json")) as f:
        (tube,) = json.load(f)
    # Linked across the frames that were not processed, which repeat the previous box.
    assert tube["frames"] == list(range(1, 20)) and tube["boxes"][1] == tube["boxes"][0]


def _checkpoint(tmp_path, name, with_head, trained=True):
    torch.manual_seed(0)
    cfg = get_pcsc_cfg(CONFIG, ["MODEL.PCSC.ACTIONNESS.ENABLED", str(with_head)])
    model = build_model(cfg)
    if with_head:
        model.actionness_head.trained.fill_(trained)  # what tools/train_actionness.py sets
    PCSCCheckpointer(model, str(tmp_path)).save(name)
    return str(tmp_path / f"{name}.pth")


def test_weights_with_an_actionness_head_turn_tr_on(tmp_path, caplog):
    video = _write_video(tmp_path / "in.avi", 6)
    args = ["--video", video, "--config-file", CONFIG, "--max-frames", "5", "--opts",
            "TUBES.MIN_LENGTH", "2", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    with caplog.at_level(logging.INFO, logger="pcsc_d2.demo"):
        stats = demo.main(["--weights", _checkpoint(tmp_path, "head", True), "--output",
                           str(tmp_path / "a.mp4"), *args])
    assert "temporal refinement (TR) is on" in caplog.text and "refined by TR" in caplog.text
    assert stats["frames"] == 5 and os.path.isfile(tmp_path / "a.tubes.json")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pcsc_d2.demo"):
        demo.main(["--weights", _checkpoint(tmp_path, "plain", False), "--output",
                   str(tmp_path / "b.mp4"), *args])
    assert "carries no actionness head: tubes are not temporally refined (TR off" in caplog.text
    # A detector checkpoint that carries the head untrained: TR off too, and it loads.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pcsc_d2.demo"):
        demo.main(["--weights", _checkpoint(tmp_path, "untrained", True, trained=False),
                   "--output", str(tmp_path / "c.mp4"), *args])
    assert "carries an untrained actionness head: tubes are not temporally refined" in caplog.text
    assert "refined by TR" not in caplog.text


def test_every_check_runs_before_any_frame_is_decoded(tmp_path, monkeypatch, capsys):
    def no_decoding(*args, **kwargs):
        raise AssertionError("a frame was decoded before the checks finished")

    monkeypatch.setattr(demo, "iter_frames", no_decoding)
    monkeypatch.setattr(demo, "open_video", no_decoding)
    video = _write_video(tmp_path / "in.avi", 4)
    weights = _checkpoint(tmp_path, "w", False)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "bad.yaml").write_text(f"_BASE_: {CONFIG}\nMODEL:\n  NO_SUCH_KEY: 1\n")

    def error(*opts, **over):
        args = dict(video=video, weights=weights, output=str(tmp_path / "out.mp4"),
                    config=CONFIG)
        args.update(over)
        with pytest.raises(SystemExit) as exc:
            demo.main(["--video", args["video"], "--config-file", args["config"], "--weights",
                       args["weights"], "--output", args["output"], "--opts", *opts])
        assert exc.value.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert "out.txt: output extension '.txt' is not supported" in error(
        output=str(tmp_path / "out.txt"))
    assert "output folder" in error(output=str(tmp_path / "nowhere" / "out.mp4"))
    assert "missing.pth" in error(weights=str(tmp_path / "missing.pth"))
    assert "NO_SUCH_KEY" in error(config=str(tmp_path / "bad.yaml"))
    assert "empty.mp4: empty file" in error(video=str(tmp_path / "empty.mp4"))
    assert "does not match the model" in error("MODEL.ROI_HEADS.NUM_CLASSES", "7")
    assert "no_video.avi: video not found" in error(video=str(tmp_path / "no_video.avi"))
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())


def test_undecodable_video_is_one_error_line(tmp_path, capsys):
    (tmp_path / "junk.mp4").write_bytes(b"this is not a video" * 10)
    with pytest.raises(SystemExit) as exc:
        demo.main(["--video", str(tmp_path / "junk.mp4"), "--config-file", CONFIG, "--weights",
                   _checkpoint(tmp_path, "w", False), "--output", str(tmp_path / "out.mp4")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'junk.mp4'}: cannot open the video (not a format OpenCV decodes)")
    assert not os.path.exists(tmp_path / "out.mp4")


def test_command_line_reports_one_error_line(tmp_path):
    # Today's bug: an output named .txt failed after the whole run. Now: at once, exit 2.
    proc = subprocess.run(
        [sys.executable, "-m", "pcsc_d2.demo", "--video", str(tmp_path / "in.mp4"),
         "--config-file", CONFIG, "--weights", str(tmp_path / "w.pth"), "--output",
         str(tmp_path / "out.txt")], cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'out.txt'}: output extension '.txt' is not supported; use .mp4 or "
        ".avi")
