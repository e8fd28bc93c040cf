"""I3D's 3D convolutions on a CPU: oneDNN forward and backward.

PyTorch's dispatcher sends a batch of one clip with kernels of at most 3 pixels to its generic
``slow_conv3d`` (unfold + GEMM), forward and backward. :func:`conv3d` calls oneDNN instead
(benchmarks/model_speed.py, benchmarks/conv3d_backward.py); on a GPU it is F.conv3d (cuDNN).
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "conv3d",
    "use_onednn",
    "weights_channels_last",
    "activation_layout",
    "ONEDNN_BACKWARD_MIN_POSITIONS",
]


def use_onednn(x: torch.Tensor) -> bool:
    """Whether 3D convolutions of ``x`` should call oneDNN directly: fp32 on a CPU, with oneDNN
    built in and not switched off (``torch.backends.mkldnn.flags(enabled=False)`` restores
    PyTorch's own choice, which tests use as the reference)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    )


def weights_channels_last(device: str) -> bool:
    """Whether an I3D built for ``device`` (a cfg.MODEL.DEVICE) should store its convolution
    weights channels-last (``I3D(channels_last=...)``): on a CPU with oneDNN."""
    return torch.device(device).type == "cpu" and torch.backends.mkldnn.is_available()


def activation_layout(x: torch.Tensor) -> torch.memory_format:
    """channels_last_3d where ``x`` is stored so (and not also plainly contiguous), else
    contiguous_format: the layout in which a weight or a gradient should meet ``x``."""
    if x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
        return torch.channels_last_3d
    return torch.contiguous_format


def _onednn_conv3d(x, weight, bias, stride, padding) -> torch.Tensor:
    """oneDNN's forward convolution (no dilation, one group)."""
    return torch.ops.aten.mkldnn_convolution(
        x, weight, bias, list(padding), list(stride), [1, 1, 1], 1
    )


def conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: Sequence[int],
    padding: Sequence[int],
) -> torch.Tensor:
    """F.conv3d, sent to oneDNN on a CPU.

    For a batch of one clip with kernels of at most 3 pixels, PyTorch's dispatcher picks its
    generic ``slow_conv3d`` (unfold + GEMM), 2-4x slower than oneDNN on I3D's shapes
    (benchmarks/model_speed.py). oneDNN computes the same convolution (fp32; results differ in
    the last bits only). Where a gradient is needed, kernels of more than one tap go through
    :class:`_OneDNNConv3d`, whose backward runs on oneDNN too. GPUs keep cuDNN through F.conv3d.

    Args:
        x: (N, Cin, T, H, W).
        weight: (Cout, Cin, kT, kH, kW).
        bias: (Cout,) or None.
        stride, padding: per (T, H, W); the padding is symmetric.
    """
    if not use_onednn(x):
        return F.conv3d(x, weight, bias, stride, padding)
    needs_grad = any(t is not None and t.requires_grad for t in (x, weight, bias))
    if torch.is_grad_enabled() and needs_grad and math.prod(weight.shape[2:]) > 1:
        return _OneDNNConv3d.apply(x, weight, bias, tuple(stride), tuple(padding))
    return _onednn_conv3d(x, weight, bias, stride, padding)


# Fewest output positions (T' * H' * W' per clip) at which _OneDNNConv3d's backward hands its
# tensors to oneDNN: below it the conversions cost about what they save
# (benchmarks/conv3d_backward.py, 1 and 2 threads: 1.1-2.2x faster from 2x8x10 = 160 positions
# up, 0.8-1.1x at 1x8x10 and 1x4x5).
ONEDNN_BACKWARD_MIN_POSITIONS = 128


class _OneDNNConv3d(torch.autograd.Function):
    """oneDNN's 3D convolution whose backward pass also runs on oneDNN where that pays.

    The autograd formula of ``aten::mkldnn_convolution`` goes through ``convolution_backward``,
    which picks its backend by the same heuristic as F.conv3d: for one clip and kernels of at
    most 3 pixels, ``slow_conv3d``'s backward, 4-7x the forward's time on I3D's 3x3x3 kernels
    at 240x320. Handing it the activations as oneDNN tensors makes it take oneDNN's backward
    (2-3x the forward; the same gradients up to fp32 rounding) on outputs of at least
    ``ONEDNN_BACKWARD_MIN_POSITIONS`` positions; smaller ones keep the default.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = list(stride), list(padding)
        ctx.has_bias = bias is not None
        return _onednn_conv3d(x, weight, bias, stride, padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                ctx.has_bias and ctx.needs_input_grad[2]]
        onednn = math.prod(grad.shape[2:]) >= ONEDNN_BACKWARD_MIN_POSITIONS
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad.to_mkldnn() if onednn else grad,
            x.to_mkldnn() if onednn else x,
            weight,
            [weight.shape[0]] if ctx.has_bias else None,
            ctx.stride, ctx.padding, [1, 1, 1], False, [0, 0, 0], 1, mask,
        )
        if grad_x is not None and onednn:  # back to a dense tensor in the activations' layout
            grad_x = grad_x.to_dense().contiguous(memory_format=activation_layout(x))
        return grad_x, grad_w, grad_b if mask[2] else None, None, None
