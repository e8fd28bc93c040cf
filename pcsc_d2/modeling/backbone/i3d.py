"""I3D (Inception-v1 inflated to 3D; Carreira and Zisserman, CVPR 2017) as a Detectron2 Backbone.

The layer structure, TF 'SAME' padding and BN epsilon follow DeepMind's Kinetics model so that
its weights (``pcsc_d2.modeling.backbone.i3d_weights``) load and reproduce it exactly.

State-dict names mirror the checkpoint's units::

    Conv3d_1a_7x7.conv.weight                 (64, 3, 7, 7, 7)
    Conv3d_1a_7x7.bn.{weight,bias,running_mean,running_var}
    Mixed_3b.Branch_1.Conv3d_0b_3x3.conv.weight
    Mixed_3b.Branch_3.Conv3d_0b_1x1.bn.bias   (Branch_3 = 3x3x3 max-pool, then this conv)

Endpoints used as C2..C5 by PCSC, with (channels, spatial stride, temporal stride):
Conv3d_2c_3x3 (192, 4, 2), Mixed_3c (480, 8, 2), Mixed_4f (832, 16, 4), Mixed_5c (1024, 32, 8).
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from .conv3d_cpu import activation_layout, conv3d, use_onednn, weights_channels_last

__all__ = [
    "I3D",
    "FrozenBatchNorm3d",
    "tf_same_padding",
    "grid_offsets",
    "build_pcsc_i3d_backbone",
    "weights_channels_last",
]

BN_EPS = 1e-3

# name -> (Branch_0, Branch_1 reduce, Branch_1 out, Branch_2 reduce, Branch_2 out, Branch_3)
_INCEPTION = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# The network in order: (name, kind, args). Max-pools: (kernel, stride).
_LAYERS: List[Tuple[str, str, tuple]] = [
    ("Conv3d_1a_7x7", "conv", (3, 64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", "conv", (64, 64, (1, 1, 1), (1, 1, 1))),
    ("Conv3d_2c_3x3", "conv", (64, 192, (3, 3, 3), (1, 1, 1))),
    ("MaxPool3d_3a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", "mixed", (192,)),
    ("Mixed_3c", "mixed", (256,)),
    ("MaxPool3d_4a_3x3", "pool", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", "mixed", (480,)),
    ("Mixed_4c", "mixed", (512,)),
    ("Mixed_4d", "mixed", (512,)),
    ("Mixed_4e", "mixed", (512,)),
    ("Mixed_4f", "mixed", (528,)),
    ("MaxPool3d_5a_2x2", "pool", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", "mixed", (832,)),
    ("Mixed_5c", "mixed", (832,)),
]

# endpoint -> (channels, spatial stride, temporal stride)
ENDPOINTS = {
    "Conv3d_1a_7x7": (64, 2, 2),
    "Conv3d_2b_1x1": (64, 4, 2),
    "Conv3d_2c_3x3": (192, 4, 2),
    "Mixed_3b": (256, 8, 2),
    "Mixed_3c": (480, 8, 2),
    "Mixed_4b": (512, 16, 4),
    "Mixed_4c": (512, 16, 4),
    "Mixed_4d": (512, 16, 4),
    "Mixed_4e": (528, 16, 4),
    "Mixed_4f": (832, 16, 4),
    "Mixed_5b": (832, 32, 8),
    "Mixed_5c": (1024, 32, 8),
}

# FREEZE_AT n freezes the units up to and including _FREEZE_POINTS[n - 1].
_FREEZE_POINTS = ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f"]


def tf_same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TF 'SAME' padding of one dimension: (before, after), the odd pixel going after.

    out = ceil(size / stride); total = max((out - 1) * stride + kernel - size, 0).
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def grid_offsets(endpoints: Sequence[str]) -> Dict[str, float]:
    """Where each endpoint's cells sit in the image, against detectron2's convention.

    detectron2 (RoIAlignV2, anchors) assumes that cell i of a stride-s map is centred at pixel
    coordinate s * (i + 0.5). TF 'SAME' padding of an even input puts the odd padding pixel at
    the end, so a strided window of size k starts (k - s) // 2 pixels before its cell instead of
    (k - s) / 2: every stride-2 layer with k - s odd moves the grid half an input pixel right and
    down, and the shifts add up. I3D's C2..C5 cells are centred 1.5, 3.5, 7.5 and 7.5 pixels
    right of (and below) where detectron2 expects them.

    Valid for inputs whose height and width are multiples of the endpoint's stride (every
    strided layer then sees an even size), which the FPN's size divisibility (32) guarantees.

    Args:
        endpoints: names in ``ENDPOINTS``.

    Returns:
        {endpoint: offset in input pixels}: cell i is centred at s * (i + 0.5) + offset.
    """
    unknown = [e for e in endpoints if e not in ENDPOINTS]
    if unknown:
        raise ValueError(f"unknown I3D endpoints {unknown}; choose from {list(ENDPOINTS)}")
    # Cell i of the current map is centred at scale * i + centre0 (continuous pixel units,
    # pixel j spanning [j, j + 1)).
    scale, centre0, offsets = 1.0, 0.5, {}
    for name, kind, args in _LAYERS:
        if kind != "mixed":  # Inception blocks: stride 1, odd kernels, centred windows
            spatial = (args[2], args[3]) if kind == "conv" else (args[0], args[1])
            kernel, stride = spatial[0][1], spatial[1][1]  # (T, H, W): H, as W is the same
            before = max(kernel - stride, 0) // 2  # tf_same_padding of an even size
            centre0 += scale * ((kernel - 1) / 2 - before)
            scale *= stride
        if name in endpoints:
            offsets[name] = centre0 - scale / 2
    return offsets


def _same_padding(
    x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]
) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """TF 'SAME' padding of a (N, C, T, H, W) tensor for this kernel and stride.

    Returns:
        (symmetric, pads): ``symmetric`` is the per-dimension (T, H, W) padding when every
        dimension pads equally on both sides (the case of all stride-1 layers), else ();
        ``pads`` is the F.pad argument (last dimension first).
    """
    per_dim = [tf_same_padding(n, k, s) for n, k, s in zip(x.shape[2:], kernel, stride)]
    symmetric = tuple(b for b, _ in per_dim) if all(b == a for b, a in per_dim) else ()
    pads = tuple(p for pair in reversed(per_dim) for p in pair)
    return symmetric, pads


_BN_BUFFERS = ("weight", "bias", "running_mean", "running_var")


class FrozenBatchNorm3d(nn.Module):
    """BatchNorm3d with fixed statistics and affine parameters: y = x * scale + shift."""

    def __init__(self, num_features: int, eps: float = BN_EPS):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def scale_shift(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(scale (C,), shift (C,)) with forward(x) = x * scale + shift per channel."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift()
        return x * scale.view(1, -1, 1, 1, 1) + shift.view(1, -1, 1, 1, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written with BatchNorm3d carry a counter this module does not have.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Replace every BatchNorm3d in ``module`` by a FrozenBatchNorm3d with its statistics.

        Returns:
            the converted module (``module`` itself, changed in place, unless it is a BN).
        """
        if isinstance(module, nn.BatchNorm3d):
            frozen = cls(module.num_features, module.eps)
            if module.affine:
                frozen.weight.copy_(module.weight.detach())
                frozen.bias.copy_(module.bias.detach())
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
            return frozen
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module


