"""RoIAlign's backward pass on CPU as one sparse matrix product.

RoIAlign is linear in the feature map, and every channel is sampled at the same points: per
image, pooled (R * S * S, C) = A @ features (H * W, C), where row (roi, bin) of A holds the
bilinear weights of the bin's sample points divided by their count. The gradient is then
A^T @ grad, a sparse (H * W, R * S * S) matrix times a dense (R * S * S, C) one. torchvision's
CPU backward recomputes the bilinear weights for every channel on one thread, which made it 5x
its forward and about a sixth of a CPU training step; the product below costs a tenth of it
(``benchmarks/model_speed.py``). The sample points and weights follow torchvision's
``roi_align`` kernel exactly (its ``aligned`` offset, adaptive sampling grid, clamping at the
border), so the gradient differs from torchvision's only in the order of additions.
"""
from typing import Tuple

import torch

__all__ = ["roi_align_sampling", "roi_align_backward_sparse"]


def _axis(v: torch.Tensor, size: int) -> Tuple[torch.Tensor, ...]:
    """torchvision's bilinear rule along one axis: (low index, high index, weight of the high
    index, weight of the low index); both weights are 0 for a point outside [-1, size]."""
    inside = (v >= -1) & (v <= size)
    v = v.clamp(min=0)
    low = v.floor().long()
    last = low >= size - 1
    low = torch.where(last, torch.full_like(low, size - 1), low)
    high = torch.where(last, low, low + 1)
    v = torch.where(last, low.to(v.dtype), v)
    frac = v - low.to(v.dtype)
    return low, high, frac * inside, (1 - frac) * inside


def roi_align_sampling(
    rois: torch.Tensor,
    spatial_scale: float,
    output_size: Tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
    height: int,
    width: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-zeros of A: which pixel feeds which output bin, with what weight.

    Args:
        rois: (R, 5) batch index, x1, y1, x2, y2 in input-image coordinates.
        spatial_scale, output_size, sampling_ratio, aligned: as for torchvision's roi_align.
        height, width: H and W of the feature map.

    Returns:
        (pixel, bin, weight), each (M,): pixel = b * H * W + y * W + x of the map, bin = roi *
        S_h * S_w + row * S_w + column of the output; a (pixel, bin) pair may repeat.
    """
    ph, pw = output_size
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - x1
    roi_h = rois[:, 4] * spatial_scale - offset - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / pw, roi_h / ph
    if sampling_ratio > 0:
        grid_w = grid_h = torch.full((len(rois),), sampling_ratio, dtype=torch.long,
                                     device=rois.device)
    else:
        # ceil of a negative size is <= 0: torchvision's loops then sample nothing.
        grid_w = torch.ceil(roi_w / pw).long().clamp(min=0)
        grid_h = torch.ceil(roi_h / ph).long().clamp(min=0)
    count = grid_h * grid_w
    # One row per (roi, sample iy, ix) of a bin; the bins broadcast over (ph, pw).
    roi = torch.repeat_interleave(torch.arange(len(rois), device=rois.device), count)
    k = torch.arange(len(roi), device=rois.device) - (torch.cumsum(count, 0) - count)[roi]
    iy, ix = k // grid_w[roi], k % grid_w[roi]
    rows = torch.arange(ph, device=rois.device, dtype=rois.dtype)
    cols = torch.arange(pw, device=rois.device, dtype=rois.dtype)
    y = (y1[roi, None] + rows * bin_h[roi, None]
         + (iy[:, None] + 0.5).to(rois.dtype) * bin_h[roi, None] / grid_h[roi, None])
    x = (x1[roi, None] + cols * bin_w[roi, None]
         + (ix[:, None] + 0.5).to(rois.dtype) * bin_w[roi, None] / grid_w[roi, None])
    y_low, y_high, ly, hy = _axis(y, height)  # (M', ph)
    x_low, x_high, lx, hx = _axis(x, width)  # (M', pw)
    inv_count = 1.0 / count[roi].to(rois.dtype)
    base = rois[roi, 0].long() * (height * width)
    top = (base[:, None] + y_low * width)[:, :, None]
    bottom = (base[:, None] + y_high * width)[:, :, None]
    pixel = torch.stack([top + x_low[:, None, :], top + x_high[:, None, :],
                         bottom + x_low[:, None, :], bottom + x_high[:, None, :]], dim=-1)
    hy, ly = (hy * inv_count[:, None])[:, :, None], (ly * inv_count[:, None])[:, :, None]
    weight = torch.stack([hy * hx[:, None, :], hy * lx[:, None, :],
                          ly * hx[:, None, :], ly * lx[:, None, :]], dim=-1)
    bins = torch.arange(ph * pw, device=rois.device).view(1, ph, pw, 1)
    out_bin = (roi[:, None, None, None] * (ph * pw) + bins).expand_as(pixel)
    return pixel.reshape(-1), out_bin.reshape(-1), weight.reshape(-1)


def roi_align_backward_sparse(
    grad: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    output_size: Tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
    feature_shape: Tuple[int, int, int, int],
) -> torch.Tensor:
    """The gradient of ``roi_align(features, rois, ...)`` with respect to ``features``.

    Args:
        grad: (R, C, S_h, S_w) gradient of the pooled features.
        rois, spatial_scale, output_size, sampling_ratio, aligned: as for the forward.
        feature_shape: (N, C, H, W) of the features.

    Returns:
        (N, C, H, W) gradient (channels-last in memory).
    """
    n, c, h, w = feature_shape
    pixel, out_bin, weight = roi_align_sampling(
        rois, spatial_scale, output_size, sampling_ratio, aligned, h, w
    )
    num_bins = grad.shape[0] * output_size[0] * output_size[1]
    transposed = torch.sparse_coo_tensor(
        torch.stack([pixel, out_bin]), weight.to(grad.dtype), (n * h * w, num_bins),
        check_invariants=False,  # indices are in range by construction
    )
    rows = grad.permute(0, 2, 3, 1).reshape(-1, c)  # (R * S_h * S_w, C)
    return torch.sparse.mm(transposed, rows).view(n, h, w, c).permute(0, 3, 1, 2)
