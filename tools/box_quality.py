#!/usr/bin/env python
"""Where a trained detector loses box quality: MABO of each RPN's proposals, of every stage's
boxes and of the final detections, per class, and the final boxes' offsets against the actor's
motion (see pcsc_d2.evaluation.box_quality).

    python tools/box_quality.py --config-file configs/pcsc_synthetic.yaml \
        --weights output/main/pcsc/model_final.pth --output output/main/box_quality \
        [--label NAME] [--overlay NAME other/box_quality.json ...] [KEY VALUE ...]

Writes box_quality.json, box_quality.md and box_quality.png to --output. The figure has one
panel per model: this one (``--label``) and every ``--overlay``, a box_quality.json written by
an earlier run (e.g. the same detector trained without an option), on one scale.
"""
import argparse
import json
import logging
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import tqdm
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

from pcsc_d2.data import get_split_annotations
from pcsc_d2.engine import PCSCCheckpointer, build_pcsc_test_loader, get_pcsc_cfg
from pcsc_d2.evaluation.box_quality import mabo_by_step, motion_offsets
from pcsc_d2.evaluation.frame_ap import GroundTruth
from pcsc_d2.structures import d2_to_gt
from pcsc_d2.utils.errors import INPUT_ERRORS, InputError, exit_with_error
from pcsc_d2.utils.io import atomic_open, atomic_save_json

logger = logging.getLogger("pcsc_d2.box_quality")


def collect(cfg, model, dataset: str) -> Dict[str, Dict[Tuple[str, int], np.ndarray]]:
    """step -> {(video, frame): boxes (R, 4) in the GT's pixel convention} over ``dataset``."""
    steps: Dict[str, Dict[Tuple[str, int], np.ndarray]] = {}
    loader = build_pcsc_test_loader(cfg, dataset)
    for inputs in tqdm.tqdm(loader, desc="box quality"):
        for inp, out in zip(inputs, model.inspect(inputs)):
            key = (inp["video"], int(inp["frame"]))
            for name, boxes in out.items():
                steps.setdefault(name, {})[key] = d2_to_gt(boxes.cpu().numpy())
    return steps


def _order(names: List[str]) -> List[str]:
    def rank(name: str):
        if name.startswith("proposals"):
            return (0, name)
        if name == "final":
            return (99, name)
        stage = name.rsplit("_s", 1)[1]
        return (1 + int(stage.split("_")[0]), name.endswith("_in") is False, name)

    return sorted(names, key=rank)


def write_report(result: Dict, out_dir: str, label: str = "",
                 overlays: Sequence[Tuple[str, Dict]] = ()) -> str:
    """box_quality.md (tables) and box_quality.png (MABO by step per class, one panel per model:
    this one, then ``overlays`` as (name, box_quality.json contents)); returns the md."""
    mabo, motion = result["mabo"], result["motion"]
    steps = _order(list(mabo))
    classes = list(next(iter(mabo.values()))["per_class"])
    rows = [[s, f"{mabo[s]['mabo']:.1f}"] + [f"{mabo[s]['per_class'][c]:.1f}" for c in classes]
            for s in steps]
    table1 = tabulate(rows, headers=["boxes", "MABO"] + classes, tablefmt="pipe")
    keys = ["speed", "iou_moving", "iou_static", "along", "across", "size_along", "size_across"]
    rows = [[c] + [f"{motion[c][k]:.2f}" for k in keys] for c in classes]
    table2 = tabulate(rows, headers=["class"] + keys, tablefmt="pipe")
    text = (
        "# Box quality\n\nMABO (percent) of each step's boxes, per class:\n\n" + table1 +
        "\n\nFinal boxes against the GT's motion (pixels; along > 0 = ahead of the actor, "
        "size = predicted - GT):\n\n" + table2 + "\n"
    )
    with atomic_open(os.path.join(out_dir, "box_quality.md"), "w") as f:
        f.write(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(label, mabo)] + [(name, other["mabo"]) for name, other in overlays]
    fig, axes = plt.subplots(1, len(panels), figsize=(9 * len(panels), 4.2), sharey=True,
                             squeeze=False)
    x = np.arange(len(steps))
    for ax, (name, values) in zip(axes[0], panels):
        for c in classes:
            ax.plot(x, [values[s]["per_class"][c] for s in steps], marker="o", label=c)
        ax.plot(x, [values[s]["mabo"] for s in steps], "k--", lw=2, label="mean")
        ax.set_xticks(x, steps, rotation=30, ha="right")
        ax.set_title(f"{name}: final MABO {values['final']['mabo']:.1f}" if name else
                     "Best overlap of the GT boxes along the detector's steps")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MABO (%)")
    axes[0][0].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    with atomic_open(os.path.join(out_dir, "box_quality.png"), "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--label", default="", help="this model's name in the figure")
    parser.add_argument("--overlay", nargs=2, action="append", default=[],
                        metavar=("NAME", "JSON"), help="another run's box_quality.json to plot")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    overlays = []
    try:  # read before the detector runs: a bad file fails at once, in one line
        for name, path in args.overlay:
            with open(path) as f:
                overlays.append((name, json.load(f)))
            if "mabo" not in overlays[-1][1]:
                raise InputError(f"{path}: not a box_quality.json (no 'mabo')")
    except INPUT_ERRORS as e:
        exit_with_error(e)
    setup_logger(name="pcsc_d2")
    cfg = get_pcsc_cfg(args.config_file, args.opts + ["MODEL.WEIGHTS", args.weights])
    model = build_model(cfg)
    PCSCCheckpointer(model).load(args.weights)
    model.eval()
    dataset = cfg.DATASETS.TEST[0]
    with torch.no_grad():
        steps = collect(cfg, model, dataset)
    evaluated = list(steps["final"])
    gt = GroundTruth.from_annotations(get_split_annotations(dataset))
    result = {
        "mabo": mabo_by_step(gt.restrict_to_frames(evaluated), steps),
        "motion": motion_offsets(gt, steps["final"]),
        "weights": args.weights,
        "dataset": dataset,
    }
    os.makedirs(args.output, exist_ok=True)
    atomic_save_json(result, os.path.join(args.output, "box_quality.json"), indent=1)
    logger.info("\n%s", write_report(result, args.output, args.label, overlays))


if __name__ == "__main__":
    main()
