"""The demo's memory against the video's length: peak RSS on a video and on the same video N
times over (the demo streams, so both should be the same).

A test video is written from one synthetic test video's RGB frames (the dataset of the main job,
``datasets/synthetic``), once and ``--times`` times in a row; each is run through
``python -m pcsc_d2.demo`` in its own process (so the peak RSS is its own) with the main job's
TR weights. Prints frames, seconds, peak RSS and the frames the demo held; asserts nothing.

    python benchmarks/demo_memory.py [--weights output/main/tr/model_tr.pth] [--times 10]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import cv2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_video(frames, path: str, times: int, fps: float = 25.0) -> int:
    """Write ``frames`` (file paths) ``times`` times in a row as an MJPG .avi; returns the count."""
    first = cv2.imread(frames[0])
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for _ in range(times):
        for f in frames:
            writer.write(cv2.imread(f))
    writer.release()
    return len(frames) * times


def run(video: str, out: str, args) -> dict:
    """One demo run in a child process: its seconds, its own peak RSS (wait4) and tubes."""
    cmd = [sys.executable, "-m", "pcsc_d2.demo", "--video", video, "--config-file",
           args.config_file, "--weights", args.weights, "--output", out]
    start = time.time()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            sys.exit(f"demo failed on {video}:\n{log.read()[-2000:]}")
    with open(os.path.splitext(out)[0] + ".tubes.json") as f:
        tubes = len(json.load(f))
    return {"seconds": time.time() - start, "peak_gib": usage.ru_maxrss / 2**20, "tubes": tubes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=os.path.join(ROOT, "output", "main", "tr",
                                                          "model_tr.pth"))
    parser.add_argument("--config-file", default=os.path.join(ROOT, "configs",
                                                              "pcsc_synthetic.yaml"))
    parser.add_argument("--dataset", default=os.path.join(ROOT, "datasets", "synthetic"))
    parser.add_argument("--times", type=int, default=10)
    args = parser.parse_args()
    if not os.path.isfile(args.weights):
        sys.exit(f"{args.weights}: not found; run `make run` first (or pass --weights)")
    sys.path.insert(0, ROOT)
    from pcsc_d2.data import load_annotations

    gt = load_annotations(os.path.join(args.dataset, "synthetic-GT.pkl"))
    video = gt["test_videos"][0][0]
    folder = os.path.join(args.dataset, "rgb-images", video)
    frames = [os.path.join(folder, f) for f in sorted(os.listdir(folder))]
    with tempfile.TemporaryDirectory() as tmp:
        print(f"demo on {video} ({len(frames)} frames) and on it {args.times} times over; "
              f"{args.weights}")
        print(f"{'frames':>7} {'seconds':>8} {'peak RSS GiB':>12} {'tubes':>6}")
        for times in (1, args.times):
            path = os.path.join(tmp, f"in{times}.avi")
            n = write_video(frames, path, times)
            r = run(path, os.path.join(tmp, f"out{times}.mp4"), args)
            print(f"{n:>7} {r['seconds']:>8.1f} {r['peak_gib']:>12.2f} {r['tubes']:>6}", flush=True)


if __name__ == "__main__":
    main()
