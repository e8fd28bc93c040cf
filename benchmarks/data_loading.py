#!/usr/bin/env python
"""Clips per second of the two-stream clip mapper through a DataLoader (K=8, 240x320 JPEGs).

    python benchmarks/data_loading.py [--workers 2] [--clips 200] [--num-frames 8]

Builds a temporary UCF-layout set of 240x320 JPEG frames (8 videos x 40 frames, RGB and flow),
then times detectron2's training loader (random resize at 240 px, random flip) over
PCSCClipMapper. Prints clips/s; the target on a 2-core machine is >= 50.
"""
import argparse
import os
import tempfile
import time

import cv2
import numpy as np
from detectron2.config import get_cfg
from detectron2.data import build_detection_train_loader

from pcsc_d2.config import add_pcsc_config
from pcsc_d2.data import PCSCClipMapper, register_action_dataset, save_annotations
from detectron2.data import DatasetCatalog


def make_dataset(root: str, videos: int = 8, frames: int = 40) -> None:
    rng = np.random.default_rng(0)
    gt = {"labels": ["a"], "gttubes": {}, "nframes": {}, "resolution": {},
          "train_videos": [[]], "test_videos": [[]]}
    for v in range(videos):
        name = f"a/v{v}"
        base = cv2.resize((rng.random((60, 80, 3)) * 255).astype(np.uint8), (320 + frames, 240))
        for kind in ("rgb-images", "brox-images"):
            os.makedirs(os.path.join(root, kind, name))
            for i in range(frames):
                cv2.imwrite(os.path.join(root, kind, name, f"{i + 1:05d}.jpg"), base[:, i:i + 320])
        gt["gttubes"][name] = {0: [np.array([[f, 50, 40, 150, 200] for f in range(1, frames + 1)],
                                            np.float32)]}
        gt["nframes"][name], gt["resolution"][name] = frames, (240, 320)
        gt["train_videos"][0].append(name)
    save_annotations(gt, os.path.join(root, "gt.pkl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--num-frames", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        make_dataset(root)
        register_action_dataset("bench_train", root, "gt.pkl", 1, True, num_frames=args.num_frames)
        cfg = get_cfg()
        add_pcsc_config(cfg)
        cfg.INPUT.NUM_FRAMES = args.num_frames
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (240,), 400
        loader = build_detection_train_loader(
            dataset=DatasetCatalog.get("bench_train"), mapper=PCSCClipMapper(cfg, is_train=True),
            total_batch_size=1, num_workers=args.workers, aspect_ratio_grouping=False,
        )
        it = iter(loader)
        for _ in range(10):  # warm up the workers
            next(it)
        start = time.perf_counter()
        for _ in range(args.clips):
            batch = next(it)
        elapsed = time.perf_counter() - start
        shape = tuple(batch[0]["rgb"].shape)
        del it, loader  # stop the workers before the temporary folder goes
    print(f"K={args.num_frames}, 240x320 JPEGs, {args.workers} workers: "
          f"{args.clips / elapsed:.1f} clips/s (each clip: RGB + flow, {shape})")


if __name__ == "__main__":
    main()
