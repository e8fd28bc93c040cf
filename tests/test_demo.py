"""The video demo end to end on CPU: decode, flow on the fly, detect, link, write."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import torch
from detectron2.modeling import build_model

from pcsc_d2.engine import PCSCCheckpointer, get_pcsc_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quick", "pcsc_tiny.yaml")


def test_demo_writes_video_and_tubes(tmp_path):
    video = str(tmp_path / "in.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (80, 64))
    rng = np.random.default_rng(0)
    background = (rng.random((64, 120, 3)) * 255).astype(np.uint8)
    for i in range(8):
        frame = background[:, i * 2:i * 2 + 80].copy()
        cv2.rectangle(frame, (20 + 3 * i, 15), (40 + 3 * i, 50), (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    # A checkpoint of the tiny model (untrained): the demo must load it strictly.
    torch.manual_seed(0)
    cfg = get_pcsc_cfg(CONFIG, ["MODEL.PCSC.ACTIONNESS.ENABLED", "True"])
    PCSCCheckpointer(build_model(cfg), str(tmp_path)).save("tiny")
    out = str(tmp_path / "out.mp4")
    proc = subprocess.run(
        [sys.executable, "-m", "pcsc_d2.demo", "--video", video, "--config-file", CONFIG,
         "--weights", str(tmp_path / "tiny.pth"), "--output", out,
         "--opts", "MODEL.PCSC.ACTIONNESS.ENABLED", "True", "TUBES.MIN_LENGTH", "2",
         "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cap = cv2.VideoCapture(out)
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 8
    with open(str(tmp_path / "out.tubes.json")) as f:
        tubes = json.load(f)
    for tube in tubes:
        assert len(tube["frames"]) == len(tube["boxes"]) and 1 <= min(tube["frames"])
        assert max(tube["frames"]) <= 8
