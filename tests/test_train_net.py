"""train_net.py end to end on a tiny synthetic set: 2 CPU processes (gloo), resume, eval-only."""
import json
import os
import subprocess
import sys

import pytest

from pcsc_d2.data.synthetic import SyntheticConfig, generate_synthetic_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quick", "pcsc_tiny.yaml")


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    cfg = SyntheticConfig(num_train=2, num_test=1, min_frames=20, max_frames=22)
    generate_synthetic_dataset(str(root / "synthetic"), seed=0, cfg=cfg, workers=1)
    return str(root)


def _train_net(datasets_root, *args):
    env = dict(os.environ, DETECTRON2_DATASETS=datasets_root)
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", CONFIG, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


def _iterations(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if "total_loss" in r]


def test_two_processes_train_and_evaluate(datasets_root, tmp_path):
    out = str(tmp_path / "dist")
    proc = _train_net(datasets_root, "--num-gpus", "2", "SOLVER.MAX_ITER", "3",
                      "TEST.EVAL_PERIOD", "0", "DATASETS.TEST_KEY_FRAME_STRIDE", "3",
                      "OUTPUT_DIR", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    rows = _iterations(out)
    assert rows and all(r["total_loss"] == r["total_loss"] for r in rows)  # finite, not NaN
    # The final evaluation gathered both processes' frames into one metrics file.
    with open(os.path.join(out, "inference", "synthetic_test", "pcsc_metrics.json")) as f:
        metrics = json.load(f)
    assert 0.0 <= metrics["frame_mAP@0.5"] <= 100.0


def test_resume_and_eval_only_errors(datasets_root, tmp_path):
    out = str(tmp_path / "run")
    common = ["TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "1", "OUTPUT_DIR", out,
              "DATASETS.TEST_KEY_FRAME_STRIDE", "4"]
    first = _train_net(datasets_root, "SOLVER.MAX_ITER", "2", *common)
    assert first.returncode == 0, first.stderr[-3000:]
    assert [r["iteration"] for r in _iterations(out)] == [1]  # d2 logs every 20 its + the last
    # "Interrupted" after 2 iterations, one save killed midway: --resume continues from the
    # last checkpoint, removes the save's temporary and keeps the last 2 periodic checkpoints.
    stale = os.path.join(out, ".model_0000002.pth.q1w2.tmp")
    open(stale, "wb").close()
    second = _train_net(datasets_root, "--resume", "SOLVER.MAX_ITER", "4",
                        "SOLVER.CHECKPOINT_MAX_KEEP", "2", *common)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "model_final.pth" in log and "Starting training from iteration 2" in log
    assert not os.path.exists(stale)
    kept = sorted(n for n in os.listdir(out) if n.startswith("model_"))
    assert kept == ["model_0000002.pth", "model_0000003.pth", "model_final.pth"]

    missing = _train_net(datasets_root, "--eval-only", "MODEL.WEIGHTS", str(tmp_path / "no.pth"),
                         "OUTPUT_DIR", str(tmp_path / "e1"))
    assert missing.returncode != 0 and "needs a trained checkpoint" in missing.stderr
    mismatched = _train_net(datasets_root, "--eval-only", "MODEL.FPN.OUT_CHANNELS", "16",
                            "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
                            "OUTPUT_DIR", str(tmp_path / "e2"))
    assert mismatched.returncode != 0
    assert "does not match the model" in mismatched.stderr and "model_final.pth" in mismatched.stderr


def test_fixed_seed_reproduces_the_model(datasets_root, tmp_path):
    """Same SEED, same command: bit-identical weights (CPU); another seed: other weights."""
    import torch

    def train(name, seed):
        out = str(tmp_path / name)
        proc = _train_net(datasets_root, "SOLVER.MAX_ITER", "3", "TEST.EVAL_PERIOD", "0",
                          "DATASETS.TEST", "()", "SEED", str(seed), "OUTPUT_DIR", out)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return torch.load(os.path.join(out, "model_final.pth"), map_location="cpu")["model"]

    first, again, other = train("a", 5), train("b", 5), train("c", 6)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_periodic_evaluation_tensorboard_and_json_metrics(datasets_root, tmp_path):
    """TEST.EVAL_PERIOD 2 over 4 iterations: an evaluation after iteration 2 and at the end,
    both logged to metrics.json; TensorBoard events and checkpoints are written."""
    out = str(tmp_path / "periodic")
    proc = _train_net(datasets_root, "SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "2",
                      "DATASETS.TEST_KEY_FRAME_STRIDE", "4", "OUTPUT_DIR", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    evals = [r for r in rows if "pcsc/frame_mAP@0.5" in r]
    assert len(evals) == 2 and evals[0]["iteration"] == 1  # 0-based: after the 2nd iteration
    assert all(0.0 <= r["pcsc/frame_mAP@0.5"] <= 100.0 for r in evals)
    files = os.listdir(out)
    assert any(name.startswith("events.out.tfevents") for name in files)
    assert "model_final.pth" in files


def test_a_batch_that_does_not_split_over_the_processes_stops_first(datasets_root, tmp_path):
    out = str(tmp_path / "odd")
    proc = _train_net(datasets_root, "--num-gpus", "3", "SOLVER.IMS_PER_BATCH", "2",
                      "OUTPUT_DIR", out)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "SOLVER.IMS_PER_BATCH = 2" in errors[0], proc.stderr[-2000:]
    assert "3 training processes" in errors[0] and "pcsc_tiny.yaml" in errors[0]
    assert not os.path.exists(out)
