import json
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.engine import launch
from detectron2.structures import Boxes, Instances

from pcsc_d2.config import add_pcsc_config
from pcsc_d2.evaluation import PCSCEvaluator
from pcsc_d2.structures import gt_to_d2

H, W, NFRAMES = 60, 80, 12


def _annotations():
    gttubes = {}
    for v in range(4):
        f = np.arange(2, 11) if v % 2 == 0 else np.arange(1, NFRAMES + 1)
        box = np.array([5.0 + 3 * v, 5.0, 30.0 + 3 * v, 40.0])
        gttubes[f"c{v % 2}/v{v}"] = {v % 2: [np.c_[f, np.tile(box, (len(f), 1))]]}
    videos = sorted(gttubes)
    return {"labels": ["c0", "c1"], "videos": videos, "gttubes": gttubes,
            "nframes": {v: NFRAMES for v in videos}, "resolution": {v: (H, W) for v in videos}}


def _inputs_outputs(ann, noisy=False):
    """One input/output pair per frame: the GT box (converted to XYXY_ABS) and a far FP.

    noisy: every 3rd GT box is shifted off its target and every 4th FP scores high.
    """
    rng = np.random.default_rng(0)
    pairs = []
    for video in ann["videos"]:
        ((label, (tube,)),) = ann["gttubes"][video].items()
        for frame in range(1, NFRAMES + 1):
            rows = tube[tube[:, 0] == frame, 1:]
            boxes = [gt_to_d2(rows)[0]] if len(rows) else []
            if noisy and boxes and frame % 3 == 0:
                boxes[0] = boxes[0] + np.array([20, 0, 20, 0], np.float32)
            boxes.append(np.array([60, 45, 75, 58], np.float32))
            fp_score = 0.95 if noisy and frame % 4 == 0 else 0.05
            inst = Instances((H, W))
            inst.pred_boxes = Boxes(torch.tensor(np.stack(boxes)))
            inst.scores = torch.tensor([0.9] * (len(boxes) - 1) + [fp_score]) * float(
                rng.uniform(0.8, 1.0))
            inst.pred_classes = torch.tensor([label] * len(boxes), dtype=torch.int64)
            inst.actionness = torch.tensor([0.9] * (len(boxes) - 1) + [0.1])
            pairs.append(({"video": video, "frame": frame, "height": H, "width": W},
                          {"instances": inst}))
    return pairs


def _evaluator(ann, output_dir, distributed, refine=True):
    return PCSCEvaluator("pcsc_test", output_dir=output_dir, distributed=distributed,
                         annotations=ann, refine=refine)


def test_evaluator_perfect_detections_and_outputs(tmp_path):
    ann = _annotations()
    ev = _evaluator(ann, str(tmp_path), distributed=False)
    ev.reset()
    for inp, out in _inputs_outputs(ann):
        ev.process([inp], [out])
    res = ev.evaluate()["pcsc"]
    assert res["frame_mAP@0.5"] == pytest.approx(100.0)
    for k in ("video_mAP@0.2", "video_mAP@0.5", "video_mAP@0.75", "video_mAP@0.5:0.95",
              "video_mAP@0.5/TR", "video_mAP@0.5/noTR", "video_mAP@0.5/TR-ends",
              "video_mAP@0.5/TR-split"):
        assert res[k] == pytest.approx(100.0), k
    assert res["frame_AP@0.5-c1"] == pytest.approx(100.0)
    files = sorted(os.listdir(tmp_path))
    assert files == ["pcsc_detections.json", "pcsc_metrics.json", "pcsc_pr_curves.png",
                     "pcsc_tubes.json", "pcsc_tubes_refined.json"]
    metrics = json.loads((tmp_path / "pcsc_metrics.json").read_text())
    assert metrics["ap_convention"] == "act"
    dets = json.loads((tmp_path / "pcsc_detections.json").read_text())
    # Converted back to the GT's inclusive pixels: exactly the GT box.
    first = next(d for d in dets if d["video"] == "c0/v0" and d["frame"] == 2 and d["score"] > .5)
    assert first["box"] == [5.0, 5.0, 30.0, 40.0]
    tubes = json.loads((tmp_path / "pcsc_tubes.json").read_text())
    assert {t["video"] for t in tubes} == set(ann["videos"])


def test_evaluator_from_config(tmp_path):
    cfg = get_cfg()
    add_pcsc_config(cfg)
    cfg.TEST.PCSC.AP_CONVENTION = "voc"
    cfg.TUBES.MIN_LENGTH = 3
    ev = PCSCEvaluator(cfg, "pcsc_test", output_dir=str(tmp_path))
    assert ev._ap_convention == "voc" and ev._tube_options.min_length == 3
    assert not ev._refine


def _worker(out_file, ann):
    from detectron2.utils import comm

    pairs = _inputs_outputs(ann, noisy=True)
    ev = _evaluator(ann, None, distributed=True)
    ev.reset()
    for inp, out in pairs[comm.get_rank()::comm.get_world_size()]:
        ev.process([inp], [out])
    res = ev.evaluate()
    if comm.is_main_process():
        with open(out_file, "w") as f:
            json.dump(res["pcsc"], f)
    else:
        assert res == {}


def test_one_and_two_processes_agree(tmp_path):
    ann = _annotations()
    pairs = _inputs_outputs(ann, noisy=True)
    ev = _evaluator(ann, None, distributed=False)
    ev.reset()
    for inp, out in pairs:
        ev.process([inp], [out])
    single = ev.evaluate()["pcsc"]
    assert 0 < single["frame_mAP@0.5"] < 100
    out_file = str(tmp_path / "two.json")
    launch(_worker, 2, dist_url="auto", args=(out_file, ann))
    with open(out_file) as f:
        double = json.load(f)
    assert set(double) == set(single)
    for k, v in single.items():
        assert double[k] == pytest.approx(v, nan_ok=True), k


def test_key_frame_stride_counts_only_evaluated_frames(tmp_path):
    """With every 2nd frame evaluated, the GT of skipped frames is not counted as missed."""
    ann = _annotations()
    evaluator = _evaluator(ann, None, distributed=False, refine=False)
    evaluator.reset()
    for inp, out in _inputs_outputs(ann):
        if inp["frame"] % 2 == 1:
            evaluator.process([inp], [out])
    metrics = evaluator.evaluate()["pcsc"]
    assert metrics["frame_mAP@0.5"] == pytest.approx(100.0)
