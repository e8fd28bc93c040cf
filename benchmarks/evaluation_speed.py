"""Seconds per phase of the full video-level evaluation on a UCF-101-24-sized synthetic load.

910 test videos x 200 frames, 24 classes, 10 detections per frame (3 jittered copies of the
actor's box when the action is on, the rest random boxes of random classes), one trimmed GT
tube per video. Generated deterministically; then linked, evaluated (frame-AP, MABO, error
analysis, video-AP at 0.2, 0.5, 0.75 and 0.5:0.95) and timed. Prints figures, asserts nothing.

    python benchmarks/evaluation_speed.py [--videos 910] [--frames 200]
"""
import argparse
import time

import numpy as np

from pcsc_d2.evaluation import FrameDetections, GroundTruth, compute_metrics
from pcsc_d2.tubes import LinkingOptions, link_video

H, W = 240, 320


def make_load(num_videos: int, num_frames: int, num_classes: int, dets_per_frame: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = [f"class{c:02d}" for c in range(num_classes)]
    videos, gttubes = [], {}
    vid, frame, label, score, boxes = [], [], [], [], []
    for v in range(num_videos):
        c = v % num_classes
        name = f"{labels[c]}/v_{v:04d}"
        videos.append(name)
        start = int(rng.integers(1, num_frames // 4))
        end = int(rng.integers(3 * num_frames // 4, num_frames + 1))
        f = np.arange(start, end + 1)
        x = 40 + np.linspace(0, 120, len(f)) + rng.normal(0, 1, len(f))
        gt_boxes = np.stack([x, np.full(len(f), 50.0), x + 60, np.full(len(f), 170.0)], 1)
        gttubes[name] = {c: [np.c_[f, gt_boxes]]}
        # Every frame: dets_per_frame boxes, the first 3 near the actor while it acts.
        frames = np.repeat(np.arange(1, num_frames + 1), dets_per_frame)
        n = len(frames)
        xy = rng.uniform(0, [W - 60, H - 80], (n, 2))
        wh = rng.uniform(30, 120, (n, 2))
        b = np.c_[xy, np.minimum(xy + wh, [W - 1, H - 1])]
        s = rng.uniform(0.0, 0.4, n)
        lab = rng.integers(0, num_classes, n)
        slot = np.tile(np.arange(dets_per_frame), num_frames)
        on = (frames >= start) & (frames <= end) & (slot < 3)
        b[on] = gt_boxes[frames[on] - start] + rng.normal(0, 4, (on.sum(), 4))
        s[on] = rng.uniform(0.3, 1.0, on.sum())
        lab[on] = np.where(rng.random(on.sum()) < 0.85, c, lab[on])
        vid.append(np.full(n, v))
        frame.append(frames)
        label.append(lab)
        score.append(s)
        boxes.append(b)
    ann = {"labels": labels, "videos": videos, "gttubes": gttubes,
           "nframes": {v: num_frames for v in videos}, "resolution": {v: (H, W) for v in videos}}
    dets = FrameDetections(videos, np.concatenate(vid), np.concatenate(frame),
                           np.concatenate(label), np.concatenate(score).astype(np.float32),
                           np.concatenate(boxes).astype(np.float32))
    return ann, dets


def link_all(dets: FrameDetections, num_frames: int, opts: LinkingOptions):
    tubes = []
    bounds = np.flatnonzero(np.r_[True, dets.video[1:] != dets.video[:-1], True])
    for s, e in zip(bounds[:-1], bounds[1:]):
        fb = np.flatnonzero(np.r_[True, dets.frame[s + 1:e] != dets.frame[s:e - 1], True]) + s
        sl = [slice(a, b) for a, b in zip(fb[:-1], fb[1:])]
        tubes += link_video(
            [int(dets.frame[x.start]) for x in sl], [dets.boxes[x] for x in sl],
            [dets.score[x] for x in sl], [dets.label[x] for x in sl], opts=opts,
            video=dets.videos[dets.video[s]],
        )
    return tubes


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=910)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--classes", type=int, default=24)
    parser.add_argument("--dets", type=int, default=10)
    args = parser.parse_args()

    t0 = time.perf_counter()
    ann, dets = make_load(args.videos, args.frames, args.classes, args.dets, seed=0)
    t1 = time.perf_counter()
    tubes = link_all(dets, args.frames, LinkingOptions())
    t2 = time.perf_counter()
    gt = GroundTruth.from_annotations(ann)
    frame_metrics, _ = compute_metrics(gt, dets, None, errors=False)
    t3 = time.perf_counter()
    err_metrics, _ = compute_metrics(gt, dets, None, errors=True)
    t4 = time.perf_counter()
    video_metrics, _ = compute_metrics(gt, None, tubes)
    t5 = time.perf_counter()
    print(f"load: {args.videos} videos x {args.frames} frames, {len(dets)} detections, "
          f"{args.classes} classes; {len(tubes)} tubes")
    print(f"generate          {t1 - t0:7.2f} s (not part of the evaluation)")
    print(f"link              {t2 - t1:7.2f} s ({args.videos * args.frames / (t2 - t1):.0f} "
          f"frames/s, all classes)")
    print(f"frame-AP          {t3 - t2:7.2f} s")
    print(f"MABO + errors     {t4 - t3 - (t3 - t2):7.2f} s")
    print(f"video-AP (11 thr) {t5 - t4:7.2f} s")
    print(f"total evaluation  {t2 - t1 + t4 - t2 + t5 - t4 - (t3 - t2):7.2f} s "
          f"(link + frame-AP + MABO/errors + video-AP)")
    keys = ["frame_mAP@0.5", "MABO", "video_mAP@0.2", "video_mAP@0.5", "video_mAP@0.75",
            "video_mAP@0.5:0.95"]
    merged = {**err_metrics, **video_metrics}
    print("metrics (act):", ", ".join(f"{k} {merged[k]:.2f}" for k in keys))


if __name__ == "__main__":
    main()
