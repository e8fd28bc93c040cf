"""tools/run_ablation.py's models, and the real clips' time split it and real_split_check use.

The real-clip test uses ../shared/real_ucf24 (see its README) and skips where it is absent."""
import importlib.util
import json
import os

import numpy as np
import pytest

from pcsc_d2.engine import get_pcsc_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "real_ucf24")


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "run_ablation", os.path.join(ROOT, "tools", "run_ablation.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.mark.parametrize("name, config", [
    ("rgb_only", "configs/baselines/synthetic_rgb_only.yaml"),
    ("flow_only", "configs/baselines/synthetic_flow_only.yaml"),
    ("late_fusion", "configs/baselines/synthetic_late_fusion.yaml"),
    ("pcsc", "configs/pcsc_synthetic.yaml"),
    ("pcsc_no_feature_coop", "configs/ablation/synthetic_no_feature_coop.yaml"),
])
def test_variants_on_the_synthetic_config_are_the_shipped_configs(name, config):
    tool = _load_tool()
    base, _ = tool.DESIGNS["motion"]
    from_overrides = get_pcsc_cfg(os.path.join(ROOT, base), tool.VARIANTS[name])
    shipped = get_pcsc_cfg(os.path.join(ROOT, config))
    from_overrides.OUTPUT_DIR = shipped.OUTPUT_DIR = ""
    assert from_overrides == shipped


def test_variants_on_the_real_config_change_only_the_model_design():
    tool = _load_tool()
    config, data = tool.DESIGNS["real"]
    base = get_pcsc_cfg(os.path.join(ROOT, config))
    late = get_pcsc_cfg(os.path.join(ROOT, config), tool.VARIANTS["late_fusion"])
    assert (late.MODEL.PCSC.STREAMS, late.MODEL.PCSC.NUM_STAGES) == (["rgb", "flow"], 0)
    assert late.SOLVER == base.SOLVER and late.INPUT == base.INPUT
    assert late.MODEL.ROI_HEADS.NUM_CLASSES == 24 and data == "ucf24_split"


@pytest.mark.skipif(not os.path.isdir(SHARED), reason=f"real UCF-101-24 clips not found at {SHARED}")
def test_real_clip_split_cuts_frames_and_tubes_at_the_same_frame(tmp_path):
    from pcsc_d2.data.convert import _read_road
    from pcsc_d2.data.real_split import write_split_parts
    from pcsc_d2.data.video import count_frames

    clips = tmp_path / "clips"
    (clips / "videos").mkdir(parents=True)
    stem = "v_Basketball_g01_c02"
    os.symlink(os.path.join(SHARED, "videos", stem + ".mp4"), clips / "videos" / (stem + ".mp4"))
    os.symlink(os.path.join(SHARED, "pyannot.pkl"), clips / "pyannot.pkl")
    ann = write_split_parts(str(clips), str(tmp_path / "parts"), 0.5)

    with open(ann) as f:
        videos = json.load(f)["videos"]
    assert sorted(videos) == [stem + "_a", stem + "_b"]
    assert (videos[stem + "_a"]["split"], videos[stem + "_b"]["split"]) == ("train", "test")
    n = count_frames(os.path.join(SHARED, "videos", stem + ".mp4")).nframes
    cut = int(round(0.5 * n))
    lengths = [count_frames(str(tmp_path / "parts" / "videos" / f"{stem}_{p}.avi")).nframes
               for p in "ab"]
    assert lengths == [cut, n - cut]
    # The two parts' boxes, shifted back, are the clip's GT tube (ROAD's 1-based frames).
    road = _read_road(os.path.join(SHARED, "pyannot.pkl"))
    (key,) = [k for k in road if str(k).endswith(stem)]
    road_frames = []
    for ann_tube in road[key]["annotations"]:
        road_frames += range(ann_tube["sf"] + 1, ann_tube["ef"] + 1)
    frames = []
    for part, offset in (("a", 0), ("b", cut)):
        for tube in videos[f"{stem}_{part}"]["tubes"]:
            assert tube["label"] == "Basketball"
            rows = np.asarray(tube["boxes"])
            assert rows[:, 0].min() >= 1 and rows[:, 0].max() <= lengths["ab".index(part)]
            frames += (rows[:, 0] + offset).astype(int).tolist()
    assert len(road_frames) > 0 and sorted(frames) == sorted(road_frames)


def test_eval_stages_writes_one_evaluation_per_stage(tmp_path):
    """tools/eval_stages.py, which the ablation runs on every PCSC model: a tiny random model on a
    tiny synthetic set gives stage0 and stage2 metrics (it once died in its pre-flight check)."""
    import subprocess
    import sys

    import torch
    from detectron2.modeling import build_model

    from pcsc_d2.data.synthetic import SyntheticConfig, generate_synthetic_dataset

    generate_synthetic_dataset(str(tmp_path / "datasets" / "synthetic"), seed=0, workers=1,
                               cfg=SyntheticConfig(num_train=1, num_test=1, min_frames=12,
                                                   max_frames=12))
    config = os.path.join(ROOT, "configs", "quick", "pcsc_tiny.yaml")
    torch.manual_seed(0)
    weights = str(tmp_path / "model.pth")
    torch.save({"model": build_model(get_pcsc_cfg(config)).state_dict()}, weights)
    out = tmp_path / "stages"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "eval_stages.py"), "--config-file", config,
         "--stages", "0,2", "MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(out),
         "DATASETS.TEST_KEY_FRAME_STRIDE", "4"],
        cwd=ROOT, env=dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets")),
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from pcsc_d2.evaluation.results import find_metrics

    for t in (0, 2):
        assert 0.0 <= find_metrics(str(out / f"stage{t}"))["frame_mAP@0.5"] <= 100.0
    assert not (out / "stage1").exists()


def test_inputs_are_made_before_any_training_when_absent(tmp_path, monkeypatch):
    """A fresh clone has neither the converted I3D weights nor the dataset: the ablation makes
    both (weights first) instead of failing in its first training."""
    tool = _load_tool()
    ran = []
    monkeypatch.setattr(tool, "run", lambda cmd: ran.append(cmd))
    monkeypatch.setattr(tool, "WEIGHTS", str(tmp_path / "weights" / "i3d.pth"))
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    tool.ensure_inputs("balanced", str(tmp_path / "out"), SHARED)
    assert ran[0][1:] == ["tools/convert_i3d_weights.py", "--output", tool.WEIGHTS]
    assert ran[1][-2:] == ["--design", "balanced"]
    assert ran[1][ran[1].index("--out") + 1] == str(tmp_path / "datasets" / "synthetic_balanced")

    # Both present: nothing runs.
    ran.clear()
    from pcsc_d2.data.synthetic import DESIGNS as FILES

    os.makedirs(tmp_path / "weights")
    open(tool.WEIGHTS, "w").close()
    os.makedirs(tmp_path / "datasets" / "synthetic_balanced")
    open(tmp_path / "datasets" / "synthetic_balanced" / FILES["balanced"], "w").close()
    tool.ensure_inputs("balanced", str(tmp_path / "out"), SHARED)
    assert ran == []
