"""RoI pooling for PCSC's heads: detectron2's ROIPooler with a faster RoIAlign on CPU.

torchvision's CPU RoIAlign (forward and backward) runs on one thread whatever
``torch.get_num_threads()`` says, and it releases the GIL. So on a CPU the RoIs of each level are
split into one chunk per thread and pooled concurrently: every RoI is computed by the same kernel
as before, so the forward output is bit-identical to detectron2's ROIPooler. The backward is one
sparse matrix product (:mod:`.roi_align_grad`), about 10x faster than torchvision's CPU kernel;
it only reorders floating-point additions. On a GPU nothing changes.
"""
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple

import torch

from detectron2.layers import ROIAlign, nonzero_tuple
from detectron2.modeling.poolers import (
    ROIPooler,
    assign_boxes_to_levels,
    convert_boxes_to_pooler_format,
)
from detectron2.structures import Boxes

from .roi_align_grad import roi_align_backward_sparse

__all__ = ["PCSCROIPooler", "fast_roi_align"]

# Below this many RoIs per thread, handing work to another thread costs more than it saves.
_MIN_ROIS_PER_THREAD = 16

_EXECUTOR: Optional[ThreadPoolExecutor] = None
_EXECUTOR_LOCK = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool with ``workers`` threads (rebuilt when the thread count changes)."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None or _EXECUTOR._max_workers != workers:
            if _EXECUTOR is not None:
                _EXECUTOR.shutdown(wait=False)
            _EXECUTOR = ThreadPoolExecutor(workers, thread_name_prefix="pcsc_roi_align")
        return _EXECUTOR


