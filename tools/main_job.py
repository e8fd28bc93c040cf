#!/usr/bin/env python
"""The main job: PCSC trained and evaluated end to end on the synthetic dataset, on CPU.

    python tools/main_job.py [--output output/main] [--config-file configs/pcsc_synthetic.yaml]

Each step is skipped when its result already exists, so an interrupted job picks up where it
stopped (training itself resumes from its last checkpoint):

1. generate the synthetic dataset (``python -m pcsc_d2.data.synthetic``) if absent;
2. convert the Kinetics I3D weights (``tools/convert_i3d_weights.py``) if absent;
3. evaluate the untrained model (I3D weights, random heads): the floor to beat;
4. train PCSC (``train_net.py``);
5. train the actionness classifiers for temporal refinement (``tools/train_actionness.py``);
6. evaluate with and without TR (``train_net.py --eval-only``);
7. write results.md / results.json and a GIF of test tubes to the output folder.
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = os.environ.get("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets"))
WEIGHTS = os.path.join(ROOT, "weights", "i3d_kinetics400_two_stream.pth")
METRICS = ["frame_mAP@0.5", "video_mAP@0.2", "video_mAP@0.5", "video_mAP@0.75", "video_mAP@0.5:0.95"]

logger = logging.getLogger("pcsc_d2.main_job")


def run(cmd: List[str]) -> None:
    """Run a step as the user would, from the repository root; fail loudly."""
    logger.info("$ %s", " ".join(cmd))
    env = dict(os.environ, DETECTRON2_DATASETS=DATASETS)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def read_metrics(folder: str) -> Dict[str, float]:
    """Read the metrics.json that PCSCEvaluator wrote under ``folder`` (searched recursively)."""
    for dirpath, _, files in os.walk(folder):
        if "metrics.json" in files:
            with open(os.path.join(dirpath, "metrics.json")) as f:
                return json.load(f)
    raise FileNotFoundError(f"no metrics.json under {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "main"))
    parser.add_argument("--config-file", default=os.path.join(ROOT, "configs", "pcsc_synthetic.yaml"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    py = sys.executable
    out = os.path.abspath(args.output)
    start = time.time()
    timings: Dict[str, float] = {}

    def step(name: str, done: bool, cmd: List[str]) -> None:
        t0 = time.time()
        if done:
            logger.info("step %s: already done, skipped", name)
        else:
            run(cmd)
        timings[name] = time.time() - t0

    synth = os.path.join(DATASETS, "synthetic")
    step("dataset", os.path.isfile(os.path.join(synth, "synthetic-GT.pkl")),
         [py, "-m", "pcsc_d2.data.synthetic", "--out", synth, "--seed", "0"])
    step("weights", os.path.isfile(WEIGHTS),
         [py, "tools/convert_i3d_weights.py", "--output", WEIGHTS])

    untrained = os.path.join(out, "untrained")
    step("eval_untrained", os.path.isfile(os.path.join(untrained, "done")),
         [py, "tools/eval_untrained.py", "--config-file", args.config_file,
          "OUTPUT_DIR", untrained, "MODEL.WEIGHTS", WEIGHTS])

    pcsc = os.path.join(out, "pcsc")
    final = os.path.join(pcsc, "model_final.pth")
    step("train", os.path.isfile(final),
         [py, "train_net.py", "--config-file", args.config_file, "--resume",
          "OUTPUT_DIR", pcsc, "MODEL.WEIGHTS", WEIGHTS, "TEST.EVAL_PERIOD", "0"])

    tr = os.path.join(out, "tr")
    tr_model = os.path.join(tr, "model_tr.pth")
    step("train_actionness", os.path.isfile(tr_model),
         [py, "tools/train_actionness.py", "--config-file", args.config_file,
          "OUTPUT_DIR", tr, "MODEL.WEIGHTS", final])

    evaluation = os.path.join(out, "eval")
    step("evaluate", False,
         [py, "train_net.py", "--config-file", args.config_file, "--eval-only",
          "OUTPUT_DIR", evaluation, "MODEL.WEIGHTS", tr_model,
          "MODEL.PCSC.ACTIONNESS.ENABLED", "True", "TUBES.REFINE.ENABLED", "True"])

    results = {
        "untrained": read_metrics(untrained),
        "pcsc": read_metrics(evaluation),
        "timings_s": timings,
        "total_s": time.time() - start,
    }
    write_report(results, out)


def write_report(results: Dict, out: str) -> None:
    """results.json + results.md, and a GIF of the test tubes (written by render_results)."""
    from pcsc_d2.utils.io import atomic_open, atomic_save_json

    atomic_save_json(results, os.path.join(out, "results.json"), indent=2)
    rows = [("untrained model (I3D + random heads)", results["untrained"].get("without_tr", results["untrained"]))]
    pcsc = results["pcsc"]
    rows.append(("PCSC", pcsc.get("without_tr", pcsc)))
    if "with_tr" in pcsc:
        rows.append(("PCSC + TR", pcsc["with_tr"]))
    lines = ["| model | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.1f}" for k in METRICS) + " |")
    table = "\n".join(lines)
    with atomic_open(os.path.join(out, "results.md"), "w") as f:
        f.write("# PCSC on the synthetic benchmark (CPU main job)\n\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
