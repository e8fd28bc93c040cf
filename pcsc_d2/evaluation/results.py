"""Reading the metrics that PCSCEvaluator wrote, for reports, tables and the ablation's claims."""
import json
import os
from typing import Dict, List, Sequence, Tuple, Union

__all__ = [
    "MAIN_METRICS",
    "REPORT_METRICS",
    "check_paper_claims",
    "compare_with_spread",
    "find_metrics",
    "find_results_dir",
    "has_metrics",
    "markdown_table",
    "markdown_table_with_spread",
    "metrics_row",
    "seed_statistics",
]

# The figures every report shows, in this order (percent).
MAIN_METRICS = [
    "frame_mAP@0.5",
    "video_mAP@0.2",
    "video_mAP@0.5",
    "video_mAP@0.75",
    "video_mAP@0.5:0.95",
]
# ... and with the box quality of the final detections (percent): MABO (does some detection
# fit each GT box?) and top_box_IoU (does the top-scoring one of its class, which linking follows?).
REPORT_METRICS = MAIN_METRICS + ["MABO", "top_box_IoU"]


def find_results_dir(folder: str) -> str:
    """The folder under ``folder`` (searched recursively) where PCSCEvaluator wrote its files."""
    for dirpath, _, files in sorted(os.walk(folder)):
        if "pcsc_metrics.json" in files:
            return dirpath
    raise FileNotFoundError(f"no pcsc_metrics.json under {folder}")


def has_metrics(folder: str) -> bool:
    """Whether a ``pcsc_metrics.json`` lies under ``folder`` (an evaluation that finished).

    train_net.py's evaluator writes into ``OUTPUT_DIR/inference/<dataset>/``; tools that skip
    finished evaluations look for the file anywhere below the folder they passed.
    """
    try:
        find_results_dir(folder)
    except FileNotFoundError:
        return False
    return True


def find_metrics(folder: str) -> Dict:
    """Load the ``pcsc_metrics.json`` found under ``folder`` (searched recursively)."""
    with open(os.path.join(find_results_dir(folder), "pcsc_metrics.json")) as f:
        return json.load(f)


def metrics_row(
    metrics: Dict, tr: Union[bool, str] = False, keys: Sequence[str] = tuple(MAIN_METRICS)
) -> Dict[str, float]:
    """The main figures of a metrics dict, without temporal refinement or (``tr``) with it.

    Video metrics of an evaluation with actionness carry "/noTR" and "/TR" suffixes (and
    "/TR-ends", "/TR-split" for each trimming rule; ``tr="ends"`` or ``"split"`` picks one);
    frame metrics are the same either way (TR only changes tubes).
    """
    suffix = f"/TR-{tr}" if isinstance(tr, str) else "/TR" if tr else "/noTR"
    row = {}
    for k in keys:
        value = metrics.get(k + suffix, metrics.get(k)) if k.startswith("video") else metrics.get(k)
        row[k] = float("nan") if value is None else float(value)
    return row


def markdown_table(
    rows: Sequence[Tuple[str, Dict[str, float]]],
    first: str = "model",
    metrics: Sequence[str] = tuple(MAIN_METRICS),
) -> str:
    """A markdown table of ``metrics`` (MAIN_METRICS), one row per (name, metrics row)."""
    lines = [f"| {first} | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, row in rows:
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.1f}" for k in metrics) + " |")
    return "\n".join(lines)


