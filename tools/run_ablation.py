#!/usr/bin/env python
"""The paper's ablation (Tables 5 and 6) on a synthetic design or on real clips, over seeds,
with one schedule.

    python tools/run_ablation.py [--output output/ablation] [--design motion|balanced|real]
        [--clips ../shared/real_ucf24] [--seeds 1 2 3] [--budget iters|time|both]
        [--time-from logs|timing] [--train-procs N]
        [--opts KEY VALUE ...]

Per seed: trains RGB-only, Flow-only, late fusion, PCSC (4 stages) and PCSC without feature
cooperation, all from the design's PCSC config (``VARIANTS``: overrides of it), evaluates the two
PCSC models after each stage 0..4 (MODEL.PCSC.TEST_STAGES, all five from one inference pass:
tools/eval_stages.py), trains TR on PCSC and evaluates PCSC + TR. ``--design real`` trains on
the first half of each real UCF-101 clip in ``--clips`` and tests on the second halves
(pcsc_d2.data.real_split), with configs/real/ucf24_sample_cpu.yaml. Then writes ablation.md,
ablation.json and ablation.png:
mean ± std over the seeds, and the paper's claims, each called "holds" only where the difference
exceeds its spread. Every run resumes / is skipped when its result exists; PCSC and its TR use
the main job's folders (``seed<s>/pcsc``, ``seed<s>/tr``, ``seed<s>/eval``), so pointing --output
at a seed study (tools/seed_study.py) reuses its models.

``--budget iters`` trains every model for the config's SOLVER.MAX_ITER (equal training budget);
``--budget time`` gives each model the iterations that take as long as PCSC's (equal wall time),
from the seconds per iteration that each training logged in a 20-iteration timing run; a count
within ``--time-tolerance`` (default 5%) of MAX_ITER is MAX_ITER. ``--budget both`` does the
first, then the second in ``<output>/time``, taking the seconds per iteration from the first's
training logs (no timing runs) and reusing the first's models whose equal-time count is
MAX_ITER, so mostly the single streams train again. Those logs are only as clean as the machine
was during the trainings: run the equal-iteration part alone, or add ``--time-from timing``,
which times every model in a 20-iteration run (as ``--budget time`` does) and still reuses the
equal-iteration models whose count is MAX_ITER.
Every training, timing runs included, uses ``--train-procs`` processes (``train_net.py
--num-gpus``), as the main job does (default 2), so the PCSC models of a seed study of the same
schedule are the ablation's.
"""
import argparse
import json
import logging
import os
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

from pcsc_d2.evaluation.results import (
    check_paper_claims,
    find_metrics,
    has_metrics,
    markdown_table_with_spread,
    metrics_row,
    seed_statistics,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Training runs skip detectron2's final evaluation: a separate --eval-only step evaluates.
NO_EVAL = ["TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()"]
WEIGHTS = os.path.join(ROOT, "weights", "i3d_kinetics400_two_stream.pth")

# name -> overrides of the design's PCSC config. On the synthetic config they give exactly
# configs/baselines/synthetic_{rgb_only,flow_only,late_fusion}.yaml and
# configs/ablation/synthetic_no_feature_coop.yaml (tests/test_run_ablation.py checks), so one
# schedule serves all models, on every design.
VARIANTS: Dict[str, List[str]] = {
    "rgb_only": ["MODEL.PCSC.STREAMS", "['rgb']", "MODEL.PCSC.NUM_STAGES", "0"],
    "flow_only": ["MODEL.PCSC.STREAMS", "['flow']", "MODEL.PCSC.NUM_STAGES", "0"],
    "late_fusion": ["MODEL.PCSC.STREAMS", "['rgb', 'flow']", "MODEL.PCSC.NUM_STAGES", "0",
                    "MODEL.PCSC.MESSAGE_PASSING", "False"],
    "pcsc": [],
    "pcsc_no_feature_coop": ["MODEL.PCSC.FEATURE_COOPERATION", "False"],
}
STAGED = ("pcsc", "pcsc_no_feature_coop")
# design -> (PCSC config, dataset name): the two synthetic designs, and the real UCF-101 clips of
# ../shared/real_ucf24 cut in time (pcsc_d2.data.real_split: first halves train, second halves
# test), on the CPU config of real clips.
DESIGNS: Dict[str, Tuple[str, str]] = {
    "motion": ("configs/pcsc_synthetic.yaml", "synthetic"),
    "balanced": ("configs/pcsc_synthetic.yaml", "synthetic_balanced"),
    "real": ("configs/real/ucf24_sample_cpu.yaml", "ucf24_split"),
}

logger = logging.getLogger("pcsc_d2.ablation")


def run(cmd: List[str]) -> None:
    logger.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=True)


