"""The CPU fast paths compute what the reference paths compute.

- I3D's 3D convolutions go to oneDNN on channels-last clips, forward and (from
  ONEDNN_BACKWARD_MIN_POSITIONS output positions) backward; ``torch.backends.mkldnn.flags(
  enabled=False)`` gives PyTorch's own choice (slow_conv3d) as the reference.
- 'SAME' max-pooling uses implicit padding and ceil_mode instead of an explicit padded copy.
- RoIAlign runs over threads (PCSCROIPooler): bit-identical forward, the same gradients up to
  the order of additions.
"""
import itertools
import os

import pytest
import torch
import torch.nn.functional as F

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import pcsc_d2.modeling  # noqa: F401
from pcsc_d2.config import add_pcsc_config
from pcsc_d2.modeling.backbone.conv3d_cpu import ONEDNN_BACKWARD_MIN_POSITIONS, conv3d
from pcsc_d2.modeling.backbone.i3d import I3D, _same_padding, same_pool_args
from pcsc_d2.modeling.roi_heads.pooling import PCSCROIPooler
from pcsc_d2.utils.flops import component_macs, model_macs, training_macs

_TINY = os.path.join(os.path.dirname(__file__), "..", "configs", "quick", "pcsc_tiny.yaml")


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_same_max_pool_without_a_padded_copy_matches_explicit_padding():
    """Every size, kernel and stride combination of (T, H, W) gives the explicit result."""
    g = torch.Generator().manual_seed(0)
    implicit = 0
    for kernel, stride in [((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2)),
                           ((3, 3, 3), (1, 1, 1))]:
        for size in itertools.product([1, 2, 3, 4, 5, 8], [1, 6, 7, 15, 16, 33], [4, 9, 20]):
            x = torch.rand((1, 2) + size, generator=g)  # >= 0, as after a ReLU
            _, pads = _same_padding(x, kernel, stride)
            expected = F.max_pool3d(F.pad(x, pads), kernel, stride)
            args = same_pool_args(size, kernel, stride)
            if args is None:
                continue
            implicit += 1
            got = F.max_pool3d(x, kernel, stride, args[0], ceil_mode=args[1])
            assert torch.equal(got, expected), (size, kernel, stride, args)
    assert implicit > 200  # the shortcut covers the sizes I3D meets, not a handful


def test_i3d_onednn_path_matches_pytorch_default_path():
    torch.manual_seed(0)
    net = I3D(norm="FrozenBN").eval()
    for m in net.modules():  # non-trivial frozen statistics, so the folded bias matters
        if hasattr(m, "running_mean"):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.rand(1, 3, 8, 64, 80) * 2 - 1
    with torch.no_grad():
        fast = net(x)
        with torch.backends.mkldnn.flags(enabled=False):
            ref = net(x)
    assert fast["Mixed_5c"].is_contiguous(memory_format=torch.channels_last_3d)
    for name in ref:
        scale = ref[name].abs().max()
        assert torch.allclose(fast[name], ref[name], atol=1e-5 * scale, rtol=1e-4), name


def test_i3d_onednn_path_trains_like_the_default_path():
    torch.manual_seed(0)
    net = I3D(out_features=("Mixed_3c",), freeze_at=2, norm="FrozenBN").train()
    x = torch.rand(2, 3, 4, 32, 32) * 2 - 1
    grads = []
    for enabled in (True, False):
        net.zero_grad()
        with torch.backends.mkldnn.flags(enabled=enabled):
            net(x)["Mixed_3c"].square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], rtol=1e-3, atol=1e-6), name


