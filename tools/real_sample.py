#!/usr/bin/env python
"""The real-data check: PCSC prepared, trained, evaluated and demoed on real UCF-101-24 clips.

    python tools/real_sample.py --clips ../shared/real_ucf24 [--output output/real_sample]

``--clips`` is a folder holding ROAD's ``pyannot.pkl`` and UCF-101 videos (in ``videos/`` or
the folder itself; any subset of the 3,194 annotated videos). On CPU, each step skipped when its
result exists (an interrupted run resumes; training from its last checkpoint):

1. prepare the clips as the dataset ``ucf24_sample`` in ``$DETECTRON2_DATASETS/ucf24_sample``
   (``python -m pcsc_d2.data.prepare --format road --same-train-test``, DIS flow);
2. convert the Kinetics I3D weights if absent;
3. train PCSC (``train_net.py``, configs/real/ucf24_sample_cpu.yaml);
4. evaluate on the same clips (``train_net.py --eval-only``);
5. render the demo on one clip (``python -m pcsc_d2.demo``) and a sheet of its frames;
6. write results.md / results.json.

The clips are trained on and tested on: this checks that real frames, rescaled boxes and real
flow go through every stage (frame-mAP@0.5 must reach 80), it measures nothing about PCSC. The
script exits with status 1 when frame-mAP@0.5 is below 80.
"""
import argparse
import json
import logging
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "real", "ucf24_sample_cpu.yaml")
WEIGHTS = os.path.join(ROOT, "weights", "i3d_kinetics400_two_stream.pth")
# Training runs skip detectron2's final evaluation: a separate --eval-only step evaluates.
NO_EVAL = ["TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()"]
NAME = "ucf24_sample"
TARGET = 80.0

logger = logging.getLogger("pcsc_d2.real_sample")


def contact_sheet(video: str, out_path: str, count: int = 4, per_row: int = 2) -> None:
    """A PNG of ``count`` evenly spaced frames (10% .. 90% of the video), ``per_row`` a row."""
    from pcsc_d2.data.video import count_frames, iter_frames
    from pcsc_d2.utils.visualize import write_contact_sheet

    n = count_frames(video).nframes
    picks = set(np.linspace(0.1 * (n - 1), 0.9 * (n - 1), count).round().astype(int) + 1)
    frames = [f for i, f in enumerate(iter_frames(video), 1) if i in picks]
    write_contact_sheet([frames[i:i + per_row] for i in range(0, len(frames), per_row)],
                        out_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", default=os.path.join(ROOT, "..", "shared", "real_ucf24"),
                        help="folder with pyannot.pkl and UCF-101 videos (or videos/)")
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "real_sample"))
    parser.add_argument("--config-file", default=CONFIG)
    parser.add_argument("--demo-video", default="v_Fencing_g01_c06",
                        help="file name (without extension) of the clip the demo renders")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    from pcsc_d2.data.video import find_videos
    from pcsc_d2.evaluation.results import find_metrics, has_metrics, markdown_table, metrics_row
    from pcsc_d2.utils.errors import InputError, exit_with_error
    from pcsc_d2.utils.io import atomic_open, atomic_save_json
    from pcsc_d2.utils.jobs import StepRunner, run_command

    clips = os.path.abspath(args.clips)
    annotations = os.path.join(clips, "pyannot.pkl")
    videos = os.path.join(clips, "videos")
    videos = videos if os.path.isdir(videos) else clips
    demo_video = (find_videos(videos).get(args.demo_video) or [None])[0] if os.path.isdir(
        videos) else None
    if not os.path.isfile(annotations) or demo_video is None:
        missing = annotations if not os.path.isfile(annotations) else (
            f"{videos}/{args.demo_video}.*")
        exit_with_error(InputError(f"{missing}: not found (--clips is a folder with ROAD's "
                                   "pyannot.pkl and UCF-101 videos, see the docstring)"))
    py, cfg_file, out = sys.executable, args.config_file, os.path.abspath(args.output)
    datasets = os.path.abspath(os.environ.get("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets")))
    os.environ["DETECTRON2_DATASETS"] = datasets  # the subprocesses register ucf24_sample here
    dataset = os.path.join(datasets, NAME)
    pcsc, evaluation = os.path.join(out, "pcsc"), os.path.join(out, "eval")
    demo_out = os.path.join(out, f"demo_{args.demo_video}.mp4")
    steps = StepRunner(lambda done: os.path.isfile(done) or has_metrics(done))
    start = time.time()

    def run(cmd):
        run_command(cmd, ROOT)

    steps.step("prepare", os.path.join(dataset, f"{NAME}-GT.pkl"), lambda: run(
        [py, "-m", "pcsc_d2.data.prepare", "--videos", videos, "--annotations", annotations,
         "--format", "road", "--out", dataset, "--name", NAME, "--same-train-test",
         "--flow", "dis", "--workers", str(args.workers)]))
    steps.step("weights", WEIGHTS, lambda: run(
        [py, "tools/convert_i3d_weights.py", "--output", WEIGHTS]))
    steps.step("train", os.path.join(pcsc, "model_final.pth"), lambda: run(
        [py, "train_net.py", "--config-file", cfg_file, "--resume", "OUTPUT_DIR", pcsc,
         "MODEL.WEIGHTS", WEIGHTS, *NO_EVAL]))
    steps.step("evaluate", evaluation, lambda: run(
        [py, "train_net.py", "--config-file", cfg_file, "--eval-only", "OUTPUT_DIR", evaluation,
         "MODEL.WEIGHTS", os.path.join(pcsc, "model_final.pth")]))
    steps.step("demo", demo_out, lambda: run(
        [py, "-m", "pcsc_d2.demo", "--video", demo_video, "--config-file", cfg_file,
         "--weights", os.path.join(pcsc, "model_final.pth"), "--output", demo_out]))
    sheet = os.path.join(out, "real_tubes.png")
    steps.step("sheet", sheet, lambda: contact_sheet(demo_out, sheet))

    metrics = find_metrics(evaluation)
    row = metrics_row(metrics)
    table = markdown_table([("PCSC, trained and tested on the same clips", row)])
    passed = row["frame_mAP@0.5"] >= TARGET
    results = {"metrics": row, "ap_convention": "act", "target_frame_mAP@0.5": TARGET,
               "passed": passed, "timings_s": steps.timings,
               "total_s": round(time.time() - start, 1), "clips": videos}
    atomic_save_json(results, os.path.join(out, "results.json"), indent=2)
    with atomic_open(os.path.join(out, "results.md"), "w") as f:
        f.write("# PCSC on real UCF-101-24 clips (CPU plumbing check)\n\n"
                "Trained and tested on the same clips: a check of the real-data path, not a "
                "result. Percent; ACT conventions.\n\n"
                f"{table}\n\nStep timings (s): {json.dumps(steps.timings)}\n")
    logger.info("Results (also in %s):\n%s", os.path.join(out, "results.md"), table)
    if not passed:
        logger.error("frame-mAP@0.5 is %.1f, below the %.0f this check needs",
                     row["frame_mAP@0.5"], TARGET)
        sys.exit(1)
    logger.info("Real-data check passed: frame-mAP@0.5 %.1f >= %.0f (%.1f min in all)",
                row["frame_mAP@0.5"], TARGET, (time.time() - start) / 60)


if __name__ == "__main__":
    main()
