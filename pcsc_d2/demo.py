"""Run a trained PCSC detector on a video file and write it back with its action tubes.

    python -m pcsc_d2.demo --video in.mp4 --config-file configs/pcsc_synthetic.yaml \
        --weights output/main/tr/model_tr.pth --output out.mp4 [--opts KEY VALUE ...]

The video is decoded, optical flow is computed on the fly (DIS, encoded as the Brox-style images
the model was trained on), the detector runs on a sliding clip of K frames centred on every
frame, detections are linked into tubes (and refined when the config enables TR and the weights
carry the actionness head), and the annotated video plus ``<output>.tubes.json`` are written.
"""
import argparse
import logging
import os
from typing import List

import cv2
import numpy as np
import torch
import tqdm
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from pcsc_d2.data.datasets import clip_frame_indices, get_split_annotations
from pcsc_d2.data.flow import compute_flow, encode_flow
from pcsc_d2.engine import PCSCCheckpointer, get_pcsc_cfg
from pcsc_d2.structures import d2_to_gt
from pcsc_d2.tubes import LinkingOptions, RefineOptions, link_video, refine_tubes
from pcsc_d2.utils.io import atomic_save_json
from pcsc_d2.utils.visualize import draw_boxes, tube_boxes_by_frame, write_video

__all__ = ["read_video", "flow_images", "detect_video"]

logger = logging.getLogger("pcsc_d2.demo")


def read_video(path: str) -> List[np.ndarray]:
    """All frames of a video file as (H, W, 3) uint8 RGB arrays."""
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise IOError(f"cannot open video {path}")
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise IOError(f"no frame could be decoded from {path}")
    return frames


def flow_images(frames: List[np.ndarray], method: str = "dis") -> List[np.ndarray]:
    """Brox-style flow images, one per frame (image i: flow i -> i+1; the last repeats)."""
    out = []
    for prev, nxt in tqdm.tqdm(
        zip(frames[:-1], frames[1:]), total=len(frames) - 1, desc=f"flow ({method})"
    ):
        out.append(encode_flow(compute_flow(prev, nxt, method=method)))
    out.append(out[-1] if out else np.full_like(frames[0], 128))
    return out


@torch.no_grad()
def detect_video(cfg, model, frames: List[np.ndarray], flows: List[np.ndarray]) -> List[dict]:
    """Per-frame detections of the model, boxes in the GT pixel convention.

    Returns:
        one dict per frame: boxes (N, 4), scores (N,), classes (N,), and actionness (N,) when the
        model outputs it.
    """
    k, n = cfg.INPUT.NUM_FRAMES, len(frames)
    h, w = frames[0].shape[:2]
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    transform = resize.get_transform(frames[0])
    rgb = [transform.apply_image(f) for f in frames]
    flow = [transform.apply_image(f) for f in flows]

    def clip(images: List[np.ndarray], idx: List[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([images[i - 1] for i in idx]).transpose(3, 0, 1, 2).copy())

    results = []
    for frame in tqdm.tqdm(range(1, n + 1), desc="detector"):
        idx = clip_frame_indices(frame, n, k)
        inputs = [{"rgb": clip(rgb, idx), "flow": clip(flow, idx), "height": h, "width": w,
                   "video": "demo", "frame": frame}]
        inst = model(inputs)[0]["instances"].to("cpu")
        det = {
            "boxes": d2_to_gt(inst.pred_boxes.tensor.numpy()),
            "scores": inst.scores.numpy(),
            "classes": inst.pred_classes.numpy(),
        }
        if inst.has("actionness"):
            det["actionness"] = inst.actionness.numpy()
        results.append(det)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--output", required=True, help="annotated video (.mp4, .avi or .gif)")
    parser.add_argument("--flow", default="dis", choices=["dis", "tvl1"])
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")

    cfg = get_pcsc_cfg(args.config_file, args.opts + ["MODEL.WEIGHTS", args.weights])
    has_head = cfg.MODEL.PCSC.ACTIONNESS.ENABLED
    model = build_model(cfg)
    PCSCCheckpointer(model, strict=True).load(args.weights)
    model.eval()

    frames = read_video(args.video)
    logger.info("%s: %d frames of %dx%d", args.video, len(frames), *frames[0].shape[1::-1])
    dets = detect_video(cfg, model, frames, flow_images(frames, args.flow))
    extras = {"actionness": [d["actionness"] for d in dets]} if has_head else None
    tubes = link_video(
        list(range(1, len(frames) + 1)),
        [d["boxes"] for d in dets], [d["scores"] for d in dets], [d["classes"] for d in dets],
        extras=extras, opts=LinkingOptions.from_config(cfg), video=os.path.basename(args.video),
    )
    if has_head and cfg.TUBES.REFINE.ENABLED:
        tubes = refine_tubes(tubes, RefineOptions.from_config(cfg))
    tubes = [t for t in tubes if t.score >= 0.3] or tubes[:3]
    try:
        names = get_split_annotations(cfg.DATASETS.TEST[0])["labels"]
    except (FileNotFoundError, KeyError, IndexError):
        names = [str(i) for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)]
    per_frame = tube_boxes_by_frame([t.to_json() for t in tubes])
    drawn = [draw_boxes(f, per_frame.get(i + 1, []), names) for i, f in enumerate(frames)]
    write_video(drawn, args.output, fps=10)
    atomic_save_json([t.to_json() for t in tubes], os.path.splitext(args.output)[0] + ".tubes.json")
    logger.info("Wrote %s with %d tubes", args.output, len(tubes))


if __name__ == "__main__":
    main()