@pytest.mark.parametrize("kernel, stride, padding, bias, input_grad", [
    ((3, 3, 3), (1, 1, 1), (1, 1, 1), True, True),
    ((3, 3, 3), (2, 2, 2), (1, 1, 1), False, True),
    ((3, 3, 3), (1, 1, 1), (1, 1, 1), False, False),  # the first trainable unit: no input grad
    ((1, 3, 3), (1, 2, 2), (0, 1, 1), True, True),
    ((7, 7, 7), (2, 2, 2), (3, 3, 3), True, False),
])
@pytest.mark.parametrize("size", [(6, 16, 20), (2, 4, 6)])  # above and below the threshold
def test_conv3d_backward_matches_the_default_path(kernel, stride, padding, bias, input_grad, size):
    """Gradients of every input equal PyTorch's own (slow_conv3d) up to fp32 rounding; below
    ONEDNN_BACKWARD_MIN_POSITIONS output positions they are those of the default oneDNN
    forward's autograd formula, bit for bit."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn((2, 5) + size, generator=g).contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_(input_grad)
    w = torch.randn((7, 5) + kernel, generator=g).requires_grad_()
    b = torch.randn(7, generator=g).requires_grad_() if bias else None
    leaves = [t for t in (x, w, b) if t is not None and t.requires_grad]

    y = conv3d(x, w, b, stride, padding)
    assert type(y.grad_fn).__name__ == "_OneDNNConv3dBackward"
    dy = torch.randn(y.shape, generator=g)
    fast = torch.autograd.grad(y, leaves, dy)
    with torch.backends.mkldnn.flags(enabled=False):
        y_ref = conv3d(x, w, b, stride, padding)
        assert type(y_ref.grad_fn).__name__ == "ConvolutionBackward0"  # F.conv3d, PyTorch's choice
        ref = torch.autograd.grad(y_ref, leaves, dy)
    assert torch.allclose(y, y_ref, atol=1e-4, rtol=1e-4)
    for got, want in zip(fast, ref):
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    if input_grad:  # the gradient comes back in the activations' layout
        assert fast[0].is_contiguous(memory_format=torch.channels_last_3d)

    positions = y.shape[2] * y.shape[3] * y.shape[4]
    if positions < ONEDNN_BACKWARD_MIN_POSITIONS:
        plain = torch.ops.aten.mkldnn_convolution(x, w, b, list(padding), list(stride), [1] * 3, 1)
        assert all(torch.equal(a, c) for a, c in zip(fast, torch.autograd.grad(plain, leaves, dy)))


def test_conv3d_keeps_the_plain_path_where_no_backward_pays():
    """1x1x1 kernels and calls without a gradient keep oneDNN's own op (no wrapper)."""
    x = torch.randn(1, 4, 4, 8, 8).contiguous(memory_format=torch.channels_last_3d)
    w = torch.randn(6, 4, 1, 1, 1, requires_grad=True)
    assert type(conv3d(x, w, None, (1, 1, 1), (0, 0, 0)).grad_fn).__name__ != "_OneDNNConv3dBackward"
    with torch.no_grad():
        assert conv3d(x, torch.randn(6, 4, 3, 3, 3), None, (1, 1, 1), (1, 1, 1)).grad_fn is None


def _pooler_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randn(2, 8, 64 // s, 80 // s, generator=g) for s in (4, 8, 16, 32)]
    boxes = []
    for _ in range(2):
        xy = torch.rand(150, 2, generator=g) * torch.tensor([250.0, 200.0])
        wh = 4 + torch.rand(150, 2, generator=g) ** 2 * 200
        boxes.append(Boxes(torch.cat([xy, xy + wh], 1)))
    return maps, boxes


def _poolers():
    kw = dict(output_size=7, scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32), sampling_ratio=0,
              pooler_type="ROIAlignV2")
    return ROIPooler(**kw), PCSCROIPooler(**kw)


def test_threaded_pooler_forward_is_bit_identical(two_threads):
    reference, threaded = _poolers()
    maps, boxes = _pooler_inputs()
    assert torch.equal(threaded(maps, boxes), reference(maps, boxes))
    other = [m.flip(-1) for m in maps]
    a, b = threaded.pool_many([maps, other], boxes)
    assert torch.equal(a, reference(maps, boxes)) and torch.equal(b, reference(other, boxes))


def test_threaded_pooler_backward_matches(two_threads):
    reference, threaded = _poolers()
    grads = []
    for pooler in (reference, threaded):
        maps, boxes = _pooler_inputs()
        maps = [m.requires_grad_() for m in maps]
        weights = torch.linspace(-1, 1, 8 * 49).view(1, 8, 7, 7)
        (pooler(maps, boxes) * weights).sum().backward()
        # A level without boxes gets no gradient (None) here and zeros in detectron2's pooler.
        grads.append([torch.zeros_like(m) if m.grad is None else m.grad for m in maps])
    for ref, got in zip(*grads):
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5)


def _tiny_cfg():
    cfg = get_cfg()
    add_pcsc_config(cfg)
    cfg.merge_from_file(_TINY)
    # Every box moves on to the next stage, so that all four stages run on many boxes.
    cfg.MODEL.PCSC.COOP_SCORE_THRESH = -1.0
    return cfg


