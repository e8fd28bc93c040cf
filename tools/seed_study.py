#!/usr/bin/env python
"""The main job over several seeds: mean and spread of every figure, and TR's effect per seed.

    python tools/seed_study.py [--seeds 1 2 3] [--output output/seed_study] \
        [--config-file configs/pcsc_synthetic.yaml] [--design motion|balanced] \
        [--test-variant NAME KEY VALUE [KEY VALUE ...]] ... [--opts KEY VALUE ...]

Each seed runs ``tools/main_job.py --output <output>/seed<s> --opts SEED <s> ...`` (resumable:
finished steps are skipped), so a seed's detector, TR classifiers and evaluation all start from
it. The same dataset serves every seed. Writes ``seed_study.md`` and ``seed_study.json``: per
seed the rows of PCSC and PCSC + TR, then "mean ± std" over the seeds, and TR's gain in
video-mAP@0.5 and its change of video-mAP@0.2 per seed.

``--test-variant NAME KEY VALUE ...`` (repeatable) re-evaluates every seed's trained models
(detector and TR) with test-time options, e.g. ``--test-variant vote
MODEL.PCSC.TEST_BOX_VOTING 0.7``, into ``<output>/seed<s>/eval_<NAME>``; the report adds its
rows and its paired difference from the default evaluation per seed (same models, so the
difference is the option's alone).
"""
import argparse
import json
import logging
import os
import subprocess
import sys
from typing import Dict, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
logger = logging.getLogger("pcsc_d2.seed_study")
MODELS = ("PCSC", "PCSC + TR")
RULES = ("ends", "split")  # TUBES.REFINE.MODE


def run_seed(seed: int, output: str, config_file: str, design: str, opts: List[str],
             variants: Sequence[Sequence[str]] = ()) -> Dict:
    """Run (or resume) the main job of one seed and its test variants; returns their rows."""
    out = os.path.join(output, f"seed{seed}")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "main_job.py"), "--output", out,
           "--config-file", config_file, "--design", design, "--opts", "SEED", str(seed), *opts]
    logger.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=True)
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    # Both trimming rules of TR, from the same evaluation (TUBES.REFINE.MODE picks the default).
    from pcsc_d2.evaluation.results import REPORT_METRICS, find_metrics, has_metrics, metrics_row
    from pcsc_d2.utils.jobs import default_train_procs, run_command, tr_eval_command

    metrics = find_metrics(os.path.join(out, "eval"))
    for rule in RULES:
        results[f"PCSC + TR ({rule})"] = metrics_row(metrics, tr=rule, keys=REPORT_METRICS)
    for name, *test_opts in variants:
        folder = os.path.join(out, f"eval_{name}")
        if not has_metrics(folder):
            run_command(tr_eval_command(
                sys.executable, config_file, folder, os.path.join(out, "tr", "model_tr.pth"),
                [*opts, "SEED", str(seed)], test_opts, procs=default_train_procs()),
                cwd=ROOT)
        metrics = find_metrics(folder)
        results[f"PCSC [{name}]"] = metrics_row(metrics, keys=REPORT_METRICS)
        results[f"PCSC + TR [{name}]"] = metrics_row(metrics, tr=True, keys=REPORT_METRICS)
    return results


def summarize(per_seed: Dict[int, Dict]) -> Dict:
    """Statistics over seeds of every figure of PCSC and PCSC + TR, and TR's effect."""
    from pcsc_d2.evaluation.results import seed_statistics

    rules = [f"PCSC + TR ({rule})" for rule in RULES]
    first = next(iter(per_seed.values()))
    variants = [m for m in first if m.endswith("]")]
    summary = {m: seed_statistics([r[m] for r in per_seed.values()])
               for m in (*MODELS, *rules, *variants)}
    # A variant against the default evaluation of the same models, per seed.
    summary["variant difference"] = {
        m: {k: {s: r[m][k] - r[m.split(" [")[0]][k] for s, r in per_seed.items()}
            for k in first[m]}
        for m in variants
    }
    summary["TR gain"] = {
        k: {s: r["PCSC + TR"][k] - r["PCSC"][k] for s, r in per_seed.items()}
        for k in ("video_mAP@0.2", "video_mAP@0.5", "video_mAP@0.75")
    }
    return summary


def report(per_seed: Dict[int, Dict], summary: Dict) -> str:
    from pcsc_d2.evaluation.results import (
        REPORT_METRICS,
        markdown_table,
        markdown_table_with_spread,
    )

    seeds = sorted(per_seed)
    rows = [(f"{m}, seed {s}", per_seed[s][m]) for s in seeds for m in MODELS]
    gains = summary["TR gain"]
    lines = [
        f"# Seed study: {len(seeds)} seeds ({', '.join(map(str, seeds))})", "",
        "Percent; ACT conventions. Per seed:", "", markdown_table(rows, metrics=REPORT_METRICS),
        "", "Mean ± sample standard deviation over the seeds:", "",
        markdown_table_with_spread([(m, summary[m]) for m in MODELS], REPORT_METRICS), "",
        "TR's effect per seed (PCSC + TR minus PCSC, points): " + "; ".join(
            f"{k} " + ", ".join(f"{gains[k][s]:+.1f}" for s in seeds) for k in gains
        ),
        "", "The two trimming rules of TR (TUBES.REFINE.MODE), same evaluations, mean ± std:", "",
        markdown_table_with_spread(
            [(m, summary[m]) for m in ("PCSC", *(f"PCSC + TR ({r})" for r in RULES))],
            REPORT_METRICS,
        ),
    ]
    diffs = summary["variant difference"]
    if diffs:
        lines += ["", "Test-time variants (--test-variant), the same models, mean ± std:", "",
                  markdown_table_with_spread(
                      [(m, summary[m]) for m in (*MODELS, *diffs)], REPORT_METRICS), "",
                  "Each variant minus the default evaluation, per seed (points):", ""]
        lines += [f"- {m}: " + "; ".join(
            f"{k} " + ", ".join(f"{d[s]:+.1f}" for s in seeds) for k, d in diffs[m].items())
            for m in diffs]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "seed_study"))
    parser.add_argument(
        "--config-file", default=os.path.join(ROOT, "configs", "pcsc_synthetic.yaml")
    )
    parser.add_argument("--design", default="motion", choices=["motion", "balanced"])
    parser.add_argument(
        "--test-variant", action="append", nargs="+", default=[], metavar="NAME KEY VALUE",
        help="re-evaluate every seed's models with these test options (repeatable)",
    )
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    from pcsc_d2.utils.io import atomic_open, atomic_save_json

    per_seed = {
        s: run_seed(s, args.output, args.config_file, args.design, args.opts, args.test_variant)
        for s in args.seeds
    }
    summary = summarize(per_seed)
    text = report(per_seed, summary)
    atomic_save_json({"per_seed": per_seed, "summary": summary},
                     os.path.join(args.output, "seed_study.json"), indent=1)
    with atomic_open(os.path.join(args.output, "seed_study.md"), "w") as f:
        f.write(text)
    logger.info("\n%s", text)


if __name__ == "__main__":
    main()
