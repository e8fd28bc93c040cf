"""The class-specific actionness classifiers of PCSC's temporal refinement (TR).

One binary classifier per action class scores whether a detected box of that class really shows
the action (boxes near a tube's temporal boundaries often show the actor before or after it).
Its input is a detection's cooperated RoI feature: whichever stage found the box, it is pooled
again from both streams and described by the last stage, F = F^i + g_T(F^j) through that stage's
box head (``PCSCCascadeROIHeads.detection_features``, ``Instances.features``), at training and at
test time alike. The detector stays frozen while these are trained (see
``pcsc_d2.tubes.train_actionness_classifiers``); the meta-architecture owns the head as
``actionness_head`` and adds ``Instances.actionness`` at inference.
"""
import logging
import math
from typing import Optional

import torch
from torch import nn

from detectron2.config import configurable

logger = logging.getLogger(__name__)

__all__ = ["PCSCActionnessHead"]


class PCSCActionnessHead(nn.Module):
    """C independent binary classifiers, evaluated only for each sample's own class.

    With ``hidden_dim`` H > 0 classifier c is ``w2_c . relu(W1_c x + b1_c) + b2_c``; with H = 0 it
    is linear, ``w_c . x + b_c``. The C classifiers are stored stacked so one matrix product
    serves a batch of mixed classes.
    """

    @configurable
    def __init__(self, *, in_dim: int, num_classes: int, hidden_dim: int = 256):
        """
        Args:
            in_dim: D, the width of a detection's feature.
            num_classes: C.
            hidden_dim: H, the hidden width of each classifier (0 = linear).
        """
        super().__init__()
        if in_dim <= 0 or num_classes <= 0 or hidden_dim < 0:
            raise ValueError(
                f"bad actionness head sizes: in_dim={in_dim}, num_classes={num_classes}, "
                f"hidden_dim={hidden_dim}"
            )
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        width = hidden_dim if hidden_dim > 0 else in_dim
        if hidden_dim > 0:
            self.hidden_weight = nn.Parameter(torch.empty(in_dim, num_classes * hidden_dim))
            self.hidden_bias = nn.Parameter(torch.empty(num_classes * hidden_dim))
        self.weight = nn.Parameter(torch.empty(num_classes, width))
        self.bias = nn.Parameter(torch.empty(num_classes))
        # Saved with the weights: whether TR's training has set them (a detector checkpoint
        # carries an untrained head, which must not refine anything).
        self.register_buffer("trained", torch.zeros((), dtype=torch.bool))
        # Which classifiers saw at least one box of their action in TR's training (set by
        # pcsc_d2.engine.train_actionness); the others cannot tell action from non-action, and
        # :meth:`actionness` leaves their tubes as linked. Checkpoints without it trust all.
        self.register_buffer("class_trained", torch.ones(num_classes, dtype=torch.bool))
        self.reset_parameters()

    def reset_parameters(self, generator: Optional[torch.Generator] = None) -> None:
        """(Re)initialise the classifiers: uniform(+-1/sqrt(D)) hidden weights, N(0, 0.01^2)
        output weights, zero biases; ``generator`` makes it reproducible."""
        with torch.no_grad():
            if self.hidden_dim > 0:
                bound = 1.0 / math.sqrt(self.hidden_weight.shape[0])
                self.hidden_weight.uniform_(-bound, bound, generator=generator)
                self.hidden_bias.zero_()
            self.weight.normal_(0.0, 0.01, generator=generator)
            self.bias.zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the flag existed carried the head only once TR trained it.
        if prefix + "weight" in state_dict and prefix + "trained" not in state_dict:
            state_dict[prefix + "trained"] = torch.ones((), dtype=torch.bool)
        # ... and, before the per-class flags existed, trusted every classifier.
        if prefix + "weight" in state_dict and prefix + "class_trained" not in state_dict:
            state_dict[prefix + "class_trained"] = torch.ones(self.num_classes, dtype=torch.bool)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def from_config(cls, cfg, in_dim: int):
        return {
            "in_dim": in_dim,
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "hidden_dim": cfg.MODEL.PCSC.ACTIONNESS.HIDDEN_DIM,
        }

    def actionness(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """The probability that each detection shows its class's action, for TR.

        A class whose classifier never saw its action in training (``class_trained`` False)
        gets 1 for every box: with no evidence either way TR keeps such a tube as linked,
        rather than trimming it by an untrained classifier's noise.

        Args:
            features, classes: as for :meth:`forward`.

        Returns:
            (N,) float32 in [0, 1].
        """
        probs = torch.sigmoid(self(features, classes).float())
        return torch.where(self.class_trained[classes.long()], probs, torch.ones_like(probs))

    def forward(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """
        Args:
            features: (N, D) detection features.
            classes: (N,) int64 class of each detection, in [0, C).

        Returns:
            (N,) logits of each detection's own-class classifier (sigmoid -> actionness).
        """
        if features.dim() != 2 or len(features) != len(classes):
            raise ValueError(
                f"features must be (N, D) and classes (N,), got {tuple(features.shape)} and "
                f"{tuple(classes.shape)}"
            )
        classes = classes.long()
        x = features
        if self.hidden_dim > 0:
            # All classes' hidden layers at once (N, C*H), then each sample's own slice (N, H).
            h = torch.relu(x @ self.hidden_weight + self.hidden_bias)
            h = h.view(len(x), self.num_classes, self.hidden_dim)
            x = h[torch.arange(len(x), device=x.device), classes]
        return (x * self.weight[classes]).sum(dim=1) + self.bias[classes]
