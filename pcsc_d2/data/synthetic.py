"""A synthetic two-stream action dataset that needs both streams, generated from a seed.

    python -m pcsc_d2.data.synthetic --out datasets/synthetic --seed 0 [--scale N] [--flow dis|tvl1]

It writes the UCF-101-24 layout (rgb-images/, brox-images/, synthetic-GT.pkl) so that every part
of pcsc_d2 runs on it unchanged. What makes it a test of PCSC rather than a toy:

- **the class is the motion**: every actor is drawn from the same appearance distribution
  (a textured two-part figure, colours from one palette); the five classes differ only in how
  the actor moves (right, left, jump, circle, shake), so classifying needs the flow stream;
- **motion alone does not localize**: the background is a texture that drifts, the camera
  jitters (the whole frame shifts), and distractor shapes move across the frame, so flow fires
  everywhere and precise boxes need the RGB stream;
- **untrimmed**: each actor stands still before and after its action and only the action frames
  are annotated, so temporal boundaries are hard;
- several actors in some videos, heights from 26 to 50 pixels, and a pole that occludes part of
  the frame in some videos;
- the flow images are computed from the rendered RGB frames by the project's own extractor
  (pcsc_d2.data.flow; DIS by default for speed), never from the generator's motion.

A second design, ``--design balanced`` (written to datasets/synthetic_balanced, registered as
``synthetic_balanced_{train,test}``), cripples neither stream, to test PCSC's claims on data not
built for them:

- **each class has a look and a motion**: 70% of a class's actors wear the class's colour and
  every class has its own body proportions (width/height 0.38 .. 0.62 by class), on top of the
  same five motions; so an RGB frame tells much of the class, and the motion tells the rest;
- **the background pans** steadily (0.8 to 1.6 pixels a frame) instead of drifting and jittering;
- **decoys**: one or two figures drawn like actors wander slowly across the frame without
  acting (never annotated), so neither looks nor motion alone finds the actors;
- several actors in some videos, the pole, untrimmed actions and the flow extraction as above.

The same seed gives byte-identical frames and GT (every video draws from its own
``numpy.random.default_rng([seed, index])``).
"""
import argparse
import dataclasses
import logging
import math
import os
import time
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import tqdm
from tabulate import tabulate

from pcsc_d2.utils.io import atomic_open, atomic_save_pickle

from .flow import extract_flow_frames, list_frames, worker_pool

__all__ = ["CLASSES", "DESIGNS", "SyntheticConfig", "generate_synthetic_dataset"]

logger = logging.getLogger(__name__)

# A mirrored MoveRight is a MoveLeft: the GT file's "flip_pairs" tells the training mapper to
# swap the two on a horizontal flip.
CLASSES = ["MoveRight", "MoveLeft", "Jump", "Circle", "Shake"]
GT_FILE = "synthetic-GT.pkl"
# design -> its GT file (the folder of the same name is registered as <name>_{train,test}).
DESIGNS = {"motion": GT_FILE, "balanced": "synthetic_balanced-GT.pkl"}
# "balanced": each class's body width / height, and the share of its actors in its colour.
_CLASS_WIDTH = (0.38, 0.44, 0.50, 0.56, 0.62)
_CLASS_COLOUR_SHARE = 0.7
_PALETTE = np.array(
    [[200, 80, 60], [60, 120, 200], [80, 170, 90], [210, 180, 70], [150, 90, 170], [230, 130, 40]],
    dtype=np.float32,
)


@dataclasses.dataclass
class SyntheticConfig:
    """Size of the generated set (``scale`` multiplies the number of videos) and its design:
    "motion" (the class is in the motion only) or "balanced" (see the module docstring)."""

    num_train: int = 32
    num_test: int = 16
    width: int = 160
    height: int = 120
    min_frames: int = 40
    max_frames: int = 64
    scale: int = 1
    flow_method: str = "dis"
    jpeg_quality: int = 90
    design: str = "motion"