def _chunks(num: int, parts: int) -> List[Tuple[int, int]]:
    """``parts`` contiguous [start, end) ranges covering range(num) as evenly as possible."""
    bounds = [num * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class _CPURoIAlign(torch.autograd.Function):
    """torchvision's RoIAlign with the RoIs split over ``parts`` threads; sparse backward."""

    @staticmethod
    def forward(ctx, features, rois, output_size, spatial_scale, sampling_ratio, aligned, parts):
        ph, pw = output_size
        ranges = _chunks(len(rois), parts)
        out = features.new_empty((len(rois), features.shape[1], ph, pw))

        def pool(rng: Tuple[int, int]) -> None:
            a, b = rng
            # Grad mode is per thread, and a pool thread's is on: without this, autograd would
            # record the kernel on ``features`` (which requires grad) and the copy into ``out``.
            with torch.no_grad():
                out[a:b] = torch.ops.torchvision.roi_align(
                    features, rois[a:b], spatial_scale, ph, pw, sampling_ratio, aligned
                )

        if len(ranges) > 1:
            list(_executor(len(ranges)).map(pool, ranges))
        elif ranges:
            pool(ranges[0])
        ctx.save_for_backward(rois)
        ctx.args = (features.shape, output_size, spatial_scale, sampling_ratio, aligned)
        return out

    @staticmethod
    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        shape, output_size, spatial_scale, sampling_ratio, aligned = ctx.args
        grad_features = roi_align_backward_sparse(
            grad, rois, spatial_scale, output_size, sampling_ratio, aligned, tuple(shape)
        )
        return grad_features, None, None, None, None, None, None


def fast_roi_align(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: Tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """torchvision.ops.roi_align; on a CPU spread over ``torch.get_num_threads()`` threads, with
    the sparse backward of :mod:`.roi_align_grad`.

    Args:
        features: (N, C, H, W) map.
        rois: (R, 5) batch index, x1, y1, x2, y2 (input-image coordinates).
        output_size, spatial_scale, sampling_ratio, aligned: as for roi_align.

    Returns:
        (R, C, output_size[0], output_size[1]) pooled features.
    """
    if features.device.type == "cpu" and features.dtype not in (torch.float32, torch.float64):
        # CPU autocast (bf16): torchvision has no reduced-precision CPU kernel; pool in fp32.
        pooled = fast_roi_align(
            features.float(), rois.float(), output_size, spatial_scale, sampling_ratio, aligned
        )
        return pooled.to(features.dtype)
    if features.device.type != "cpu" or features.dtype != rois.dtype:
        return torch.ops.torchvision.roi_align(
            features, rois, spatial_scale, output_size[0], output_size[1], sampling_ratio, aligned
        )
    parts = max(1, min(torch.get_num_threads(), len(rois) // _MIN_ROIS_PER_THREAD))
    return _CPURoIAlign.apply(
        features.contiguous(), rois.contiguous(), tuple(output_size), spatial_scale,
        sampling_ratio, aligned, parts,
    )


class PCSCROIPooler(ROIPooler):
    """detectron2's multi-level ROIPooler (RoIAlign / RoIAlignV2), with :func:`fast_roi_align`.

    Same constructor, same outputs, plus ``level_offsets``: where a level's cells are not centred
    at s * (i + 0.5) but ``offset`` pixels further right and down (I3D's grids, see
    :mod:`pcsc_d2.modeling.backbone.grid`), its boxes are moved by -offset before pooling, so that
    the pooled window covers the box. Use :meth:`pool_many` to pool several feature pyramids at
    the same boxes: the boxes are assigned to levels once.
    """

    def __init__(self, *args, level_offsets: Sequence[float] = (), **kwargs):
        """
        Args:
            args, kwargs: as for detectron2's ROIPooler.
            level_offsets: per level (finest first), pixels; empty: all 0 (detectron2's grid).
        """
        super().__init__(*args, **kwargs)
        if not all(isinstance(p, ROIAlign) for p in self.level_poolers):
            raise ValueError("PCSCROIPooler supports the ROIAlign and ROIAlignV2 pooler types")
        if level_offsets and len(level_offsets) != len(self.level_poolers):
            raise ValueError(
                f"{len(level_offsets)} grid offsets for {len(self.level_poolers)} pooler levels"
            )
        self.level_offsets = [float(o) for o in level_offsets] or [0.0] * len(self.level_poolers)

    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes]) -> torch.Tensor:
        """As ROIPooler.forward: (M, C, S, S) features of the M boxes of all images."""
        return self.pool_many([x], box_lists)[0]

    def pool_many(
        self, pyramids: Sequence[List[torch.Tensor]], box_lists: List[Boxes]
    ) -> List[torch.Tensor]:
        """Pool every pyramid at the same boxes.

        Args:
            pyramids: P lists of (N, C_p, H_l, W_l) maps, one per level (finest first).
            box_lists: N Boxes, one per image, in input-image coordinates.

        Returns:
            P tensors (M, C_p, S, S), M = boxes of all images in order.
        """
        num_levels = len(self.level_poolers)
        for x in pyramids:
            if len(x) != num_levels:
                raise ValueError(f"{len(x)} feature maps for {num_levels} pooler levels")
            if len(box_lists) != x[0].shape[0]:
                raise ValueError(f"{len(box_lists)} box lists for a batch of {x[0].shape[0]}")
        size = self.output_size
        rois = convert_boxes_to_pooler_format(box_lists)
        if num_levels == 1:
            levels = torch.zeros(len(rois), dtype=torch.int64, device=rois.device)
        else:
            levels = assign_boxes_to_levels(
                box_lists, self.min_level, self.max_level, self.canonical_box_size,
                self.canonical_level,
            )
        outputs = []
        for x in pyramids:
            # Every box belongs to exactly one level: each row below is written once.
            out = x[0].new_empty((len(rois), x[0].shape[1]) + tuple(size))
            for level, pooler in enumerate(self.level_poolers):
                inds = nonzero_tuple(levels == level)[0]
                if len(inds) == 0:
                    continue
                level_rois = rois[inds]
                if self.level_offsets[level]:
                    level_rois[:, 1:] -= self.level_offsets[level]
                pooled = fast_roi_align(
                    x[level], level_rois.to(x[level].dtype), pooler.output_size,
                    pooler.spatial_scale, pooler.sampling_ratio, pooler.aligned,
                )
                out.index_put_((inds,), pooled)
            outputs.append(out)
        return outputs
