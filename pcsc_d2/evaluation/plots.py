"""Precision/recall figures of an evaluation (matplotlib, Agg backend, PNG)."""
import logging
from typing import Dict, List, Optional, Sequence

import numpy as np

from pcsc_d2.utils.io import atomic_open

__all__ = ["plot_pr_curves"]

logger = logging.getLogger(__name__)


def plot_pr_curves(
    path: str,
    labels: Sequence[str],
    curves: Dict[str, Dict[str, List[np.ndarray]]],
    aps: Dict[str, np.ndarray],
    ap_convention: str,
    max_legend: Optional[int] = 30,
) -> None:
    """One panel per metric, one precision/recall curve per class, written atomically.

    Args:
        path: the PNG to write.
        labels: class names.
        curves: panel title (e.g. "frame-AP@0.5") -> {"precision": C arrays, "recall": C
            arrays}.
        aps: panel title -> (C,) AP in [0, 1] (shown in the legend).
        ap_convention: written in the figure title.
        max_legend: show the legend only up to this many classes.
    """
    # The object API with the Agg canvas: no pyplot, no change to the global backend.
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        return
    fig = Figure(figsize=(6 * len(curves), 5.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(curves), squeeze=False)
    cmap = colormaps["tab20" if len(labels) <= 20 else "nipy_spectral"]
    for ax, (title, pr) in zip(axes[0], curves.items()):
        for c, name in enumerate(labels):
            r, p = pr["recall"][c], pr["precision"][c]
            if len(r) == 0:
                continue
            ap = aps[title][c]
            color = cmap(c / max(len(labels) - 1, 1))
            # Start at (0, 1) as the ACT-style AP does, so the drawn area is the AP.
            ax.plot(np.r_[0.0, r], np.r_[1.0, p], color=color, lw=1,
                    label=f"{name} ({100 * ap:.1f})")
        mean = np.nanmean(aps[title]) if np.isfinite(aps[title]).any() else float("nan")
        ax.set_title(f"{title}: mAP {100 * mean:.2f}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if max_legend is None or len(labels) <= max_legend:
            ax.legend(fontsize=6, loc="lower left", ncol=2)
    fig.suptitle(f"precision / recall per class (AP convention: {ap_convention})")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    logger.info("Wrote PR curves to %s", path)
