#!/usr/bin/env python
"""The main job: PCSC trained and evaluated end to end on the synthetic dataset, on CPU.

    python tools/main_job.py [--output output/main] [--config-file configs/pcsc_synthetic.yaml]
        [--design motion|balanced] [--floor] [--train-procs N] [--opts KEY VALUE ...]

Each step is skipped when its result already exists, so an interrupted job picks up where it
stopped (training itself resumes from its last checkpoint):

1. generate the synthetic dataset (``python -m pcsc_d2.data.synthetic``) if absent;
2. convert the Kinetics I3D weights (``tools/convert_i3d_weights.py``) if absent;
3. with ``--floor``, evaluate the untrained model (I3D weights, randomly initialised heads): the
   floor to beat (all 0.0 so far, so not run by default);
4. train PCSC (``train_net.py --num-gpus N``: N CPU processes of cores // N threads each, 2 on
   a machine with 2 or more cores; see ``--train-procs``);
5. train the actionness classifiers of temporal refinement (``tools/train_actionness.py``, the
   detector's runs in as many processes as training);
6. evaluate, with and without TR (``train_net.py --eval-only``, in as many processes as
   training);
7. write results.md / results.json, tubes.gif (test tubes drawn on two test videos) and
   tubes.png (a few of its frames).
"""
import argparse
import json
import logging
import os
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Training runs skip detectron2's final evaluation: a separate --eval-only step evaluates.
NO_EVAL = ["TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()"]
WEIGHTS = os.path.join(ROOT, "weights", "i3d_kinetics400_two_stream.pth")

logger = logging.getLogger("pcsc_d2.main_job")


def run(cmd: List[str]) -> None:
    """Run a step as a user would, from the repository root; fail loudly."""
    from pcsc_d2.utils.jobs import run_command

    run_command(cmd, ROOT)


def evaluate_untrained(config_file: str, output_dir: str, opts: List[str] = ()) -> None:
    """Evaluate the model as initialised for training (I3D weights, random heads)."""
    from detectron2.evaluation import inference_on_dataset
    from detectron2.modeling import build_model
    from detectron2.utils.env import seed_all_rng

    from pcsc_d2.engine import PCSCCheckpointer, build_pcsc_test_loader, get_pcsc_cfg
    from pcsc_d2.evaluation import PCSCEvaluator

    cfg = get_pcsc_cfg(config_file, [*opts, "OUTPUT_DIR", output_dir])
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED)  # reproducible random heads
    model = build_model(cfg)
    PCSCCheckpointer(model).load(WEIGHTS)
    model.eval()
    name = cfg.DATASETS.TEST[0]
    evaluator = PCSCEvaluator(cfg, name, output_dir)
    inference_on_dataset(model, build_pcsc_test_loader(cfg, name), evaluator)


def render_tubes(eval_dir: str, dataset_root: str, out_path: str, max_videos: int = 2,
                 sheet_frames: int = 4, gt_file: str = "synthetic-GT.pkl") -> None:
    """Draw the confident test tubes (and the GT) on a couple of test videos: a GIF at
    ``out_path`` and, next to it (.png), a sheet of ``sheet_frames`` evenly spaced frames per
    video."""
    import cv2
    import numpy as np

    from pcsc_d2.data import load_annotations
    from pcsc_d2.evaluation.results import find_results_dir
    from pcsc_d2.utils.visualize import (
        draw_boxes,
        tube_boxes_by_frame,
        write_contact_sheet,
        write_video,
    )

    eval_dir = find_results_dir(eval_dir)

    tubes_file = os.path.join(eval_dir, "pcsc_tubes_refined.json")
    if not os.path.isfile(tubes_file):
        tubes_file = os.path.join(eval_dir, "pcsc_tubes.json")
    with open(tubes_file) as f:
        tubes = [t for t in json.load(f) if t["score"] >= 0.3]
    gt = load_annotations(os.path.join(dataset_root, gt_file))
    videos = gt["test_videos"][0][:max_videos]
    frames, sheet = [], []
    for video in videos:
        video_frames = []
        per_frame = tube_boxes_by_frame(t for t in tubes if t["video"] == video)
        gt_by_frame: Dict[int, list] = {}
        for per_label in gt["gttubes"].get(video, {}).values():
            for tube in per_label:
                for row in tube:
                    gt_by_frame.setdefault(int(row[0]), []).append(row[1:5])
        for i in range(1, gt["nframes"][video] + 1):
            path = os.path.join(dataset_root, "rgb-images", video, f"{i:05d}.jpg")
            image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
            image = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
            items = [dict(d, box=d["box"] * 2) for d in per_frame.get(i, [])]
            gt_boxes = [b * 2 for b in gt_by_frame.get(i, [])]
            video_frames.append(draw_boxes(image, items, gt["labels"], gt_boxes or None))
        n = len(video_frames)
        picks = np.linspace(0.1 * n, 0.9 * n, sheet_frames).round().astype(int)
        sheet.append([video_frames[i] for i in picks])
        frames += video_frames
    write_video(frames, out_path, fps=8)
    write_contact_sheet(sheet, os.path.splitext(out_path)[0] + ".png")


