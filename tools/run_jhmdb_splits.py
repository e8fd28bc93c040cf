#!/usr/bin/env python
"""Train and evaluate on the three J-HMDB-21 splits and report their mean, as the paper does.

    python tools/run_jhmdb_splits.py [--config-file configs/pcsc_jhmdb.yaml]
        [--output output/pcsc_jhmdb] [--num-gpus N] [KEY VALUE ...]

Split s trains on ``jhmdb_train_split{s}`` and tests on ``jhmdb_test_split{s}``. A split whose
model_final.pth exists is not trained again. Writes <output>/splits_mean.json and .md.
"""
import argparse
import os
import subprocess
import sys

from pcsc_d2.evaluation.results import MAIN_METRICS, find_metrics, markdown_table, metrics_row

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
        per_split[s] = metrics_row(find_metrics(ev))
    from pcsc_d2.utils.io import atomic_open, atomic_save_json

    mean = {k: sum(per_split[s][k] for s in per_split) / len(per_split) for k in MAIN_METRICS}
    atomic_save_json({"per_split": per_split, "mean": mean},
                     os.path.join(args.output, "splits_mean.json"), indent=2)
    table = markdown_table([*((str(s), per_split[s]) for s in per_split), ("mean", mean)], "split")
    with atomic_open(os.path.join(args.output, "splits_mean.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