def train_command(config: str, procs: int) -> List[str]:
    """``train_net.py`` of a config in ``procs`` CPU processes (the main job's way)."""
    return [sys.executable, "train_net.py", "--config-file", config, "--num-gpus", str(procs)]


def seconds_per_iter(config: str, opts: List[str], folder: str, procs: int) -> float:
    """Median seconds per training iteration of a config, from the ``metrics.json`` that
    detectron2 wrote in ``folder``: a finished training's, or else a 20-iteration run's."""
    metrics = os.path.join(folder, "metrics.json")
    if not os.path.isfile(metrics):
        run([*train_command(config, procs), *opts, "OUTPUT_DIR", folder,
             "MODEL.WEIGHTS", WEIGHTS, "SOLVER.MAX_ITER", "20", "SOLVER.CHECKPOINT_PERIOD",
             "100000", *NO_EVAL])
    with open(metrics) as f:
        times = [json.loads(line)["time"] for line in f if '"time"' in line]
    return sorted(times)[len(times) // 2]


def equal_time_iterations(base_iters: int, rates: Dict[str, float],
                          tolerance: float = 0.05) -> Dict[str, int]:
    """The iterations that take each variant as long as PCSC's ``base_iters``: ``rates`` are
    seconds per iteration by variant name (``"pcsc"`` among them); a count within ``tolerance``
    (a fraction) of ``base_iters`` is ``base_iters``, so that model is the equal-iteration one."""
    iters = {}
    for name, rate in rates.items():
        n = int(round(base_iters * rates["pcsc"] / rate))
        iters[name] = base_iters if abs(n - base_iters) <= tolerance * base_iters else n
    return iters


def time_budget(seed: int, out: str, config: str, opts: List[str], procs: int,
                tolerance: float, trained: str = "") -> Dict[str, int]:
    """Equal-wall-time iterations of every variant for one seed: the seconds per iteration come
    from ``trained/<name>``'s training log where ``trained`` (a seed folder of an
    equal-iteration run) has one, else from a 20-iteration timing run in ``out/timing``."""
    from pcsc_d2.engine import get_pcsc_cfg

    common = ["SEED", str(seed), *opts]
    base_iters = get_pcsc_cfg(config, opts).SOLVER.MAX_ITER
    rates = {}
    for name, variant in VARIANTS.items():
        folder = os.path.join(trained, name)
        if not (trained and os.path.isfile(os.path.join(folder, "metrics.json"))):
            folder = os.path.join(out, "timing", name)  # never a timing run in a model's folder
        rates[name] = seconds_per_iter(config, [*common, *variant], folder, procs)
    iters = equal_time_iterations(base_iters, rates, tolerance)
    logger.info("equal wall time: seconds/iteration %s -> iterations %s", rates, iters)
    return iters


def run_seed(seed: int, out: str, config: str, opts: List[str], procs: int,
             iters: Optional[Dict[str, int]] = None, shared: str = "") -> Dict[str, Dict]:
    """Train and evaluate every variant of ``config`` for one seed; returns {row name: metrics}.

    ``iters`` (by variant name) overrides SOLVER.MAX_ITER and scales SOLVER.STEPS with it;
    ``shared``, a seed folder of an equal-iteration run, supplies the models (and PCSC's TR)
    whose count is the config's own, instead of training them again in ``out``.
    """
    from pcsc_d2.engine import get_pcsc_cfg

    py = sys.executable
    common = ["SEED", str(seed), *opts]
    iters = dict(iters or {})
    base_iters = get_pcsc_cfg(config, opts).SOLVER.MAX_ITER
    results: Dict[str, Dict] = {}
    for name, variant in VARIANTS.items():
        same = iters.get(name, base_iters) == base_iters
        folder = os.path.join(shared if shared and same else out, name)
        extra = list(variant)
        if not same:
            n = iters[name]
            steps = f"({int(0.75 * n)}, {int(0.92 * n)})"
            extra += ["SOLVER.MAX_ITER", str(n), "SOLVER.STEPS", steps]
        if not os.path.isfile(os.path.join(folder, "model_final.pth")):
            run([*train_command(config, procs), "--resume", *common, *extra,
                 "OUTPUT_DIR", folder, "MODEL.WEIGHTS", WEIGHTS, *NO_EVAL])
        weights = [*variant, "MODEL.WEIGHTS", os.path.join(folder, "model_final.pth")]
        if name in STAGED:  # every stage t from one inference pass
            ev = os.path.join(folder, "eval_stages")
            if not all(has_metrics(os.path.join(ev, f"stage{t}")) for t in range(5)):
                run([py, "tools/eval_stages.py", "--config-file", config, "--stages", "0,1,2,3,4",
                     *common, "OUTPUT_DIR", ev, *weights])
            for t in range(5):
                results[f"{name}_stage{t}"] = find_metrics(os.path.join(ev, f"stage{t}"))
        else:
            ev = os.path.join(folder, "eval")
            if not has_metrics(ev):
                run([py, "train_net.py", "--config-file", config, "--eval-only", *common,
                     "OUTPUT_DIR", ev, *weights])
            results[name] = find_metrics(ev)
    # PCSC + TR in the main job's folders (tr/, eval/), so a seed study's are reused.
    pcsc_out = shared if shared and iters.get("pcsc", base_iters) == base_iters else out
    tr = os.path.join(pcsc_out, "tr")
    if not os.path.isfile(os.path.join(tr, "model_tr.pth")):
        run([py, "tools/train_actionness.py", "--config-file", config, *common,
             "OUTPUT_DIR", tr, "MODEL.WEIGHTS", os.path.join(pcsc_out, "pcsc", "model_final.pth")])
    ev = os.path.join(pcsc_out, "eval")
    if not has_metrics(ev):
        run([py, "train_net.py", "--config-file", config, "--eval-only", *common,
             "OUTPUT_DIR", ev, "MODEL.WEIGHTS", os.path.join(tr, "model_tr.pth"),
             "TUBES.REFINE.ENABLED", "True"])
    results["pcsc_tr"] = find_metrics(ev)
    return results


def ensure_inputs(design: str, output: str, clips: str) -> None:
    """Make what the trainings read when it is absent, before any of them starts: the Kinetics
    I3D weights (tools/convert_i3d_weights.py, as the main job does) and the design's dataset, a
    synthetic one or the real clips' split (its parts written under ``output/real_parts``)."""
    from pcsc_d2.data.synthetic import DESIGNS as SYNTHETIC_FILES
    from pcsc_d2.data.real_split import prepare_real_split
    from pcsc_d2.utils.jobs import synthetic_dataset_command

    if not os.path.isfile(WEIGHTS):
        run([sys.executable, "tools/convert_i3d_weights.py", "--output", WEIGHTS])
    root = os.path.abspath(os.environ.get("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets")))
    os.environ["DETECTRON2_DATASETS"] = root
    if design == "real":
        prepare_real_split(clips, os.path.join(output, "real_parts"), root, 0.5, sys.executable,
                           run)
        return
    folder = os.path.join(root, DESIGNS[design][1])
    if not os.path.isfile(os.path.join(folder, SYNTHETIC_FILES[design])):
        run(synthetic_dataset_command(sys.executable, folder, design))


