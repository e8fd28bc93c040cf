"""Training data and training loop of the actionness classifiers used by temporal refinement.

The samples are the boxes of the tubes linked on the training videos: a box of a class-c tube
is positive when it overlaps (IoU > 0.5, +1-pixel areas) a ground-truth box of class c in its
frame, else negative. The negatives near the true temporal boundaries are the point of TR.
Nothing here runs the detector: the caller collects the per-box features.
"""
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

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


def _balanced_loss(head: nn.Module, x, c, y, w, batch_size: int) -> Tuple[float, float]:
    """Class-balanced BCE and balanced accuracy of ``head`` on a sample set (no gradient)."""
    total, correct = 0.0, 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = head(x[i : i + batch_size], c[i : i + batch_size])
            yy, ww = y[i : i + batch_size], w[i : i + batch_size]
            total += float(F.binary_cross_entropy_with_logits(logits, yy, ww, reduction="sum"))
            correct += float((((logits > 0).float() == yy).float() * ww).sum())
    norm = float(w.sum())
    return total / norm, correct / norm


def train_actionness_classifiers(
    head: nn.Module,
    train: Mapping[str, np.ndarray],
    val: Optional[Mapping[str, np.ndarray]] = None,
    *,
    epochs: int = 20,
    lr: float = 0.01,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> Dict[str, Any]:
    """Train the per-class binary actionness classifiers by epochs, class-balanced.

    Every epoch visits every training sample once, in a seeded random order; the BCE of each
    sample is weighted by :func:`balanced_weights`, so within every class the action and the
    non-action boxes weigh the same. The learning rate decays by a cosine to 0 over all steps.
    With ``val``, the balanced loss on it is measured after every epoch and the head ends with
    the weights of the best epoch.

    Args:
        head: a module with ``head(features (N, D) float32, classes (N,) int64) -> logits
            (N,)``: the logit of class ``classes[i]``'s classifier for sample i (e.g.
            ``pcsc_d2.modeling.actionness.PCSCActionnessHead``). Trained in place, on the
            device of its parameters.
        train: {"features": (M, D), "classes": (M,) class of each box's tube, "labels": (M,)
            0/1 from :func:`label_tube_boxes`}.
        val: the same for held-out videos, or None.
        epochs: passes over the training samples.
        lr: initial learning rate.
        batch_size: samples per step.
        momentum, weight_decay: SGD's.
        seed: seed of the sample order (the head's initialisation is the caller's).

    Returns:
        {"train_loss": per-epoch mean training loss, "val_loss", "val_accuracy": per-epoch
        balanced figures on ``val`` (empty without it), "best_epoch": 1-based epoch kept}.
    """
    m = len(train["labels"])
    if not (len(train["features"]) == len(train["classes"]) == m) or m == 0:
        raise ValueError(
            f"need as many classes ({len(train['classes'])}) and labels ({m}) as features "
            f"({len(train['features'])}), and at least one sample"
        )
    params = [p for p in head.parameters() if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")

    def tensors(s: Mapping[str, np.ndarray]):
        return (
            torch.as_tensor(np.asarray(s["features"], np.float32), device=device),
            torch.as_tensor(np.asarray(s["classes"], np.int64), device=device),
            torch.as_tensor(np.asarray(s["labels"], np.float32), device=device),
            torch.from_numpy(balanced_weights(s["classes"], s["labels"])).to(device),
        )

    x, c, y, w = tensors(train)
    has_val = val is not None and len(val["labels"]) > 0
    val_t = tensors(val) if has_val else None
    steps_per_epoch = -(-m // batch_size)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs * steps_per_epoch, 1))
    history: Dict[str, Any] = {"train_loss": [], "val_loss": [], "val_accuracy": [],
                               "best_epoch": epochs}
    best = (float("inf"), None)
    for epoch in range(1, epochs + 1):
        head.train()
        order = torch.randperm(m, generator=gen).to(device)
        total = 0.0
        for i in range(0, m, batch_size):
            idx = order[i : i + batch_size]
            logits = head(x[idx], c[idx])
            loss = F.binary_cross_entropy_with_logits(logits, y[idx], weight=w[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        history["train_loss"].append(total / m)
        head.eval()
        if has_val:
            val_loss, val_acc = _balanced_loss(head, *val_t, batch_size=4096)
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_acc)
            if val_loss < best[0]:
                state = {k: v.detach().clone() for k, v in head.state_dict().items()}
                best = (val_loss, state)
                history["best_epoch"] = epoch
        logger.info(
            "actionness epoch %d/%d: train loss %.4f%s", epoch, epochs, history["train_loss"][-1],
            f", val loss {history['val_loss'][-1]:.4f}, val balanced accuracy "
            f"{100 * history['val_accuracy'][-1]:.1f}%" if has_val else "",
        )
    if best[1] is not None:
        head.load_state_dict(best[1])
    head.eval()
    return history
