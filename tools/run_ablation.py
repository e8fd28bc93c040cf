#!/usr/bin/env python
"""The paper's ablation (Tables 5 and 6) on the synthetic benchmark, with one schedule.

    python tools/run_ablation.py [--output output/ablation]
        [KEY VALUE ...]   # extra overrides for every run, e.g. SOLVER.MAX_ITER 600

Trains RGB-only, Flow-only, late fusion, PCSC (4 stages) and PCSC without feature cooperation,
evaluates the two PCSC models after each stage 0..4 (MODEL.PCSC.TEST_STAGES), trains TR on
PCSC and evaluates PCSC + TR, then writes ablation.md, ablation.json and ablation.png. Every run
resumes / is skipped when its result exists.
"""
import argparse
import logging
import os
import subprocess
import sys
from typing import Dict, List

from pcsc_d2.evaluation.results import (
    check_paper_claims,
    find_metrics,
    has_metrics,
    markdown_table,
    metrics_row,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Training runs skip detectron2's final evaluation: a separate --eval-only step evaluates.
NO_EVAL = ["TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()"]
WEIGHTS = os.path.join(ROOT, "weights", "i3d_kinetics400_two_stream.pth")

# name -> config file (all derive from configs/pcsc_synthetic.yaml: one schedule for all).
VARIANTS: Dict[str, str] = {
    "rgb_only": "configs/baselines/synthetic_rgb_only.yaml",
    "flow_only": "configs/baselines/synthetic_flow_only.yaml",
    "late_fusion": "configs/baselines/synthetic_late_fusion.yaml",
    "pcsc": "configs/pcsc_synthetic.yaml",
    "pcsc_no_feature_coop": "configs/ablation/synthetic_no_feature_coop.yaml",
}
STAGED = ("pcsc", "pcsc_no_feature_coop")

logger = logging.getLogger("pcsc_d2.ablation")


def run(cmd: List[str]) -> None:
    logger.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "ablation"))
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    py = sys.executable
    results: Dict[str, Dict] = {}
    for name, config in VARIANTS.items():
        out = os.path.join(args.output, name)
        base, common = ["--config-file", config], list(args.opts)
        if not os.path.isfile(os.path.join(out, "model_final.pth")):
            run([py, "train_net.py", *base, "--resume", *common, "OUTPUT_DIR", out,
                 "MODEL.WEIGHTS", WEIGHTS, *NO_EVAL])
        stages = range(5) if name in STAGED else [None]
        for t in stages:
            tag = name if t is None else f"{name}_stage{t}"
            ev = os.path.join(out, "eval" if t is None else f"eval_stage{t}")
            if not has_metrics(ev):
                extra = [] if t is None else ["MODEL.PCSC.TEST_STAGES", str(t)]
                run([py, "train_net.py", *base, "--eval-only", *common, *extra, "OUTPUT_DIR", ev,
                     "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")])
            results[tag] = find_metrics(ev)
    # PCSC + TR.
    pcsc_out, tr_out = os.path.join(args.output, "pcsc"), os.path.join(args.output, "pcsc_tr")
    if not os.path.isfile(os.path.join(tr_out, "model_tr.pth")):
        run([py, "tools/train_actionness.py", "--config-file", VARIANTS["pcsc"], *args.opts,
             "OUTPUT_DIR", tr_out, "MODEL.WEIGHTS", os.path.join(pcsc_out, "model_final.pth")])
    ev = os.path.join(tr_out, "eval")
    if not has_metrics(ev):
        run([py, "train_net.py", "--config-file", VARIANTS["pcsc"], "--eval-only", *args.opts,
             "OUTPUT_DIR", ev, "MODEL.WEIGHTS", os.path.join(tr_out, "model_tr.pth"),
             "MODEL.PCSC.ACTIONNESS.ENABLED", "True", "TUBES.REFINE.ENABLED", "True"])
    results["pcsc_tr"] = find_metrics(ev)
    write_outputs(results, args.output)


def write_outputs(results: Dict[str, Dict], folder: str) -> None:
    """ablation.json, ablation.md (one row per model, then the paper's claims tested) and
    ablation.png (mAP vs stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pcsc_d2.utils.io import atomic_open, atomic_save_json

    rows = {name: metrics_row(m, tr=name == "pcsc_tr") for name, m in results.items()}
    table = markdown_table([(name + (" (PCSC + TR)" if name == "pcsc_tr" else ""), row)
                            for name, row in rows.items()])
    claims = check_paper_claims(rows)
    claim_lines = [f"- {'holds' if ok else 'does NOT hold'}: {claim} ({evidence})"
                   for claim, ok, evidence in claims]
    atomic_save_json(
        {"metrics": results, "claims": [{"claim": c, "holds": ok, "evidence": e}
                                        for c, ok, e in claims]},
        os.path.join(folder, "ablation.json"), indent=2,
    )
    with atomic_open(os.path.join(folder, "ablation.md"), "w") as f:
        f.write("# Ablation on the synthetic benchmark\n\nPercent; ACT conventions. Stage rows: "
                "one model (4 stages) tested on the union of stages 0..t.\n\n" + table
                + "\n\n## The paper's claims on these figures\n\n" + "\n".join(claim_lines)
                + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("frame_mAP@0.5", "video_mAP@0.5")):
        for name, label in (("pcsc", "with feature cooperation"),
                            ("pcsc_no_feature_coop", "without feature cooperation")):
            ys = [rows[f"{name}_stage{t}"][metric] for t in range(5)]
            ax.plot(range(5), ys, marker="o", label=label)
        for name, style in (("late_fusion", "--"), ("rgb_only", ":"), ("flow_only", "-.")):
            ax.axhline(rows[name][metric], ls=style, c="gray", lw=1, label=name)
        ax.set_xlabel("stages used at test (0 = each stream alone, fused)")
        ax.set_ylabel(metric + " (%)")
        ax.set_xticks(range(5))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_open(os.path.join(folder, "ablation.png"), "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    logger.info("Ablation (also in %s):\n%s\n%s", folder, table, "\n".join(claim_lines))


if __name__ == "__main__":
    main()