def main() -> None:
    from pcsc_d2.utils.jobs import add_train_procs_argument

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "ablation"))
    parser.add_argument("--design", default="motion", choices=sorted(DESIGNS))
    parser.add_argument("--clips", default=os.path.join(ROOT, "..", "shared", "real_ucf24"),
                        help="the real clips of --design real (pyannot.pkl and the videos)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--budget", default="iters", choices=["iters", "time", "both"])
    parser.add_argument("--time-tolerance", type=float, default=0.05,
                        help="equal-time counts within this fraction of MAX_ITER are MAX_ITER")
    parser.add_argument("--time-from", choices=["logs", "timing"],
                        help="--budget both: seconds per iteration from the equal-iteration "
                             "trainings' logs (default), or from 20-iteration timing runs")
    add_train_procs_argument(parser)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args()
    if args.time_from and args.budget != "both":
        parser.error(f"--time-from applies to --budget both only (--budget {args.budget})")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    config, data = DESIGNS[args.design]
    if args.design == "real" and not os.path.isfile(os.path.join(args.clips, "pyannot.pkl")):
        sys.exit(f"error: {args.clips}: no pyannot.pkl (the real clips are not here): skipped")
    ensure_inputs(args.design, os.path.abspath(args.output), args.clips)
    opts = ["DATASETS.TRAIN", f"('{data}_train',)", "DATASETS.TEST", f"('{data}_test',)",
            *args.opts]
    if args.budget in ("iters", "both"):
        per_seed = {s: run_seed(s, os.path.join(args.output, f"seed{s}"), config, opts,
                                args.train_procs) for s in args.seeds}
        write_outputs(per_seed, args.output, f"{args.design} design, iters budget")
    if args.budget in ("time", "both"):
        out = os.path.join(args.output, "time") if args.budget == "both" else args.output
        per_seed = {}
        for s in args.seeds:
            seed_out = os.path.join(out, f"seed{s}")
            trained = os.path.join(args.output, f"seed{s}") if args.budget == "both" else ""
            logs = "" if args.time_from == "timing" else trained
            iters = time_budget(s, seed_out, config, opts, args.train_procs,
                                args.time_tolerance, logs)
            per_seed[s] = run_seed(s, seed_out, config, opts, args.train_procs, iters, trained)
        write_outputs(per_seed, out, f"{args.design} design, time budget")