def main() -> None:
    from pcsc_d2.utils.jobs import add_train_procs_argument

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "main"))
    parser.add_argument(
        "--config-file", default=os.path.join(ROOT, "configs", "pcsc_synthetic.yaml")
    )
    parser.add_argument(
        "--design", default="motion", choices=["motion", "balanced"],
        help="the synthetic dataset's design (pass the matching --config-file)",
    )
    parser.add_argument(
        "--floor", action="store_true",
        help="also evaluate the untrained model (I3D weights, random heads): the floor, all 0.0 "
        "so far; about 2 minutes",
    )
    add_train_procs_argument(parser)
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[],
        help="KEY VALUE config overrides for every step (e.g. SEED 2)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    from pcsc_d2.evaluation.results import (
        REPORT_METRICS,
        find_metrics,
        has_metrics,
        markdown_table,
        metrics_row,
    )
    from pcsc_d2.utils.io import atomic_open, atomic_save_json
    from pcsc_d2.utils.jobs import StepRunner, synthetic_dataset_command, tr_eval_command

    py, cfg_file, out = sys.executable, args.config_file, os.path.abspath(args.output)
    datasets = os.path.abspath(os.environ.get("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets")))
    os.environ["DETECTRON2_DATASETS"] = datasets
    from pcsc_d2.data.synthetic import DESIGNS

    gt_file = DESIGNS[args.design]
    synth = os.path.join(datasets, gt_file[: -len("-GT.pkl")])
    pcsc, tr, evaluation = (os.path.join(out, d) for d in ("pcsc", "tr", "eval"))
    untrained = os.path.join(out, "untrained")
    start = time.time()
    # A step is done when its file, or a folder holding metrics, exists.
    steps = StepRunner(lambda done: os.path.isfile(done) or has_metrics(done))
    step, timings = steps.step, steps.timings

    step("dataset", os.path.join(synth, gt_file), lambda: run(
        synthetic_dataset_command(py, synth, args.design)))
    step("weights", WEIGHTS, lambda: run(
        [py, "tools/convert_i3d_weights.py", "--output", WEIGHTS]))
    opts = list(args.opts)
    if args.floor:
        step("eval_untrained", untrained,
             lambda: evaluate_untrained(cfg_file, untrained, opts))
    step("train", os.path.join(pcsc, "model_final.pth"), lambda: run(
        [py, "train_net.py", "--config-file", cfg_file, "--num-gpus", str(args.train_procs),
         "--resume", *opts, "OUTPUT_DIR", pcsc,
         "MODEL.WEIGHTS", WEIGHTS, *NO_EVAL]))
    step("train_actionness", os.path.join(tr, "model_tr.pth"), lambda: run(
        [py, "tools/train_actionness.py", "--config-file", cfg_file,
         "--num-gpus", str(args.train_procs), *opts, "OUTPUT_DIR", tr,
         "MODEL.WEIGHTS", os.path.join(pcsc, "model_final.pth")]))
    step("evaluate", evaluation, lambda: run(
        tr_eval_command(py, cfg_file, evaluation, os.path.join(tr, "model_tr.pth"), opts,
                        procs=args.train_procs)))
    step("render", os.path.join(out, "tubes.png"), lambda: render_tubes(
        evaluation, synth, os.path.join(out, "tubes.gif"), gt_file=gt_file))

    trained = find_metrics(evaluation)
    rows = [
        ("untrained (I3D weights, random heads)",
         metrics_row(find_metrics(untrained), keys=REPORT_METRICS)),
    ] if args.floor else []
    rows += [
        ("PCSC", metrics_row(trained, keys=REPORT_METRICS)),
        ("PCSC + TR", metrics_row(trained, tr=True, keys=REPORT_METRICS)),
    ]
    table = markdown_table(rows, metrics=REPORT_METRICS)
    results = {name: row for name, row in rows}
    results.update(ap_convention="act", timings_s=timings, total_s=round(time.time() - start, 1))
    atomic_save_json(results, os.path.join(out, "results.json"), indent=2)
    with atomic_open(os.path.join(out, "results.md"), "w") as f:
        f.write("# PCSC on the synthetic benchmark (CPU main job)\n\n"
                "Percent; ACT conventions (+1-pixel IoU, trapezoid AP over raw PR points).\n\n"
                f"{table}\n\nStep timings (s): {json.dumps(timings)}\n")
    logger.info("Results (also in %s):\n%s", os.path.join(out, "results.md"), table)


if __name__ == "__main__":
    main()