class Unit3D(nn.Module):
    """Conv3d (no bias, TF 'SAME') -> BN (eps 1e-3) -> ReLU.

    A frozen BN is folded into the convolution (weight * scale, bias = shift; kept between
    calls where no gradient flows, see ``_folded``), and a symmetric 'SAME' padding is left to
    the convolution: the same result without two passes over the activations (the BN's
    multiply-add and a padded copy).
    """

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), norm: str = "BN"):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        # Set by I3D(still=True): see I3D.
        self.still = False
        self.conv = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=False)
        # (source tensors, their versions and layout, folded weight, shift): see _folded.
        self._fold_cache: Optional[tuple] = None
        if norm == "FrozenBN":
            self.bn = FrozenBatchNorm3d(cout)
        elif norm == "BN":
            # DeepMind trained with a decay of 0.999 (momentum 0.001); fine-tuning sees far
            # fewer clips, so the statistics are let follow 10x faster.
            self.bn = nn.BatchNorm3d(cout, eps=BN_EPS, momentum=0.01)
        else:
            raise ValueError(f"I3D norm must be 'BN' or 'FrozenBN', got {norm!r}")

    def _weight(self, memory_format: torch.memory_format) -> torch.Tensor:
        """The convolution's weight (temporal taps summed when ``still``), in ``memory_format``."""
        weight = self.conv.weight
        if self.still:  # every frame alone: the temporal taps see the same frame
            weight = weight.sum(dim=2, keepdim=True)
        return weight.contiguous(memory_format=memory_format)

    def _needs_grad(self) -> bool:
        """Whether this call must carry a gradient to the convolution's weight."""
        return torch.is_grad_enabled() and self.conv.weight.requires_grad

    def _scale_output(self, x: torch.Tensor) -> bool:
        """Whether to apply the frozen BN's scale to the output rather than fold it into the
        weight: where the weight needs a gradient (a fold then costs a multiply of the weight
        forward and backward at every call) and the output has fewer elements than the weight
        (I3D's late units on small frames)."""
        if not self._needs_grad():
            return False
        out_numel = x.numel() // x.shape[1] * self.conv.out_channels // math.prod(self.stride)
        return out_numel < self.conv.weight.numel()

    def _folded(self, memory_format: torch.memory_format) -> Tuple[torch.Tensor, torch.Tensor]:
        """(weight * BN scale, BN shift) of a unit with a FrozenBatchNorm3d.

        The weight comes in ``memory_format``, the activations' layout: oneDNN would otherwise
        copy it into that layout at every call. Where no gradient is needed (the frozen units,
        and every unit at inference) the pair is computed once and kept while the weight, the
        BN's buffers (same tensors, same in-place versions), ``still`` and the layout stay the
        same, e.g. until an optimizer step or a checkpoint load changes them.
        """
        sources = (self.conv.weight, *(getattr(self.bn, n) for n in _BN_BUFFERS))
        if self._needs_grad():
            scale, shift = self.bn.scale_shift()
            return self._weight(memory_format) * scale.view(-1, 1, 1, 1, 1), shift
        key = (tuple(t._version for t in sources), self.still, memory_format)
        cache = self._fold_cache
        if cache is None or cache[1] != key or any(a is not b for a, b in zip(cache[0], sources)):
            with torch.no_grad():
                scale, shift = self.bn.scale_shift()
                weight = self._weight(memory_format) * scale.view(-1, 1, 1, 1, 1)
            cache = (sources, key, weight, shift)  # the product keeps _weight's layout
            self._fold_cache = cache
        return cache[2], cache[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride = self.kernel, self.stride
        if self.still:
            kernel, stride = (1,) + kernel[1:], (1,) + stride[1:]
        symmetric, pads = _same_padding(x, kernel, stride)
        if not symmetric and any(pads):
            x = F.pad(x, pads)
        padding = symmetric or (0, 0, 0)
        layout = activation_layout(x)
        if not isinstance(self.bn, FrozenBatchNorm3d):
            y = self.bn(conv3d(x, self._weight(layout), None, stride, padding))
        elif self._scale_output(x):
            scale, shift = self.bn.scale_shift()
            y = conv3d(x, self._weight(layout), None, stride, padding)
            y = torch.addcmul(shift.view(1, -1, 1, 1, 1), y, scale.view(1, -1, 1, 1, 1))
        else:
            weight, shift = self._folded(layout)
            y = conv3d(x, weight, shift, stride, padding)
        return F.relu(y, inplace=True)


def _pooled_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """Output size of PyTorch's max-pooling (its rule: the last window starts in the input)."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def same_pool_args(
    size: Sequence[int], kernel: Sequence[int], stride: Sequence[int]
) -> Optional[Tuple[Tuple[int, ...], bool]]:
    """Implicit (padding, ceil_mode) that reproduce TF 'SAME' max-pooling of non-negative input.

    'SAME' pads ``before`` in front and ``before`` or ``before + 1`` behind. PyTorch's implicit
    padding ``before`` on both sides starts the windows at the same places, and ``ceil_mode``
    adds the last window where 'SAME' pads one more behind; the windows then cover the same
    input elements, and for inputs >= 0 (they follow a ReLU) a missing element and a zero give
    the same maximum. This avoids an explicit padded copy of the activations.

    Args:
        size, kernel, stride: per (T, H, W).

    Returns:
        (padding, ceil_mode), or None when no such pair gives the 'SAME' output size.
    """
    befores = [tf_same_padding(n, k, s)[0] for n, k, s in zip(size, kernel, stride)]
    if any(b > k // 2 for b, k in zip(befores, kernel)):
        return None
    for ceil_mode in (False, True):
        if all(
            _pooled_size(n, k, s, b, ceil_mode) == -(-n // s)
            for n, k, s, b in zip(size, kernel, stride, befores)
        ):
            return tuple(befores), ceil_mode
    return None


class MaxPool3dSame(nn.Module):
    """Max-pooling with TF 'SAME' padding, for non-negative inputs (they follow a ReLU)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        # Set by I3D(still=True): pool over space only.
        self.still = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride = self.kernel, self.stride
        if self.still:
            kernel, stride = (1,) + kernel[1:], (1,) + stride[1:]
        implicit = same_pool_args(x.shape[2:], kernel, stride)
        if implicit is not None:
            padding, ceil_mode = implicit
            return F.max_pool3d(x, kernel, stride, padding, ceil_mode=ceil_mode)
        _, pads = _same_padding(x, kernel, stride)
        return F.max_pool3d(F.pad(x, pads), kernel, stride)


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels (the checkpoint's Branch_0..Branch_3)."""

    def __init__(self, cin: int, widths: Sequence[int], norm: str):
        super().__init__()
        b0, b1r, b1, b2r, b2, b3 = widths
        self.Branch_0 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(cin, b0, norm=norm)})
        self.Branch_1 = nn.ModuleDict(
            {
                "Conv3d_0a_1x1": Unit3D(cin, b1r, norm=norm),
                "Conv3d_0b_3x3": Unit3D(b1r, b1, (3, 3, 3), norm=norm),
            }
        )
        self.Branch_2 = nn.ModuleDict(
            {
                "Conv3d_0a_1x1": Unit3D(cin, b2r, norm=norm),
                "Conv3d_0b_3x3": Unit3D(b2r, b2, (3, 3, 3), norm=norm),
            }
        )
        self.pool = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.Branch_3 = nn.ModuleDict({"Conv3d_0b_1x1": Unit3D(cin, b3, norm=norm)})
        self.out_channels = b0 + b1 + b2 + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = self.Branch_0["Conv3d_0a_1x1"](x)
        y1 = self.Branch_1["Conv3d_0b_3x3"](self.Branch_1["Conv3d_0a_1x1"](x))
        y2 = self.Branch_2["Conv3d_0b_3x3"](self.Branch_2["Conv3d_0a_1x1"](x))
        y3 = self.Branch_3["Conv3d_0b_1x1"](self.pool(x))
        return torch.cat([y0, y1, y2, y3], dim=1)


