"""Reading the metrics that PCSCEvaluator wrote, for reports and tables."""
import json
import os
from typing import Dict, Sequence, Tuple

__all__ = ["MAIN_METRICS", "find_metrics", "find_results_dir", "markdown_table", "metrics_row"]

# The figures every report shows, in this order (percent).
MAIN_METRICS = [
    "frame_mAP@0.5",
    "video_mAP@0.2",
    "video_mAP@0.5",
    "video_mAP@0.75",
    "video_mAP@0.5:0.95",
]


def find_results_dir(folder: str) -> str:
    """The folder under ``folder`` (searched recursively) where PCSCEvaluator wrote its files."""
    for dirpath, _, files in sorted(os.walk(folder)):
        if "pcsc_metrics.json" in files:
            return dirpath
    raise FileNotFoundError(f"no pcsc_metrics.json under {folder}")


def find_metrics(folder: str) -> Dict:
    """Load the ``pcsc_metrics.json`` found under ``folder`` (searched recursively)."""
    with open(os.path.join(find_results_dir(folder), "pcsc_metrics.json")) as f:
        return json.load(f)


def metrics_row(metrics: Dict, tr: bool = False) -> Dict[str, float]:
    """The main figures of a metrics dict, without temporal refinement or (``tr``) with it.

    Video metrics of an evaluation with actionness carry "/noTR" and "/TR" suffixes; frame
    metrics are the same either way (TR only changes tubes).
    """
    suffix = "/TR" if tr else "/noTR"
    row = {}
    for k in MAIN_METRICS:
        value = metrics.get(k + suffix, metrics.get(k)) if k.startswith("video") else metrics.get(k)
        row[k] = float("nan") if value is None else float(value)
    return row


def markdown_table(rows: Sequence[Tuple[str, Dict[str, float]]], first: str = "model") -> str:
    """A markdown table of MAIN_METRICS, one row per (name, metrics row)."""
    lines = [f"| {first} | " + " | ".join(MAIN_METRICS) + " |", "|---" * (len(MAIN_METRICS) + 1) + "|"]
    for name, row in rows:
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.1f}" for k in MAIN_METRICS) + " |")
    return "\n".join(lines)
