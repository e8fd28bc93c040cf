#!/usr/bin/env python
"""Does TR trim actions or actors on real footage? PCSC trained on the first part of each real
UCF-101 clip, TR trained there too, both tested on the clips' other parts.

    python tools/real_split_check.py --clips ../shared/real_ucf24 [--output output/real_split] \
        [--split-at 0.5] [--train-procs N] [--opts KEY VALUE ...]

With a handful of clips of different classes, no class has a test clip of its own, so each clip
is cut in time (pcsc_d2.data.real_split): frames 1..m (m = split-at x its length) train, the rest
test; e.g. Basketball's test part holds the end of its action, then background. Steps (each
skipped when its result exists):

1-2. write the parts and prepare them (DIS flow) as ``$DETECTRON2_DATASETS/ucf24_split``
   (registered as ``ucf24_split_{train,test}``);
3. train PCSC (configs/real/ucf24_sample_cpu.yaml on the new dataset), then TR;
4. evaluate the test parts with TR; write results.md / results.json: frame-mAP, video-mAP
   without TR and with TR under both trimming rules.
"""
import argparse
import json
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "real", "ucf24_sample_cpu.yaml")
WEIGHTS = os.path.join(ROOT, "weights", "i3d_kinetics400_two_stream.pth")
NO_EVAL = ["TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()"]

logger = logging.getLogger("pcsc_d2.real_split_check")


def main() -> None:
    from pcsc_d2.utils.jobs import add_train_procs_argument

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", default=os.path.join(ROOT, "..", "shared", "real_ucf24"))
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "real_split"))
    parser.add_argument("--split-at", type=float, default=0.5)
    parser.add_argument("--config-file", default=CONFIG)
    add_train_procs_argument(parser)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    if not os.path.isfile(os.path.join(args.clips, "pyannot.pkl")):
        sys.exit(f"error: {args.clips}: no pyannot.pkl (the real clips are not here): skipped")
    from pcsc_d2.data.real_split import NAME, prepare_real_split
    from pcsc_d2.evaluation.results import find_metrics, has_metrics
    from pcsc_d2.utils.io import atomic_open, atomic_save_json
    from pcsc_d2.utils.jobs import StepRunner, run_command

    py, out = sys.executable, os.path.abspath(args.output)
    datasets = os.path.abspath(os.environ.get("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets")))
    os.environ["DETECTRON2_DATASETS"] = datasets
    data = os.path.join(datasets, NAME)
    run = lambda cmd: run_command(cmd, ROOT)  # noqa: E731
    steps = StepRunner(lambda done: os.path.isfile(done) or has_metrics(done))
    common = ["DATASETS.TRAIN", f"('{NAME}_train',)", "DATASETS.TEST", f"('{NAME}_test',)",
              *args.opts]
    pcsc, tr, ev = (os.path.join(out, d) for d in ("pcsc", "tr", "eval"))
    steps.step("prepare", os.path.join(data, f"{NAME}-GT.pkl"), lambda: prepare_real_split(
        args.clips, out, datasets, args.split_at, py, run))
    steps.step("weights", WEIGHTS, lambda: run(
        [py, "tools/convert_i3d_weights.py", "--output", WEIGHTS]))
    steps.step("train", os.path.join(pcsc, "model_final.pth"), lambda: run(
        [py, "train_net.py", "--config-file", args.config_file, "--num-gpus",
         str(args.train_procs), "--resume", *common,
         "OUTPUT_DIR", pcsc, "MODEL.WEIGHTS", WEIGHTS, *NO_EVAL]))
    steps.step("train_actionness", os.path.join(tr, "model_tr.pth"), lambda: run(
        [py, "tools/train_actionness.py", "--config-file", args.config_file, *common,
         "OUTPUT_DIR", tr, "MODEL.WEIGHTS", os.path.join(pcsc, "model_final.pth")]))
    steps.step("evaluate", ev, lambda: run(
        [py, "train_net.py", "--config-file", args.config_file, "--eval-only", *common,
         "OUTPUT_DIR", ev, "MODEL.WEIGHTS", os.path.join(tr, "model_tr.pth"),
         "TUBES.REFINE.ENABLED", "True"]))
    m = find_metrics(ev)
    keys = ["frame_mAP@0.5", "MABO"] + [
        f"video_mAP@{t}/{v}" for t in ("0.2", "0.5") for v in ("noTR", "TR-ends", "TR-split")
    ]
    result = {k: m.get(k) for k in keys}
    result["timings_s"] = steps.timings
    atomic_save_json(result, os.path.join(out, "results.json"), indent=1)
    lines = [f"| {k} | {'-' if v is None else f'{v:.1f}'} |" for k, v in result.items()
             if k != "timings_s"]
    with atomic_open(os.path.join(out, "results.md"), "w") as f:
        f.write("# PCSC and TR on real clips: trained on first halves, tested on second halves\n\n"
                "| metric | percent |\n|---|---|\n" + "\n".join(lines) + "\n")
    logger.info("Results: %s", json.dumps(result))


if __name__ == "__main__":
    main()