def write_outputs(per_seed: Dict[int, Dict[str, Dict]], folder: str, title: str) -> None:
    """ablation.json, ablation.md (mean ± std per model, then the paper's claims tested) and
    ablation.png (mAP vs stage, with the spread as error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pcsc_d2.utils.io import atomic_open, atomic_save_json

    names = list(next(iter(per_seed.values())))
    rows = {name: [metrics_row(r[name], tr=name == "pcsc_tr") for r in per_seed.values()]
            for name in names}
    stats = {name: seed_statistics(r) for name, r in rows.items()}
    table = markdown_table_with_spread(
        [(name + (" (PCSC + TR)" if name == "pcsc_tr" else ""), stats[name]) for name in names]
    )
    claims = check_paper_claims(rows)
    claim_lines = [f"- {verdict}: {claim} ({evidence})" for claim, verdict, evidence in claims]
    seeds = sorted(per_seed)
    atomic_save_json(
        {"seeds": seeds, "metrics": {str(s): m for s, m in per_seed.items()}, "stats": stats,
         "claims": [{"claim": c, "verdict": v, "evidence": e} for c, v, e in claims]},
        os.path.join(folder, "ablation.json"), indent=1,
    )
    with atomic_open(os.path.join(folder, "ablation.md"), "w") as f:
        f.write(f"# The paper's ablation ({title})\n\nPercent; ACT conventions; "
                f"mean ± std over seeds {seeds}. Stage rows: one model (4 stages) tested on the "
                "union of stages 0..t.\n\n" + table + "\n\n## The paper's claims on these "
                "figures\n\n" + "\n".join(claim_lines) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("frame_mAP@0.5", "video_mAP@0.5")):
        for name, label in (("pcsc", "with feature cooperation"),
                            ("pcsc_no_feature_coop", "without feature cooperation")):
            st = [stats[f"{name}_stage{t}"][metric] for t in range(5)]
            ax.errorbar(range(5), [s["mean"] for s in st], yerr=[s["std"] for s in st],
                        marker="o", capsize=3, label=label)
        for name, style in (("late_fusion", "--"), ("rgb_only", ":"), ("flow_only", "-.")):
            ax.axhline(stats[name][metric]["mean"], ls=style, c="gray", lw=1, label=name)
        ax.set_xlabel("stages used at test (0 = each stream alone, fused)")
        ax.set_ylabel(metric + " (%)")
        ax.set_xticks(range(5))
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_open(os.path.join(folder, "ablation.png"), "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    logger.info("Ablation (also in %s):\n%s\n%s", folder, table, "\n".join(claim_lines))


if __name__ == "__main__":
    main()
