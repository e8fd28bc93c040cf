"""Training data and training loop of the actionness classifiers used by temporal refinement.

The samples are the boxes of the tubes linked on the training videos: a box of a class-c tube
is positive when it overlaps (IoU > 0.5, +1-pixel areas) a ground-truth box of class c in its
frame, else negative. The negatives near the true temporal boundaries are the point of TR.
Nothing here runs the detector: the caller collects the per-box features.
"""
import logging
from typing import Dict, List, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .linking import Tube, paired_box_iou

__all__ = ["label_tube_boxes", "balanced_weights", "train_actionness_classifiers"]

logger = logging.getLogger(__name__)


def label_tube_boxes(
    tubes: Sequence[Tube],
    gttubes_of_video: Mapping[int, Sequence[np.ndarray]],
    iou_thresh: float = 0.5,
) -> List[np.ndarray]:
    """Label every box of every tube of one video as action (1) or not (0).

    Args:
        tubes: the video's linked tubes.
        gttubes_of_video: the GT dict's ``gttubes[video]``: {label (0-based): [array (n, 5)
            of frame, x1, y1, x2, y2 (inclusive pixels)]}.
        iou_thresh: a box is positive when its IoU with a GT box of the tube's class in the
            same frame is strictly greater than this.

    Returns:
        One (L,) int64 array per tube.
    """
    out = []
    for tube in tubes:
        labels = np.zeros(len(tube), dtype=np.int64)
        for gt in gttubes_of_video.get(tube.label, []):
            gt = np.asarray(gt, dtype=np.float64).reshape(-1, 5)
            common, ti, gi = np.intersect1d(
                tube.frames, gt[:, 0].astype(np.int64), assume_unique=True, return_indices=True
            )
            if len(common):
                iou = paired_box_iou(tube.boxes[ti], gt[gi, 1:5])
                labels[ti[iou > iou_thresh]] = 1
        out.append(labels)
    return out


def balanced_weights(classes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample loss weights: within every class, positives and negatives weigh the same.

    A sample of class c and label y gets ``n_c / (2 * n_{c,y})``, so each class keeps a total
    weight of ``n_c`` (when it has both labels) and the weights average to about 1.

    Args:
        classes: (M,) int class of each sample.
        labels: (M,) int 0/1 label of each sample.

    Returns:
        (M,) float32 weights.
    """
    classes = np.asarray(classes, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    key = classes * 2 + labels
    _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    n_class = np.bincount(classes)[classes]
    has_both = np.bincount(classes, weights=labels)[classes]
    has_both = (has_both > 0) & (has_both < n_class)
    w = np.where(has_both, n_class / (2.0 * counts[inv]), 1.0)
    return w.astype(np.float32)


def train_actionness_classifiers(
    head: nn.Module,
    features: np.ndarray,
    classes: np.ndarray,
    labels: np.ndarray,
    *,
    iters: int = 2000,
    lr: float = 0.01,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    seed: int = 0,
    log_period: int = 200,
) -> Dict[str, List[float]]:
    """Train the per-class binary actionness classifiers with class-balanced BCE.

    Args:
        head: a module with ``head(features (N, D) float32, classes (N,) int64) -> logits
            (N,)``: the logit of class ``classes[i]``'s classifier for sample i (e.g.
            ``pcsc_d2.modeling.actionness.PCSCActionnessHead``). Trained in place, on the
            device of its parameters.
        features: (M, D) per-box RoI features.
        classes: (M,) class of the tube each box belongs to.
        labels: (M,) 0/1 from :func:`label_tube_boxes`.
        iters: SGD iterations.
        lr: learning rate (cosine decay to 0).
        batch_size: samples per iteration, drawn uniformly with replacement.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        seed: seed of the sampling (the head's initialisation is the caller's).
        log_period: log the mean loss every this many iterations.

    Returns:
        {"loss": per-iteration losses}.
    """
    features = np.asarray(features, dtype=np.float32)
    m = len(features)
    if not (len(classes) == len(labels) == m) or m == 0:
        raise ValueError(
            f"need as many classes ({len(classes)}) and labels ({len(labels)}) as features "
            f"({m}), and at least one sample"
        )
    params = [p for p in head.parameters() if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    x = torch.from_numpy(features).to(device)
    c = torch.as_tensor(np.asarray(classes, dtype=np.int64), device=device)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32), device=device)
    w = torch.from_numpy(balanced_weights(classes, labels)).to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(iters, 1))
    head.train()
    losses: List[float] = []
    for it in range(iters):
        idx = torch.randint(m, (min(batch_size, m),), generator=gen).to(device)
        logits = head(x[idx], c[idx])
        loss = F.binary_cross_entropy_with_logits(logits, y[idx], weight=w[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log_period and (it + 1) % log_period == 0:
            logger.info("actionness iter %d/%d: loss %.4f", it + 1, iters,
                        float(np.mean(losses[-log_period:])))
    head.eval()
    return {"loss": losses}