def _tiny_inputs():
    g = torch.Generator().manual_seed(1)
    inst = Instances((64, 96))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 40.0, 50.0]]))
    inst.gt_classes = torch.tensor([1])
    return [{"rgb": torch.randint(0, 256, (3, 4, 64, 96), generator=g, dtype=torch.uint8),
             "flow": torch.randint(0, 256, (3, 4, 64, 96), generator=g, dtype=torch.uint8),
             "instances": inst, "height": 64, "width": 96}]


def test_detections_of_the_fast_paths_equal_the_reference(two_threads):
    """The whole detector: oneDNN + threaded pooling against PyTorch's default kernels with
    serial pooling (one thread): the same detections up to fp32 noise."""
    torch.manual_seed(0)
    model = build_model(_tiny_cfg()).eval()
    inputs = _tiny_inputs()
    with torch.no_grad():
        fast = model(inputs)[0]["instances"]
        torch.set_num_threads(1)
        with torch.backends.mkldnn.flags(enabled=False):
            ref = model(inputs)[0]["instances"]
    assert len(ref) > 10 and len(fast) == len(ref)
    assert torch.equal(fast.pred_classes, ref.pred_classes)
    assert torch.allclose(fast.scores, ref.scores, atol=1e-5)
    assert torch.allclose(fast.pred_boxes.tensor, ref.pred_boxes.tensor, atol=1e-3)


def test_macs_by_hand_and_by_component():
    torch.manual_seed(0)
    model = build_model(_tiny_cfg()).eval()
    inputs = _tiny_inputs()
    per_module = model_macs(model, inputs)
    # Conv3d_1a_7x7 on a (3, 4, 64, 96) clip (padded to 64x96): output (64, 2, 32, 48), each
    # output element is 3 x 7 x 7 x 7 multiply-adds; the oneDNN op must be counted.
    assert per_module["backbone.bottom_up.rgb.Conv3d_1a_7x7"] == 64 * 2 * 32 * 48 * 3 * 343
    parts = component_macs(per_module)
    assert parts["I3D rgb"] == parts["I3D flow"] > 0
    assert {"FPNs", "RPNs", "heads stage 0", "heads stage 4"} <= set(parts)
    assert sum(v for k, v in parts.items() if k != "total") == pytest.approx(parts["total"])
    model.train()
    with EventStorage():
        train = model_macs(model, inputs)
    # FREEZE_AT 3: the stem (Conv3d_1a..2c) has no backward, every later layer twice its forward.
    stem = sum(train[f"backbone.bottom_up.{s}.{u}"] for s in ("rgb", "flow")
               for u in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"))
    assert training_macs(model, train) == pytest.approx(3 * train[""] - 2 * stem, rel=1e-6)


def test_inference_autocast_keeps_fp32_outputs():
    """TEST.PCSC.AMP runs the detector under autocast (bf16 here; a GPU's fast path) and still
    returns fp32 boxes, scores and features close to the fp32 run's."""
    cfg = _tiny_cfg()
    cfg.MODEL.PCSC.OUTPUT_FEATURES = True
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    cfg.TEST.PCSC.AMP = True
    torch.manual_seed(0)
    amp_model = build_model(cfg).eval()
    assert amp_model.inference_dtype == torch.bfloat16
    inputs = _tiny_inputs()
    with torch.no_grad():
        ref = model(inputs)[0]["instances"]
        got = amp_model(inputs)[0]["instances"]
    for field in ("scores", "features"):
        assert got.get(field).dtype == torch.float32
    assert got.pred_boxes.tensor.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: the top detection agrees to about 1%.
    assert abs(float(got.scores[0]) - float(ref.scores[0])) < 0.02


def test_modeling_code_never_moves_tensors_to_the_host():
    """The detector's code is device-agnostic: no .cpu(), .numpy(), .item() or .tolist() (each a
    GPU->CPU copy and a sync), so a CUDA model keeps every tensor on the GPU until the caller
    takes the outputs (once per key frame)."""
    import ast
    import pathlib

    root = pathlib.Path(pcsc_d2.modeling.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("cpu", "numpy", "item", "tolist"):
                    offenders.append(f"{path.name}:{node.lineno} .{node.func.attr}()")
    assert len(list(root.rglob("*.py"))) > 8 and offenders == []
