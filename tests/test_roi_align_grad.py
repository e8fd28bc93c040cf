"""The sparse RoIAlign backward gives torchvision's gradient, in every case its kernel handles."""
import pytest
import torch
import torchvision

from pcsc_d2.modeling.roi_heads.pooling import fast_roi_align
from pcsc_d2.modeling.roi_heads.roi_align_grad import (
    roi_align_backward_sparse,
    roi_align_sampling,
)


def _rois(g: torch.Generator, num: int, images: int, height: int, width: int, stride: float):
    """Boxes of every kind the kernel meets: inside, across and beyond the border, tiny, empty
    (x2 = x1) and inverted (x2 < x1), on ``images`` images."""
    size = torch.tensor([width, height], dtype=torch.float64) * stride
    xy = torch.rand(num, 2, generator=g, dtype=torch.float64) * size * 1.4 - 0.2 * size
    wh = torch.rand(num, 2, generator=g, dtype=torch.float64) * size / 2
    wh[:3] = torch.tensor([0.5, 0.5], dtype=torch.float64)  # under a pixel
    wh[3] = 0.0  # empty
    wh[4] = -5.0  # inverted
    boxes = torch.cat([xy, xy + wh], dim=1)
    index = torch.randint(0, images, (num, 1), generator=g).to(torch.float64)
    return torch.cat([index, boxes], dim=1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_sparse_backward_equals_torchvisions(aligned, sampling_ratio):
    g = torch.Generator().manual_seed(0)
    n, c, h, w, stride = 2, 3, 11, 14, 4.0
    rois = _rois(g, 40, n, h, w, stride)
    grad = torch.randn(len(rois), c, 5, 4, generator=g, dtype=torch.float64)
    expected = torch.ops.torchvision._roi_align_backward(
        grad, rois, 1 / stride, 5, 4, n, c, h, w, sampling_ratio, aligned
    )
    got = roi_align_backward_sparse(grad, rois, 1 / stride, (5, 4), sampling_ratio, aligned,
                                    (n, c, h, w))
    assert got.shape == (n, c, h, w)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_sampling_map_is_the_forward():
    """A @ features, from the sampling map, is torchvision's forward (so A^T is its gradient)."""
    g = torch.Generator().manual_seed(1)
    n, c, h, w, stride = 2, 5, 9, 13, 8.0
    rois = _rois(g, 30, n, h, w, stride)
    features = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    pixel, out_bin, weight = roi_align_sampling(rois, 1 / stride, (7, 7), 0, True, h, w)
    table = features.permute(0, 2, 3, 1).reshape(-1, c)
    pooled = torch.zeros(len(rois) * 49, c, dtype=torch.float64)
    pooled.index_add_(0, out_bin, table[pixel] * weight[:, None])
    expected = torchvision.ops.roi_align(features, rois, 7, 1 / stride, 0, True)
    torch.testing.assert_close(pooled.view(len(rois), 7, 7, c).permute(0, 3, 1, 2), expected)
    # The empty and inverted boxes sample nothing, as torchvision's loops do.
    assert expected[3:5].abs().sum() == 0
    assert not torch.isin(out_bin, torch.arange(3 * 49, 5 * 49)).any()


def test_fast_roi_align_gradcheck():
    g = torch.Generator().manual_seed(2)
    features = torch.randn(1, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    rois = _rois(g, 6, 1, 6, 7, 2.0)
    assert torch.autograd.gradcheck(
        lambda x: fast_roi_align(x, rois, (3, 3), 0.5, 0, True), (features,)
    )
