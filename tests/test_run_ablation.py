"""tools/run_ablation.py's models, and the real clips' time split it and real_split_check use.

The real-clip test uses ../shared/real_ucf24 (see its README) and skips where it is absent."""
import json
import os

import numpy as np
import pytest

from pcsc_d2.engine import get_pcsc_cfg
from script_module import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "real_ucf24")


def _load_tool():
    return load_script("tools/run_ablation.py")


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


def test_equal_time_iterations_scale_by_speed_and_keep_near_counts():
    tool = _load_tool()
    rates = {"pcsc": 0.76, "rgb_only": 0.38, "late_fusion": 0.75, "pcsc_no_feature_coop": 0.70}
    # 600 x 0.76 / 0.38 = 1200; 600 x 0.76 / 0.75 = 608 (within 5%: 600); / 0.70 = 651.
    assert tool.equal_time_iterations(600, rates) == {
        "pcsc": 600, "rgb_only": 1200, "late_fusion": 600, "pcsc_no_feature_coop": 651}
    assert tool.equal_time_iterations(600, rates, tolerance=0.0)["late_fusion"] == 608


def test_seconds_per_iter_reads_a_finished_trainings_log_without_training(tmp_path, monkeypatch):
    tool = _load_tool()
    monkeypatch.setattr(tool, "run", lambda cmd: pytest.fail(f"ran {cmd}"))
    with open(tmp_path / "metrics.json", "w") as f:
        for t in (0.9, 0.5, 0.7):
            f.write(json.dumps({"iteration": 19, "time": t}) + "\n")
        f.write(json.dumps({"iteration": 20, "frame_mAP@0.5": 50.0}) + "\n")
    assert tool.seconds_per_iter("unused.yaml", [], str(tmp_path), 2) == 0.7


def test_time_budget_trains_only_the_models_whose_count_changed(tmp_path, monkeypatch):
    """--budget both: the equal-time run reuses the equal-iteration models of the same count
    (and PCSC's TR), and trains the others with MAX_ITER and STEPS scaled."""
    tool = _load_tool()
    shared, out = tmp_path / "iters" / "seed1", tmp_path / "time" / "seed1"
    calls = []

    def fake_run(cmd):
        calls.append(cmd)
        folder = cmd[cmd.index("OUTPUT_DIR") + 1]
        if "--eval-only" in cmd or "tools/eval_stages.py" in cmd:
            _write_metrics(folder, stages="tools/eval_stages.py" in cmd, value=1.0)
        else:
            os.makedirs(folder, exist_ok=True)
            open(os.path.join(folder, "model_final.pth"), "w").close()

    for name in tool.VARIANTS:
        os.makedirs(shared / name)
        open(shared / name / "model_final.pth", "w").close()
        _write_metrics(str(shared / name / ("eval_stages" if name in tool.STAGED else "eval")),
                       stages=name in tool.STAGED, value=2.0)
    os.makedirs(shared / "tr")
    open(shared / "tr" / "model_tr.pth", "w").close()
    _write_metrics(str(shared / "eval"), stages=False, value=3.0)
    monkeypatch.setattr(tool, "run", fake_run)

    config = os.path.join(ROOT, tool.DESIGNS["motion"][0])
    iters = {"pcsc": 600, "rgb_only": 1200, "flow_only": 1300, "late_fusion": 600,
             "pcsc_no_feature_coop": 600}
    results = tool.run_seed(1, str(out), config, [], 2, iters, str(shared))

    trained = [c[c.index("OUTPUT_DIR") + 1] for c in calls if "train_net.py" in c
               and "--eval-only" not in c]
    assert trained == [str(out / "rgb_only"), str(out / "flow_only")]
    rgb = next(c for c in calls if str(out / "rgb_only") in c)
    assert rgb[rgb.index("SOLVER.MAX_ITER") + 1] == "1200"
    assert rgb[rgb.index("SOLVER.STEPS") + 1] == "(900, 1104)"
    assert results["rgb_only"]["frame_mAP@0.5"] == 1.0
    assert results["late_fusion"]["frame_mAP@0.5"] == 2.0
    assert results["pcsc_stage4"]["frame_mAP@0.5"] == 2.0
    assert results["pcsc_tr"]["frame_mAP@0.5"] == 3.0
    assert not any("train_actionness.py" in " ".join(c) for c in calls)


