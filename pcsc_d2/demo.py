"""Run a trained PCSC detector on a video file, streaming, and write it back with its tubes.

    python -m pcsc_d2.demo --video in.mp4 --config-file configs/pcsc_synthetic.yaml \\
        --weights output/main/tr/model_tr.pth --output out.mp4 \\
        [--every N] [--max-frames N] [--flow dis|tvl1] [--score-thresh 0.3] [--opts KEY VALUE ...]

The video is decoded frame by frame; optical flow is computed on the fly (DIS by default,
encoded as the Brox-style images the model was trained on); the detector runs on the clip of K
frames centred on every processed frame (every frame, or every N-th with ``--every N``); the
detections are linked into tubes online, as frames arrive (:class:`pcsc_d2.tubes.OnlineLinker`);
and the annotated video is written as it goes, at the input's fps and size, plus
``<output stem>.tubes.json`` (the tubes with a score >= --score-thresh, or the best 3, in the
order they ended; the evaluation's tube format plus each tube's "class" name).

Memory: the frames a pending clip or the drawing still needs, a few dozen whatever the length
(:mod:`pcsc_d2.streaming`), plus the live tubes' boxes. A frame is drawn a fixed delay after it
was linked (``max(TUBES.MIN_LENGTH, TUBES.MAX_MISSED + 1)`` processed frames), so its boxes are
those the finished tubes will have, and a tube is drawn once it has TUBES.MIN_LENGTH boxes.

Temporal refinement (TR) median-filters a tube's actionness along the whole tube, so it is
applied to each tube when it ends: ``tubes.json`` holds the refined tubes, while the drawn video
shows the online tubes as linked (bounded memory; TR only trims and splits them). TR is on when
the weights carry a trained actionness head (``tools/train_actionness.py`` writes such weights)
and off, with a log line saying so, when they do not.

Checked before any frame is decoded: the output's extension (.mp4, .avi) and folder, the config
file and its keys, the weights file and its match with the config, the input file's existence.
A bad input ends with one ``error: <file>: <problem>`` line and exit status 2.
"""
import argparse
import logging
import os
import time
from itertools import chain
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import torch
import tqdm
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from pcsc_d2.data.datasets import get_split_annotations
from pcsc_d2.data.video import iter_frames, open_video
from pcsc_d2.engine import PCSCCheckpointer
from pcsc_d2.engine.checkpoint import check_checkpoint_file
from pcsc_d2.engine.checks import load_pcsc_cfg
from pcsc_d2.streaming import ClipBuffer, DelayedDrawer, TubeWriter, VideoSink
from pcsc_d2.structures import d2_to_gt
from pcsc_d2.tubes import LinkingOptions, RefineOptions, refine_tubes
from pcsc_d2.tubes.linking import OnlineLinker
from pcsc_d2.utils.errors import (
    INPUT_ERRORS,
    CorruptFileError,
    InputError,
    exit_with_error,
    require_file,
)

__all__ = ["actionness_head_state", "check_output", "load_demo_model", "run_demo"]

logger = logging.getLogger("pcsc_d2.demo")

OUTPUT_EXTENSIONS = (".mp4", ".avi")