class I3D(Backbone):
    """I3D trunk returning 5-D endpoint features.

    Input: (N, 3, T, H, W), already normalised to [-1, 1] (RGB, or Brox-style flow images).
    Output: {endpoint: (N, C, ceil(T / ts), ceil(H / s), ceil(W / s))} for ``out_features``
    (T steps, ts = 1, when ``still``).
    """

    def __init__(
        self,
        *,
        out_features: Sequence[str] = ("Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f", "Mixed_5c"),
        freeze_at: int = 0,
        norm: str = "BN",
        still: bool = False,
        channels_last: bool = False,
    ):
        """
        Args:
            out_features: endpoints to return; layers after the last one are not built.
            freeze_at: 0 = train everything; n >= 1 freezes the units up to
                ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f"][n-1].
            norm: "BN" or "FrozenBN" (fixed statistics, the usual choice for detection).
            still: see every frame alone, as I3D sees a still video of it (a frame repeated
                indefinitely): each convolution's temporal taps summed into one 2D kernel,
                the max-pools spatial only. The same parameters; a (N, 3, 1, H, W) key frame
                costs what one time step of a 2D network does.
            channels_last: store the convolution weights channels-last, the layout the
                activations take on a CPU (see ``forward``), so that oneDNN does not copy a
                trainable weight, and its gradient, between layouts at every call; for a
                model that runs on a CPU (:func:`weights_channels_last`).
        """
        super().__init__()
        unknown = [f for f in out_features if f not in ENDPOINTS]
        if unknown:
            raise ValueError(f"unknown I3D endpoints {unknown}; choose from {list(ENDPOINTS)}")
        if not 0 <= freeze_at <= len(_FREEZE_POINTS):
            raise ValueError(f"I3D freeze_at must be in 0..{len(_FREEZE_POINTS)}, got {freeze_at}")
        self._out_features = list(out_features)
        last = max(i for i, (name, _, _) in enumerate(_LAYERS) if name in out_features)
        self._order: List[str] = []
        for name, kind, args in _LAYERS[: last + 1]:
            if kind == "conv":
                module = Unit3D(args[0], args[1], args[2], args[3], norm=norm)
            elif kind == "pool":
                module = MaxPool3dSame(*args)
            else:
                module = InceptionBlock(args[0], _INCEPTION[name], norm)
            self.add_module(name, module)
            self._order.append(name)
        self._out_feature_channels = {f: ENDPOINTS[f][0] for f in self._out_features}
        self._out_feature_strides = {f: ENDPOINTS[f][1] for f in self._out_features}
        self.temporal_strides = {f: ENDPOINTS[f][2] for f in self._out_features}
        self.still = still
        for m in self.modules():
            if isinstance(m, (Unit3D, MaxPool3dSame)):
                m.still = still
        if channels_last:
            for m in self.modules():
                if isinstance(m, Unit3D):
                    m.conv.weight.data = m.conv.weight.data.contiguous(
                        memory_format=torch.channels_last_3d
                    )
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> "I3D":
        """Freeze the first units (see __init__): no gradients, and their BN turned frozen.

        As detectron2's ResNet does: a frozen unit must not drift through its BN statistics
        either, so with norm="BN" the frozen units' BatchNorm3d become FrozenBatchNorm3d.
        """
        if freeze_at <= 0:
            return self
        stop = _FREEZE_POINTS[freeze_at - 1]
        # A network cut before the freeze point (small out_features) is frozen whole.
        last = self._order.index(stop) if stop in self._order else len(self._order) - 1
        for name in self._order[: last + 1]:
            unit = getattr(self, name)
            for p in unit.parameters():
                p.requires_grad_(False)
            FrozenBatchNorm3d.convert_frozen_batchnorm(unit)
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"I3D expects (N, 3, T, H, W) input, got {tuple(x.shape)}")
        if use_onednn(x):
            # Channels-last clips keep oneDNN's convolutions and the max-pools (which have a
            # vectorised channels-last CPU kernel) free of layout conversions: about 1.3x
            # faster than (N, C, T, H, W) on CPU. The endpoints come out channels-last too.
            x = x.contiguous(memory_format=torch.channels_last_3d)
        outputs = {}
        for name in self._order:
            x = getattr(self, name)(x)
            if name in self._out_feature_channels:
                outputs[name] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            f: ShapeSpec(
                channels=self._out_feature_channels[f], stride=self._out_feature_strides[f]
            )
            for f in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_pcsc_i3d_backbone(cfg, input_shape: ShapeSpec) -> I3D:
    """I3D from MODEL.I3D.{OUT_FEATURES, FREEZE_AT, NORM} (returns 5-D features)."""
    return I3D(
        out_features=list(cfg.MODEL.I3D.OUT_FEATURES),
        freeze_at=cfg.MODEL.I3D.FREEZE_AT,
        norm=cfg.MODEL.I3D.NORM,
        channels_last=weights_channels_last(cfg.MODEL.DEVICE),
    )
