"""Where I3D's feature cells lie (TF 'SAME' padding), and the pooler and anchors that use it.

The offsets are checked three ways: by hand from the layer list, by the receptive field of a
real I3D cell (measured with average-pooling in place of max-pooling, whose gradient only
reaches the arg-max), and through the pooler and anchor generator that correct for them.
"""
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.structures import Boxes

import pcsc_d2.modeling.backbone.i3d as i3d_module
from pcsc_d2.engine import get_pcsc_cfg
from pcsc_d2.modeling.backbone.grid import fpn_grid_offsets
from pcsc_d2.modeling.backbone.i3d import I3D, grid_offsets
from pcsc_d2.modeling.roi_heads.pooling import PCSCROIPooler


def test_grid_offsets_by_hand():
    # Conv3d_1a (k7 s2) pads 2 before: its window of cell i spans pixels 2i-2..2i+4, centred
    # at 2i + 1.5 against the convention's 2i + 1. MaxPool3d_2a (k3 s2) pads 0 before: cell i of
    # C2 spans conv cells 2i..2i+2, centred at 2 * (2i + 1) + 1.5 = 4i + 3.5 against 4i + 2.
    # MaxPool3d_3a, _4a (k3 s2) add half an input cell each (2 and 4 pixels); MaxPool3d_5a (k2 s2)
    # pads nothing and is centred.
    assert grid_offsets(["Conv3d_1a_7x7", "Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f", "Mixed_5c"]) == {
        "Conv3d_1a_7x7": 0.5, "Conv3d_2c_3x3": 1.5, "Mixed_3c": 3.5, "Mixed_4f": 7.5,
        "Mixed_5c": 7.5,
    }
    with pytest.raises(ValueError, match="Mixed_3d"):
        grid_offsets(["Mixed_3d"])


def test_grid_offsets_match_the_receptive_field_of_a_real_i3d(monkeypatch):
    def avg_pool(x, kernel, stride, padding=0, ceil_mode=False):
        return F.avg_pool3d(x, kernel, stride, padding, ceil_mode=ceil_mode,
                            count_include_pad=False)

    monkeypatch.setattr(i3d_module.F, "max_pool3d", avg_pool)
    torch.manual_seed(0)
    model = I3D(out_features=["Conv3d_2c_3x3", "Mixed_3c"], norm="FrozenBN")
    with torch.no_grad():
        for p in model.parameters():  # positive weights: the gradient's support is the field
            p.copy_(p.abs() + 0.01)
    x = torch.ones(1, 3, 8, 96, 128, requires_grad=True)
    out = model(x)
    expected = grid_offsets(["Conv3d_2c_3x3", "Mixed_3c"])
    for name, stride in (("Conv3d_2c_3x3", 4), ("Mixed_3c", 8)):
        i, j = out[name].shape[3] // 2, out[name].shape[4] // 2
        (grad,) = torch.autograd.grad(out[name][0, :, :, i, j].sum(), x, retain_graph=True)
        ys, xs = torch.nonzero(grad.abs().sum((0, 1, 2)) > 0, as_tuple=True)
        centre_x = (xs.min() + xs.max() + 1).item() / 2  # pixel k spans [k, k + 1)
        centre_y = (ys.min() + ys.max() + 1).item() / 2
        assert centre_x - stride * (j + 0.5) == expected[name]
        assert centre_y - stride * (i + 0.5) == expected[name]


def _cfg(align: bool):
    return get_pcsc_cfg("configs/pcsc_synthetic.yaml", [
        "MODEL.ANCHOR_GENERATOR.NAME", "PCSCAnchorGenerator",
        "MODEL.PCSC.ALIGN_FEATURE_GRID", str(align),
    ])


def test_fpn_offsets_follow_the_c_levels_and_p6_subsamples_p5():
    assert fpn_grid_offsets(_cfg(True)) == {"p2": 1.5, "p3": 3.5, "p4": 7.5, "p5": 7.5,
                                            "p6": -8.5}
    assert set(fpn_grid_offsets(_cfg(False)).values()) == {0.0}


@pytest.mark.parametrize("align", [False, True])
def test_anchors_sit_at_the_cells_true_centres(align):
    strides = (4, 8, 16, 32, 64)
    gen = build_anchor_generator(_cfg(align), [ShapeSpec(stride=s) for s in strides])
    anchors = gen([torch.zeros(1, 1, 256 // s, 384 // s) for s in strides])
    offsets = fpn_grid_offsets(_cfg(True))
    for level, (boxes, stride) in enumerate(zip(anchors, strides)):
        centres = boxes.get_centers().view(256 // stride, 384 // stride, -1, 2)
        # Anchors of cell (row 1, column 2): detectron2 puts them at (2s, s); aligned, at the
        # cell's centre s * (index + 0.5) + offset.
        shift = stride / 2 + offsets[f"p{level + 2}"] if align else 0.0
        expected = torch.tensor([2 * stride + shift, stride + shift])
        assert torch.allclose(centres[1, 2], expected.expand_as(centres[1, 2]))


def test_pooler_reads_the_window_of_the_box_on_a_shifted_grid():
    # A stride-4 map whose cell i is centred at 4 * (i + 0.5) + 1.5 and whose value is the
    # x coordinate of that centre: pooling a box must return the box's own x coordinates.
    offset, stride = 1.5, 4
    width = 40
    centres = stride * (torch.arange(width) + 0.5) + offset
    fmap = centres.view(1, 1, 1, width).expand(1, 1, 8, width).contiguous()
    box = Boxes(torch.tensor([[40.0, 4.0, 68.0, 24.0]]))
    common = dict(output_size=7, scales=(1 / stride,), sampling_ratio=2, pooler_type="ROIAlignV2")
    aligned = PCSCROIPooler(level_offsets=(offset,), **common)([fmap], [box])
    plain = PCSCROIPooler(**common)([fmap], [box])
    bin_centres = 40 + (torch.arange(7) + 0.5) * 4  # 7 bins over x = 40..68
    assert torch.allclose(aligned[0, 0, 0], bin_centres, atol=1e-4)
    # Without the offset every value is read 1.5 pixels to the right of the box.
    assert torch.allclose(plain[0, 0, 0], bin_centres + offset, atol=1e-4)
    with pytest.raises(ValueError, match="grid offsets"):
        PCSCROIPooler(level_offsets=(1.0, 2.0), **common)