def check_output(path: str) -> None:
    """The output video can be written: a known extension, an existing writable folder."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in OUTPUT_EXTENSIONS:
        raise InputError(f"{path}: output extension {ext or '(none)'!r} is not supported; use "
                         f"{' or '.join(OUTPUT_EXTENSIONS)}")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected the video file to write")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"{path}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{path}: output folder {folder} is not writable")


class _ActionnessProbe(PCSCCheckpointer):
    """Reads what a checkpoint holds of the actionness head (through the checkpointer: same
    formats, same errors) without loading it into a model."""

    def _load_model(self, checkpoint: Dict) -> None:
        state = checkpoint.get("model", {})
        self.has_head = "actionness_head.weight" in state
        # Checkpoints from before the "trained" flag carried the head only once TR trained it.
        flag = state.get("actionness_head.trained", True)
        self.trained = self.has_head and bool(flag)
        return None


def actionness_head_state(weights: str) -> Tuple[bool, bool]:
    """(whether a checkpoint carries the actionness head, whether TR's training set it)."""
    probe = _ActionnessProbe(torch.nn.Module())
    probe.load(weights)
    return probe.has_head, probe.trained


def load_demo_model(config_file: str, weights: str, opts: Sequence[str] = ()):
    """Config and model for the demo, every file checked, TR set from the weights.

    Returns:
        (cfg, model in eval mode, whether TR is on).
    """
    cfg = load_pcsc_cfg(config_file, list(opts) + ["MODEL.WEIGHTS", weights])
    check_checkpoint_file(weights, "checkpoint (--weights)")
    has_head, use_tr = actionness_head_state(weights)
    if use_tr:
        logger.info("%s carries a trained actionness head: temporal refinement (TR) is on",
                    weights)
    else:
        what = "an untrained actionness head" if has_head else "no actionness head"
        logger.info("%s carries %s: tubes are not temporally refined (TR off; "
                    "tools/train_actionness.py trains the head)", weights, what)
    # Build exactly what the weights hold, so that they load strictly.
    cfg.MODEL.PCSC.ACTIONNESS.ENABLED = has_head
    cfg.TUBES.REFINE.ENABLED = use_tr
    cfg.freeze()
    model = build_model(cfg)
    PCSCCheckpointer(model, strict=True).load(weights)
    model.eval()
    return cfg, model, use_tr


def _class_names(cfg: CfgNode) -> List[str]:
    try:
        return get_split_annotations(cfg.DATASETS.TEST[0])["labels"]
    except (OSError, ValueError, KeyError, IndexError):
        return [str(i) for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)]


@torch.no_grad()
def _detect(model, batch: List[Dict]) -> List[Dict]:
    """Per key frame: boxes (N, 4) in the GT pixel convention, scores, classes[, actionness]."""
    out = []
    for result in model(batch):
        inst = result["instances"].to("cpu")
        det = {"boxes": d2_to_gt(inst.pred_boxes.tensor.numpy()), "scores": inst.scores.numpy(),
               "classes": inst.pred_classes.numpy()}
        if inst.has("actionness"):
            det["actionness"] = inst.actionness.numpy()
        out.append(det)
    return out