def _write_metrics(folder: str, stages: bool, value: float) -> None:
    for sub in ([f"stage{t}" for t in range(5)] if stages else [""]):
        path = os.path.join(folder, sub, "inference")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "pcsc_metrics.json"), "w") as f:
            json.dump({"frame_mAP@0.5": value}, f)


def test_time_budget_times_in_its_own_folder_where_a_model_has_no_log(tmp_path, monkeypatch):
    """A timing run never writes into the equal-iteration model's folder."""
    tool = _load_tool()
    trained, out = tmp_path / "iters" / "seed1", tmp_path / "time" / "seed1"
    timed = []

    def fake_seconds(config, opts, folder, procs):
        timed.append(folder)
        return 0.4 if "rgb_only" in folder else 0.8

    for name in tool.VARIANTS:
        if name != "rgb_only":
            os.makedirs(trained / name)
            (trained / name / "metrics.json").write_text("")
    monkeypatch.setattr(tool, "seconds_per_iter", fake_seconds)
    config = os.path.join(ROOT, tool.DESIGNS["motion"][0])
    iters = tool.time_budget(1, str(out), config, [], 2, 0.05, str(trained))
    assert iters["rgb_only"] == 1200 and iters["pcsc"] == 600
    assert str(out / "timing" / "rgb_only") in timed
    assert str(trained / "pcsc") in timed


@pytest.mark.parametrize("time_from, logs_used", [("logs", True), ("timing", False)])
def test_budget_both_takes_rates_from_logs_or_timing_runs_and_reuses_models(
        tmp_path, monkeypatch, time_from, logs_used):
    """--budget both --time-from timing times every model afresh (no equal-iteration log) but
    still hands the equal-iteration seed folder to run_seed for the models it can reuse."""
    tool = _load_tool()
    seen = {}

    def fake_time_budget(seed, out, config, opts, procs, tolerance, trained=""):
        seen["rates_from"] = trained
        return {"pcsc": 600}

    def fake_run_seed(seed, out, config, opts, procs, iters=None, shared=""):
        seen.setdefault("shared", []).append(shared)
        return {}

    monkeypatch.setattr(tool, "ensure_inputs", lambda *a: None)
    monkeypatch.setattr(tool, "time_budget", fake_time_budget)
    monkeypatch.setattr(tool, "run_seed", fake_run_seed)
    monkeypatch.setattr(tool, "write_outputs", lambda *a: None)
    out = str(tmp_path / "abl")
    monkeypatch.setattr("sys.argv", ["run_ablation.py", "--output", out, "--seeds", "3",
                                     "--budget", "both", "--time-from", time_from])
    tool.main()
    seed_folder = os.path.join(out, "seed3")
    assert seen["rates_from"] == (seed_folder if logs_used else "")
    # The equal-iteration run (no reuse), then the equal-time run reusing its seed folder.
    assert seen["shared"] == ["", seed_folder]


def test_time_from_without_budget_both_is_refused_before_any_work(monkeypatch, capsys):
    tool = _load_tool()
    monkeypatch.setattr(tool, "ensure_inputs", lambda *a: pytest.fail("work began"))
    monkeypatch.setattr("sys.argv", ["run_ablation.py", "--budget", "time",
                                     "--time-from", "timing"])
    with pytest.raises(SystemExit) as exit_info:
        tool.main()
    assert exit_info.value.code == 2
    assert "--time-from applies to --budget both only (--budget time)" in capsys.readouterr().err