def _displacement(label: int, t: np.ndarray, p: Dict) -> np.ndarray:
    """Offset (T, 2) of an actor from its rest position at action time t (frames since start)."""
    if label == 0:  # MoveRight
        return np.stack([p["speed"] * t, 0 * t], -1)
    if label == 1:  # MoveLeft
        return np.stack([-p["speed"] * t, 0 * t], -1)
    if label == 2:  # Jump: repeated bounces up
        return np.stack([0 * t, -p["amp"] * np.abs(np.sin(math.pi * t / p["period"]))], -1)
    if label == 3:  # Circle
        a = 2 * math.pi * t / p["period"]
        return np.stack([p["amp"] * np.sin(a), p["amp"] * (1 - np.cos(a))], -1)
    # Shake: fast horizontal oscillation
    return np.stack([p["amp"] * 0.5 * np.sin(2 * math.pi * t / 4.0), 0 * t], -1)


def _plan_actor(rng, label: int, n: int, cfg: SyntheticConfig, slot: Tuple[float, float]) -> Dict:
    """Where and when one actor acts: its box for every frame and the action frames."""
    h = float(rng.uniform(26, 50))
    if cfg.design == "balanced":
        w = h * (_CLASS_WIDTH[label] + float(rng.uniform(-0.03, 0.03)))
    else:
        w = h * float(rng.uniform(0.4, 0.55))
    length = int(rng.integers(max(12, n // 3), max(13, int(n * 0.6))))
    start = int(rng.integers(3, max(4, n - length - 3)))
    p = {
        "speed": float(rng.uniform(1.2, 2.2)),
        "amp": float(rng.uniform(0.4, 0.7) * h),
        "period": float(rng.uniform(8, 14)),
    }
    t = np.clip(np.arange(n) - start, 0, length - 1).astype(np.float32)
    disp = _displacement(label, t, p)
    # Keep the whole motion inside the frame: pick the rest position from what fits.
    lo_x, hi_x = w / 2 + 2 - disp[:, 0].min(), cfg.width - w / 2 - 3 - disp[:, 0].max()
    lo_y, hi_y = h / 2 + 2 - disp[:, 1].min(), cfg.height - h / 2 - 3 - disp[:, 1].max()
    cx = float(np.clip(slot[0] * cfg.width, lo_x, max(lo_x, hi_x)))
    cy = float(np.clip(rng.uniform(lo_y, max(lo_y, hi_y)), lo_y, max(lo_y, hi_y)))
    centers = np.array([cx, cy], np.float32) + disp
    if cfg.design == "balanced" and rng.random() < _CLASS_COLOUR_SHARE:
        color = _PALETTE[label] * float(rng.uniform(0.85, 1.05))
    else:
        color = _PALETTE[rng.integers(len(_PALETTE))] * float(rng.uniform(0.8, 1.1))
    return {"label": label, "w": w, "h": h, "centers": centers, "start": start,
            "end": start + length - 1, "color": color, "tex_seed": int(rng.integers(1 << 30))}


def _plan_decoy(rng, n: int, cfg: SyntheticConfig) -> Dict:
    """A figure drawn like an actor that wanders slowly without acting ("balanced" design)."""
    h = float(rng.uniform(26, 50))
    w = h * float(rng.uniform(0.38, 0.62))
    heading = float(rng.uniform(0, 2 * math.pi))
    speed = float(rng.uniform(0.3, 0.9))
    turn = rng.uniform(-0.08, 0.08, n).cumsum()  # a slowly bending path
    steps = speed * np.stack([np.cos(heading + turn), np.sin(heading + turn)], -1)
    path = np.cumsum(steps, 0) + rng.uniform([w, h], [cfg.width - w, cfg.height - h])
    # Bounce off the frame's borders (reflect the path into the allowed box).
    for axis, (lo, hi) in enumerate(((w / 2, cfg.width - w / 2), (h / 2, cfg.height - h / 2))):
        span = hi - lo
        x = np.mod(path[:, axis] - lo, 2 * span)
        path[:, axis] = lo + np.where(x > span, 2 * span - x, x)
    color = _PALETTE[rng.integers(len(_PALETTE))] * float(rng.uniform(0.8, 1.1))
    return {"w": w, "h": h, "centers": path.astype(np.float32), "color": color,
            "tex_seed": int(rng.integers(1 << 30))}


def _texture(rng, h: int, w: int, scale: float) -> np.ndarray:
    """A smooth random texture (H, W) in [0, 1]."""
    small = rng.random((max(2, int(h / scale)), max(2, int(w / scale)))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _draw_actor(img: np.ndarray, actor: Dict, center: np.ndarray) -> Optional[List[float]]:
    """Draw a textured figure (body ellipse + head) of the actor's colour in place.

    The figure fills the actor's (w, h) box: the body spans [cy - 0.26 h, cy + 0.5 h] and the
    head (radius 0.14 h) reaches cy - 0.5 h.

    Returns:
        the tight box [x1, y1, x2, y2] (inclusive pixels) of the drawn figure, None when it lies
        entirely outside the image. It is taken from the drawn pixels, so it is exact even where
        the figure is clipped by the image border.
    """
    w, h = actor["w"], actor["h"]
    cx, cy = float(center[0]), float(center[1])
    mask = np.zeros(img.shape[:2], np.uint8)
    # Coordinates in 1/4 pixels (shift=2) so that sub-pixel motion shows in the rendering.
    body = (int(round(cx * 4)), int(round((cy + 0.12 * h) * 4)))
    cv2.ellipse(mask, body, (int(w * 2), int(h * 0.76 * 2)), 0, 0, 360, 255, -1, shift=2)
    head = (int(round(cx * 4)), int(round((cy - 0.36 * h) * 4)))
    cv2.circle(mask, head, int(h * 0.14 * 4), 255, -1, shift=2)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    tex_rng = np.random.default_rng(actor["tex_seed"])
    tex = _texture(tex_rng, 64, 64, 6)
    u = ((xs - cx + w) / (2 * w) * 63).clip(0, 63).astype(int)
    v = ((ys - cy + h) / (2 * h) * 63).clip(0, 63).astype(int)
    shade = 0.6 + 0.6 * tex[v, u][:, None]
    img[ys, xs] = np.clip(actor["color"][None] * shade, 0, 255)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def _render_video(args: Tuple[int, int, str, SyntheticConfig]) -> Dict:
    """Render one video's RGB frames and return its GT (boxes in inclusive pixels)."""
    seed, index, out, cfg = args
    rng = np.random.default_rng([seed, index])
    n = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
    num_actors = 2 if rng.random() < 0.3 else 1
    labels = [int(rng.integers(len(CLASSES))) for _ in range(num_actors)]
    slots = [(0.3, 0.0), (0.72, 0.0)] if num_actors == 2 else [(float(rng.uniform(0.3, 0.7)), 0)]
    actors = [_plan_actor(rng, lab, n, cfg, s) for lab, s in zip(labels, slots)]
    video = f"{CLASSES[labels[0]]}/v_{CLASSES[labels[0]]}_s{seed}_{index:04d}"

    H, W, pad = cfg.height, cfg.width, 40
    if cfg.design == "balanced":  # room for the pan (at most 1.6 pixels a frame)
        pad += int(math.ceil(1.6 * n))
    bg_rgb = np.stack([_texture(rng, H + 2 * pad, W + 2 * pad, s) for s in (9, 13, 17)], -1)
    bg_rgb = 70 + 120 * bg_rgb * rng.uniform(0.5, 1.0, 3)[None, None]
    fine = _texture(rng, H + 2 * pad, W + 2 * pad, 2.5)[..., None]
    background = (bg_rgb * (0.8 + 0.4 * fine)).astype(np.float32)
    drift = rng.uniform(-0.6, 0.6, 2)
    balanced = cfg.design == "balanced"
    if balanced:  # a steady pan instead of a slow drift
        drift = drift / max(float(np.hypot(*drift)), 1e-6) * float(rng.uniform(0.8, 1.6))
    distractors = [
        {
            "pos": rng.uniform([0, 0], [W, H]),
            "vel": rng.uniform(-2.2, 2.2, 2),
            "size": float(rng.uniform(8, 18)),
            "color": rng.uniform(0, 255, 3),
        }
        for _ in range(int(rng.integers(1, 4) if not balanced else rng.integers(0, 2)))
    ]
    decoys = [_plan_decoy(rng, n, cfg) for _ in range(int(rng.integers(1, 3)))] if balanced else []
    pole = None
    if rng.random() < 0.35:
        pole = {
            "x": float(rng.uniform(-10, W)),
            "vx": float(rng.uniform(-1.5, 1.5)),
            "w": float(rng.uniform(5, 10)),
        }
    tubes: Dict[int, List[np.ndarray]] = {}
    rows = [[] for _ in actors]
    for f in range(n):
        # Camera jitter shifts everything in the frame (background, distractors, actors).
        jitter = rng.normal(0, 0.5, 2).clip(-1.5, 1.5) if not balanced else np.zeros(2)
        ox, oy = pad + drift * f - jitter
        frame = cv2.getRectSubPix(background, (W, H), (W / 2 + ox, H / 2 + oy))
        for d in distractors:
            px, py = (d["pos"] + d["vel"] * f) % [W + 20, H + 20] - 10 + jitter
            s = d["size"]
            pts = np.array([[px, py - s], [px + s, py + s * 0.7], [px - s, py + s * 0.7]])
            poly = np.round(pts * 4).astype(np.int32)
            cv2.fillPoly(frame, [poly], d["color"].tolist(), shift=2)
        for decoy in decoys:
            _draw_actor(frame, decoy, decoy["centers"][f])
        for a, actor in enumerate(actors):
            center = actor["centers"][f] + jitter
            box = _draw_actor(frame, actor, center)
            # The box is the whole figure even where the pole hides part of it (as annotators
            # box occluded people); only the action frames are annotated.
            if actor["start"] <= f <= actor["end"] and box is not None:
                rows[a].append([f + 1, *box])
        if pole is not None:
            x = int(pole["x"] + pole["vx"] * f)
            frame[:, max(0, x): max(0, x + int(pole["w"]))] = (90, 70, 50)
        frame = np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255).astype(np.uint8)
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        if not ok:
            raise IOError(f"cannot encode frame {f + 1} of {video}")
        with atomic_open(os.path.join(out, "rgb-images", video, f"{f + 1:05d}.jpg"), "wb") as fh:
            fh.write(buf.tobytes())
    for actor, r in zip(actors, rows):
        tubes.setdefault(actor["label"], []).append(np.asarray(r, np.float32))
    frames = list_frames(os.path.join(out, "rgb-images", video))
    extract_flow_frames(frames, os.path.join(out, "brox-images", video), cfg.flow_method)
    return {"video": video, "nframes": n, "tubes": tubes}


def generate_synthetic_dataset(
    out: str,
    seed: int = 0,
    scale: Optional[int] = None,
    cfg: Optional[SyntheticConfig] = None,
    workers: int = 2,
) -> Dict:
    """Render the dataset into ``out`` (UCF layout) and return its statistics.

    Args:
        out: dataset root; receives rgb-images/, brox-images/ and synthetic-GT.pkl.
        seed: everything is drawn from it (video i uses ``default_rng([seed, i])``).
        scale: multiplies the number of videos (overrides ``cfg.scale`` when given).
        cfg: sizes and flow method; :class:`SyntheticConfig` defaults when None.
        workers: processes rendering videos (the output does not depend on it).

    Returns:
        :func:`dataset_statistics` of the GT plus "seconds", the generation time.
    """
    cfg = cfg or SyntheticConfig()
    if cfg.design not in DESIGNS:
        raise ValueError(f"unknown synthetic design {cfg.design!r}; choose from {list(DESIGNS)}")
    if scale is not None:
        cfg = dataclasses.replace(cfg, scale=scale)
    start = time.time()
    num_train, num_test = cfg.num_train * cfg.scale, cfg.num_test * cfg.scale
    jobs = [(seed, i, out, cfg) for i in range(num_train + num_test)]
    with worker_pool(workers) as pool:
        rendered = pool.imap(_render_video, jobs)
        results = list(tqdm.tqdm(rendered, total=len(jobs), desc="synthetic videos"))
    gt = {
        "labels": list(CLASSES),
        "gttubes": {r["video"]: r["tubes"] for r in results},
        "nframes": {r["video"]: r["nframes"] for r in results},
        "resolution": {r["video"]: (cfg.height, cfg.width) for r in results},
        "train_videos": [[r["video"] for r in results[:num_train]]],
        "test_videos": [[r["video"] for r in results[num_train:]]],
        # A mirrored MoveRight is a MoveLeft: training flips swap their labels.
        "flip_pairs": [["MoveRight", "MoveLeft"]],
    }
    atomic_save_pickle(gt, os.path.join(out, DESIGNS[cfg.design]), protocol=2)
    stats = dataset_statistics(gt)
    stats["seconds"] = round(time.time() - start, 1)
    split_stats = {k: stats[k] for k in ("train", "test")}
    logger.info("Synthetic dataset in %s (%.1f s): %s", out, stats["seconds"], split_stats)
    return stats


def dataset_statistics(gt: Dict) -> Dict:
    """Videos, frames, tubes and boxes per split and class; mean box size; action fraction."""
    stats: Dict = {"classes": gt["labels"]}
    for split in ("train", "test"):
        videos = gt[f"{split}_videos"][0]
        boxes = [t for v in videos for ts in gt["gttubes"][v].values() for t in ts]
        action_frames = sum(
            len({int(r[0]) for ts in gt["gttubes"][v].values() for t in ts for r in t})
            for v in videos
        )
        frames = sum(gt["nframes"][v] for v in videos)
        all_rows = np.concatenate(boxes) if boxes else np.zeros((0, 5))
        # Inclusive pixel boxes: width = x2 - x1 + 1.
        sizes = all_rows[:, 3:5] - all_rows[:, 1:3] + 1
        stats[split] = {
            "videos": len(videos),
            "frames": frames,
            "tubes_per_class": [
                sum(len(gt["gttubes"][v].get(c, [])) for v in videos)
                for c in range(len(gt["labels"]))
            ],
            "boxes": len(all_rows),
            "mean_box_wh": [round(float(x), 1) for x in sizes.mean(0)] if len(sizes) else [0, 0],
            "action_frame_fraction": round(action_frames / max(frames, 1), 3),
        }
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic two-stream action dataset")
    parser.add_argument("--out", default=None,
                        help="default: datasets/synthetic (motion), datasets/synthetic_balanced")
    parser.add_argument("--design", default="motion", choices=sorted(DESIGNS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=1, help="multiply the number of videos")
    parser.add_argument("--flow", default="dis", choices=["dis", "tvl1"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    cfg = SyntheticConfig(flow_method=args.flow, design=args.design)
    if args.out is None:
        args.out = os.path.join("datasets", DESIGNS[args.design][: -len("-GT.pkl")])
    stats = generate_synthetic_dataset(args.out, args.seed, args.scale, cfg, args.workers)
    rows = [
        [
            split,
            stats[split]["videos"],
            stats[split]["frames"],
            stats[split]["boxes"],
            " ".join(map(str, stats[split]["tubes_per_class"])),
            stats[split]["mean_box_wh"],
            stats[split]["action_frame_fraction"],
        ]
        for split in ("train", "test")
    ]
    headers = ["split", "videos", "frames", "GT boxes", "tubes per class", "mean box w,h"]
    headers.append("action frames")
    print(f"Synthetic dataset in {args.out} ({stats['seconds']:.1f} s)")
    print(tabulate(rows, headers=headers))
    print("classes: " + ", ".join(CLASSES))


if __name__ == "__main__":
    main()