def run_demo(cfg: CfgNode, model, video: str, output: str, *, every: int = 1,
             max_frames: Optional[int] = None, flow: str = "dis", score_thresh: float = 0.3,
             use_tr: bool = False, class_names: Optional[Sequence[str]] = None) -> Dict:
    """Stream ``video`` through the detector and the online linker (module docstring).

    Returns:
        {"frames", "processed", "tubes", "fps", "size": (W, H), "max_frames_held", "seconds"}.
    """
    start = time.time()
    names = list(class_names or _class_names(cfg))
    cap, fps = open_video(video)
    total = cap.get(cv2.CAP_PROP_FRAME_COUNT)  # a progress hint only (MP4s may report junk)
    cap.release()
    frames = iter_frames(video, max_frames)
    first = next(frames)
    height, width = first.shape[:2]
    transform = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    resize = transform.get_transform(first).apply_image
    buffer = ClipBuffer(cfg.INPUT.NUM_FRAMES, every, resize, flow)
    opts = LinkingOptions.from_config(cfg)
    linker = OnlineLinker(opts, video=os.path.basename(video))
    delay = max(opts.min_length, opts.max_missed + 1) * every
    drawer = DelayedDrawer(names, delay, opts.min_length, score_thresh)
    refine = RefineOptions.from_config(cfg) if use_tr else None
    sink = VideoSink(output, fps, (width, height))
    json_path = os.path.splitext(output)[0] + ".tubes.json"
    tubes_out = TubeWriter(json_path, names, score_thresh)
    batch_size = max(1, cfg.TEST.PCSC.BATCH_SIZE)
    pending: List[Dict] = []
    state = {"linked": 0, "processed": 0}

    def link(batch: List[Dict]) -> None:
        for inp, det in zip(batch, _detect(model, batch)):
            extras = {"actionness": det["actionness"]} if use_tr else None
            ended = linker.step(inp["frame"], det["boxes"], det["scores"], det["classes"], extras)
            tubes_out.add(refine_tubes(ended, refine) if use_tr else ended)
            drawer.add_ended(ended)
            state["linked"], state["processed"] = inp["frame"], state["processed"] + 1

    def take_ready() -> None:
        for key in buffer.ready():
            rgb, flow_clip = buffer.clip(key)
            pending.append({"rgb": rgb, "flow": flow_clip, "height": height, "width": width,
                            "video": linker.video, "frame": key})

    known = [int(x) for x in (total, max_frames) if x and 0 < x < 1e9]
    bar = tqdm.tqdm(total=min(known) if known else None, unit="frame", desc="demo")
    try:
        for frame in chain([first], frames):
            buffer.push(frame)
            bar.update(1)
            take_ready()
            while len(pending) >= batch_size:
                link(pending[:batch_size])
                del pending[:batch_size]
            for drawn in drawer.draw_ready(buffer.frames, state["linked"], linker):
                sink.write(drawn)
            buffer.release(drawer.next_frame)
            bar.set_postfix(live_tubes=len(linker.live_tubes), refresh=False)
        buffer.end()
        take_ready()
        for i in range(0, len(pending), batch_size):
            link(pending[i:i + batch_size])
        ended = linker.finish()
        tubes_out.add(refine_tubes(ended, refine) if use_tr else ended)
        drawer.add_ended(ended)
        for drawn in drawer.draw_ready(buffer.frames, state["linked"], linker, final=True):
            sink.write(drawn)
        sink.close()
        num_tubes = tubes_out.close()
    except BaseException:
        sink.abort()
        tubes_out.abort()
        raise
    finally:
        bar.close()
    if sink.frames != buffer.count:
        raise RuntimeError(f"{output}: wrote {sink.frames} of {buffer.count} frames")
    stats = {"frames": buffer.count, "processed": state["processed"], "tubes": num_tubes,
             "fps": fps, "size": (width, height), "max_frames_held": buffer.max_held,
             "seconds": round(time.time() - start, 1)}
    logger.info("Wrote %s (%d frames, %dx%d, %.3g fps) and %s (%d tubes%s)", output,
                buffer.count, width, height, fps, json_path, num_tubes,
                ", refined by TR" if use_tr else "")
    return stats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pcsc_d2.demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True, help="input video (any file OpenCV reads)")
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True, help="trained checkpoint (.pth)")
    parser.add_argument("--output", required=True, help="annotated video (.mp4 or .avi)")
    parser.add_argument("--flow", default="dis", choices=["dis", "tvl1"])
    parser.add_argument("--every", type=int, default=1,
                        help="detect on every N-th frame, link across the others")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    parser.add_argument("--score-thresh", type=float, default=0.3,
                        help="tubes drawn and written have at least this score")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides: KEY VALUE ...")
    return parser


def main(argv: Optional[List[str]] = None) -> Dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    try:
        for flag, value in (("--every", args.every), ("--max-frames", args.max_frames)):
            if value is not None and value < 1:
                raise InputError(f"{flag} {value}: expected a positive number")
        check_output(args.output)
        require_file(args.video, "video")
        if os.path.getsize(args.video) == 0:
            raise CorruptFileError(f"{args.video}: empty file, expected a video")
        cfg, model, use_tr = load_demo_model(args.config_file, args.weights, args.opts)
        return run_demo(cfg, model, args.video, args.output, every=args.every,
                        max_frames=args.max_frames, flow=args.flow,
                        score_thresh=args.score_thresh, use_tr=use_tr)
    except INPUT_ERRORS as e:
        exit_with_error(e)


if __name__ == "__main__":
    main()
