#!/usr/bin/env python
"""Train and evaluate on the three J-HMDB-21 splits and report their mean, as the paper does.

    python tools/run_jhmdb_splits.py [--config-file configs/pcsc_jhmdb.yaml]
        [--output output/pcsc_jhmdb] [--num-gpus N] [KEY VALUE ...]

Split s trains on ``jhmdb_train_split{s}`` and tests on ``jhmdb_test_split{s}``. A split whose
model_final.pth exists is not trained again. Writes <output>/splits_mean.json and .md.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ["frame_mAP@0.5", "video_mAP@0.2", "video_mAP@0.5", "video_mAP@0.75", "video_mAP@0.5:0.95"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=os.path.join(ROOT, "configs", "pcsc_jhmdb.yaml"))
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "pcsc_jhmdb"))
    parser.add_argument("--num-gpus", default="1")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    per_split = {}
    for s in (1, 2, 3):
        out = os.path.join(args.output, f"split{s}")
        data = ["DATASETS.TRAIN", f"('jhmdb_train_split{s}',)",
                "DATASETS.TEST", f"('jhmdb_test_split{s}',)"]
        common = [sys.executable, "train_net.py", "--config-file", args.config_file,
                  "--num-gpus", args.num_gpus]
        if not os.path.isfile(os.path.join(out, "model_final.pth")):
            subprocess.run(common + ["--resume", *data, *args.opts, "OUTPUT_DIR", out],
                           cwd=ROOT, check=True)
        ev = os.path.join(out, "eval")
        subprocess.run(common + ["--eval-only", *data, *args.opts, "OUTPUT_DIR", ev,
                                 "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")],
                       cwd=ROOT, check=True)
        for dirpath, _, files in os.walk(ev):
            if "metrics.json" in files:
                with open(os.path.join(dirpath, "metrics.json")) as f:
                    m = json.load(f)
                per_split[s] = m.get("without_tr", m)
    from pcsc_d2.utils.io import atomic_open, atomic_save_json

    mean = {k: sum(per_split[s][k] for s in per_split) / len(per_split) for k in METRICS}
    atomic_save_json({"per_split": per_split, "mean": mean},
                     os.path.join(args.output, "splits_mean.json"), indent=2)
    lines = ["| split | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for name, m in [*((str(s), per_split[s]) for s in per_split), ("mean", mean)]:
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.1f}" for k in METRICS) + " |")
    with atomic_open(os.path.join(args.output, "splits_mean.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
