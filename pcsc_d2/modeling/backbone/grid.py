"""Where the two-stream I3D-FPN's feature cells lie in the image, and anchors placed there.

detectron2's RoIAlignV2 reads cell i of a stride-s map as centred at pixel s * (i + 0.5), and its
anchor generator puts the anchors of cell i at s * (i + OFFSET). I3D's TF 'SAME' padding centres
its cells elsewhere (:func:`pcsc_d2.modeling.backbone.i3d.grid_offsets`: 1.5, 3.5, 7.5 and 7.5
pixels right of and below that point for C2..C5), so without a correction every RoI is pooled
from a window shifted by that much, a different amount at every FPN level, and the RPN's shared
head meets anchors that sit at a different place in their cell at every level. With
MODEL.PCSC.ALIGN_FEATURE_GRID the pooler (:class:`PCSCROIPooler`) and the anchors
(:class:`PCSCAnchorGenerator`) use the cells' true centres.
"""
import math
from typing import Dict, List, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import (
    ANCHOR_GENERATOR_REGISTRY,
    DefaultAnchorGenerator,
    _create_grid_offsets,
)

from .i3d import ENDPOINTS, grid_offsets

__all__ = ["fpn_grid_offsets", "PCSCAnchorGenerator"]


def fpn_grid_offsets(cfg) -> Dict[str, float]:
    """{"p2".."p6": offset in pixels} of the FPN levels' cell centres from s * (i + 0.5).

    P_l keeps the grid of C_l (a 1x1 lateral and a centred 3x3 output conv); P6 takes every
    second cell of P5 (detectron2's LastLevelMaxPool). All zero when
    MODEL.PCSC.ALIGN_FEATURE_GRID is off, so callers need no special case.

    Args:
        cfg: a PCSC config (MODEL.FPN.IN_FEATURES are I3D endpoints, finest first).

    Returns:
        offsets per FPN output name.
    """
    endpoints = list(cfg.MODEL.FPN.IN_FEATURES)
    offsets = grid_offsets(endpoints)
    result = {}
    for name in endpoints:
        stride = ENDPOINTS[name][1]
        result[f"p{int(math.log2(stride))}"] = offsets[name]
    last = endpoints[-1]
    stride = ENDPOINTS[last][1]
    # P6 cell i is P5 cell 2i: centred at 2 * stride * i + stride / 2 + offset.
    result[f"p{int(math.log2(stride)) + 1}"] = stride / 2 + offsets[last] - stride
    if not cfg.MODEL.PCSC.ALIGN_FEATURE_GRID:
        return {k: 0.0 for k in result}
    return result


@ANCHOR_GENERATOR_REGISTRY.register()
class PCSCAnchorGenerator(DefaultAnchorGenerator):
    """detectron2's DefaultAnchorGenerator with the anchors of each cell at the cell's true
    centre, s * (i + 0.5) + offset_l (:func:`fpn_grid_offsets`), when ``level_offsets`` is
    given; without it, exactly DefaultAnchorGenerator (anchors at s * (i + OFFSET))."""

    @configurable
    def __init__(self, *, level_offsets: Sequence[float] = (), **kwargs):
        """
        Args:
            level_offsets: per feature map, in pixels; empty: detectron2's placement.
            kwargs: as for DefaultAnchorGenerator (sizes, aspect_ratios, strides, offset).
        """
        super().__init__(**kwargs)
        if level_offsets and len(level_offsets) != self.num_features:
            raise ValueError(
                f"{len(level_offsets)} grid offsets for {self.num_features} feature maps"
            )
        self.level_offsets = [float(o) for o in level_offsets]

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        if cfg.MODEL.PCSC.ALIGN_FEATURE_GRID:
            offsets = fpn_grid_offsets(cfg)
            names = list(cfg.MODEL.RPN.IN_FEATURES)
            ret["level_offsets"] = [offsets[n] for n in names]
        return ret

    def _grid_anchors(self, grid_sizes: List[List[int]]) -> List[torch.Tensor]:
        if not self.level_offsets:
            return super()._grid_anchors(grid_sizes)
        anchors = []
        buffers = [b for _, b in self.cell_anchors.named_buffers()]
        for size, stride, base, offset in zip(grid_sizes, self.strides, buffers,
                                              self.level_offsets):
            shift_x, shift_y = _create_grid_offsets(size, stride, 0.0, base)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1) + (
                stride / 2 + offset
            )
            anchors.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return anchors