def check_paper_claims(
    rows: Dict[str, Union[Dict[str, float], Sequence[Dict[str, float]]]], num_stages: int = 4
) -> List[Tuple[str, str, str]]:
    """Test the claims of the paper's ablation (Tables 5 and 6) on measured figures.

    Args:
        rows: {model: metrics row (see :func:`metrics_row`), or one row per seed} with the
            models "rgb_only", "flow_only", "late_fusion", "pcsc_stage<t>" and
            "pcsc_no_feature_coop_stage<t>" for t = 0..num_stages, and "pcsc_tr" (a row with TR).
        num_stages: the last stage T.

    Returns:
        One (claim, verdict, evidence) per claim. The verdict is "holds" only where the
        difference of the means exceeds the spread of the difference (sqrt of the two sample
        variances summed, :func:`compare_with_spread`; 0 for single runs), "reversed" where the
        opposite does, else "within spread". Frame claims compare frame-mAP@0.5 (Table 5), the TR
        claim video-mAP@0.5 (Table 6); evidence gives mean ± std.
    """
    frame, video = "frame_mAP@0.5", "video_mAP@0.5"
    stats = {name: seed_statistics([r] if isinstance(r, dict) else list(r))
             for name, r in rows.items()}

    def s(name: str, metric: str = frame) -> Dict[str, float]:
        return stats[name][metric]

    def fmt(name: str, metric: str = frame) -> str:
        st = s(name, metric)
        return f"{st['mean']:.1f}" + (f" ± {st['std']:.1f}" if st["n"] > 1 else "")

    def all_of(verdicts: Sequence[str]) -> str:
        if all(v == "holds" for v in verdicts):
            return "holds"
        return "reversed" if "reversed" in verdicts else "within spread"

    pcsc = f"pcsc_stage{num_stages}"
    stage = [f"pcsc_stage{t}" for t in range(num_stages + 1)]
    no_coop = [f"pcsc_no_feature_coop_stage{t}" for t in range(num_stages + 1)]
    # Saturation: each stage's gain is not larger than the previous one's. A gain is a
    # difference of two stage means; its spread is that of the two stages.
    gains = [compare_with_spread(s(b), s(a)) for a, b in zip(stage, stage[1:])]
    shrink = [
        "holds" if g1 <= g0 else "within spread" if g1 <= g0 + (e0**2 + e1**2) ** 0.5
        else "reversed"
        for (_, g0, e0), (_, g1, e1) in zip(gains, gains[1:])
    ]
    single = [compare_with_spread(s("late_fusion"), s(o))[0] for o in ("rgb_only", "flow_only")]
    coop = [compare_with_spread(s(a), s(b))[0] for a, b in zip(stage[1:], no_coop[1:])]
    claims = [
        (
            f"PCSC ({num_stages} stages) beats late fusion ({frame})",
            compare_with_spread(s(pcsc), s("late_fusion"))[0],
            f"{fmt(pcsc)} vs {fmt('late_fusion')}",
        ),
        (
            f"late fusion beats each single stream ({frame})",
            all_of(single),
            f"{fmt('late_fusion')} vs RGB {fmt('rgb_only')}, Flow {fmt('flow_only')}",
        ),
        (
            f"more stages help ({frame} of stage {num_stages} above stage 0)",
            compare_with_spread(s(stage[-1]), s(stage[0]))[0],
            "stages 0..%d: %s" % (num_stages, ", ".join(fmt(n) for n in stage)),
        ),
        (
            "the gain of a stage shrinks as stages are added (saturation)",
            all_of(shrink),
            "gains: " + ", ".join(f"{g:+.1f}" for _, g, _ in gains),
        ),
        (
            f"feature cooperation helps at every stage 1..{num_stages} ({frame})",
            all_of(coop),
            ", ".join(f"t={t}: {fmt(a)} vs {fmt(b)}"
                      for t, (a, b) in enumerate(zip(stage, no_coop)) if t > 0),
        ),
        (
            f"TR raises {video}",
            compare_with_spread(s("pcsc_tr", video), s(pcsc, video))[0],
            f"{fmt('pcsc_tr', video)} vs {fmt(pcsc, video)}",
        ),
    ]
    return claims


def seed_statistics(rows: Sequence[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    """Mean and spread of every metric over runs that differ only in their seed.

    Args:
        rows: one metrics row per seed (the same keys).

    Returns:
        {metric: {"mean", "std" (sample standard deviation, 0 for one run), "min", "max", "n"}}.
    """
    out = {}
    for k in rows[0]:
        values = [float(r[k]) for r in rows]
        n = len(values)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        out[k] = {"mean": mean, "std": var ** 0.5, "min": min(values), "max": max(values), "n": n}
    return out


def compare_with_spread(a: Dict[str, float], b: Dict[str, float]) -> Tuple[str, float, float]:
    """Whether mean a exceeds mean b by more than the spread of their difference.

    Args:
        a, b: :func:`seed_statistics` entries of one metric for two models.

    Returns:
        (verdict, difference of the means, spread = sqrt(std_a^2 + std_b^2)); the verdict is
        "holds" (difference > spread), "reversed" (difference < -spread) or "within spread".
        With one seed each the spread is 0 and any difference decides.
    """
    diff = a["mean"] - b["mean"]
    spread = (a["std"] ** 2 + b["std"] ** 2) ** 0.5
    if diff > spread:
        return "holds", diff, spread
    if diff < -spread:
        return "reversed", diff, spread
    return "within spread", diff, spread


def markdown_table_with_spread(
    rows: Sequence[Tuple[str, Dict[str, Dict[str, float]]]],
    metrics: Sequence[str] = tuple(MAIN_METRICS),
    first: str = "model",
) -> str:
    """A markdown table of "mean ± std" cells, one row per (name, :func:`seed_statistics`)."""
    lines = [f"| {first} | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, stats in rows:
        cells = [f"{stats[k]['mean']:.1f} ± {stats[k]['std']:.1f}" for k in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
