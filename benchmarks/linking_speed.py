"""Online linking throughput: frames per second for one class.

A synthetic video of ``--frames`` frames with ``--dets`` detections per frame, all of one
class: three actors moving across the frame (jittered boxes, high scores) and random boxes
(low scores). Generated deterministically. Prints figures, asserts nothing.

    python benchmarks/linking_speed.py [--frames 20000] [--dets 10] [--repeats 3]
"""
import argparse
import time

import numpy as np

from pcsc_d2.tubes import LinkingOptions, link_video


def make_video(num_frames: int, dets_per_frame: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    actors = min(3, dets_per_frame)
    frames = np.arange(1, num_frames + 1)
    boxes, scores = [], []
    for f in frames:
        x = 20 + 100 * np.arange(actors) + 30 * np.sin(f / 50.0 + np.arange(actors))
        a = np.stack([x, np.full(actors, 40.0), x + 50, np.full(actors, 160.0)], 1)
        a += rng.normal(0, 2, a.shape)
        xy = rng.uniform(0, 260, (dets_per_frame - actors, 2))
        r = np.c_[xy, xy + rng.uniform(20, 80, xy.shape)]
        boxes.append(np.r_[a, r].astype(np.float32))
        scores.append(np.r_[rng.uniform(0.5, 1.0, actors),
                            rng.uniform(0.0, 0.4, dets_per_frame - actors)].astype(np.float32))
    labels = [np.zeros(dets_per_frame, dtype=np.int64)] * num_frames
    return frames.tolist(), boxes, scores, labels


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--dets", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    video = make_video(args.frames, args.dets)
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        tubes = link_video(*video, opts=LinkingOptions())
        times.append(time.perf_counter() - t)
    best = min(times)
    print(f"{args.frames} frames x {args.dets} detections of one class -> {len(tubes)} tubes "
          f"({sum(len(t) >= args.frames for t in tubes)} spanning the whole video)")
    print(f"best of {args.repeats}: {best:.3f} s = {args.frames / best:.0f} frames/s per class "
          f"(median {np.median(times):.3f} s)")


if __name__ == "__main__":
    main()
