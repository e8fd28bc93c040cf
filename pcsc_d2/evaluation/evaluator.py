"""PCSCEvaluator: frame-mAP and video-mAP of a detector over a video test split.

It collects every key frame's detections, links them into tubes per video and class,
optionally refines the tubes temporally with their actionness, and computes the field's
metrics (ACT conventions unless told otherwise). :func:`compute_metrics` is the model-free
core shared with the command line (``python -m pcsc_d2.evaluation``).
"""
import collections
import dataclasses
import itertools
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.config import configurable
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from tabulate import tabulate

from pcsc_d2.structures import d2_to_gt
from pcsc_d2.tubes.linking import LinkingOptions, Tube, link_video
from pcsc_d2.tubes.refinement import MODES, RefineOptions, refine_tubes
from pcsc_d2.utils.io import atomic_save_json

from .ap import check_convention
from .error_analysis import frame_ap_errors
from .frame_ap import FrameDetections, GroundTruth, frame_ap, frame_mabo, frame_top_box_iou
from .plots import plot_pr_curves
from .video_ap import VIDEO_IOUS_5095, video_ap

__all__ = ["PCSCEvaluator", "compute_metrics", "link_detections", "jsonable"]

logger = logging.getLogger(__name__)


def _pct(x: float) -> float:
    return float(100.0 * x)


def _mean(ap: np.ndarray) -> float:
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def jsonable(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """NaN (a class without GT) -> null, so metric files are strict JSON."""
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in metrics.items()}


def compute_metrics(
    gt: GroundTruth,
    dets: Optional[FrameDetections] = None,
    tubes: Optional[Sequence[Tube]] = None,
    *,
    ap_convention: str = "act",
    frame_iou: float = 0.5,
    video_ious: Sequence[float] = (0.2, 0.5, 0.75),
    tube_nms: float = 0.3,
    errors: bool = True,
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Frame-level and video-level metrics of one split, in percent.

    Args:
        gt: the split's ground truth.
        dets: frame detections (any video indexing; re-indexed on ``gt.videos``), or None.
        tubes: tubes, or None.
        ap_convention: "act" or "voc".
        frame_iou: IoU threshold of frame-AP.
        video_ious: tube-IoU thresholds reported on their own (0.5:0.95 is always added).
        tube_nms: per-video tube NMS threshold.
        errors: also run the frame-AP error analysis, MABO and the top-box IoU.

    Returns:
        (metrics, details). ``metrics`` is flat JSON-able: "frame_mAP@0.5", "MABO", "top_box_IoU",
        "frame_error_gain/<type>", "video_mAP@<t>", "video_mAP@0.5:0.95", per-class
        "frame_AP@0.5-<class>" / "video_AP@<t>-<class>" and "ap_convention". ``details`` keeps
        the PR curves and per-class arrays for figures and tables.
    """
    check_convention(ap_convention)
    metrics: Dict[str, Any] = {"ap_convention": ap_convention}
    details: Dict[str, Any] = {"curves": {}, "aps": {}}
    if dets is not None:
        dets = dets.reindex(gt.videos)
        fr = frame_ap(gt, dets, frame_iou, ap_convention)
        name = f"frame_AP@{frame_iou:g}"
        metrics[f"frame_mAP@{frame_iou:g}"] = _pct(_mean(fr["ap"]))
        for c, label in enumerate(gt.labels):
            metrics[f"{name}-{label}"] = _pct(fr["ap"][c])
        details["curves"][name] = fr
        details["aps"][name] = fr["ap"]
        if errors:
            metrics["MABO"] = _pct(frame_mabo(gt, dets)["mabo"])
            metrics["top_box_IoU"] = _pct(frame_top_box_iou(gt, dets)["top_box_iou"])
            err = frame_ap_errors(gt, dets, fr)
            for t, v in err["gain"].items():
                metrics[f"frame_error_gain/{t}"] = v
                metrics[f"frame_error_share/{t}"] = _pct(err["share"][t])
            metrics["frame_error_gain/missed"] = err["missed"]
            details["errors"] = err
    if tubes is not None:
        threshs = sorted(set(float(t) for t in video_ious) | set(VIDEO_IOUS_5095))
        vr = video_ap(gt, tubes, threshs, ap_convention, tube_nms)
        for t in video_ious:
            metrics[f"video_mAP@{t:g}"] = _pct(_mean(vr["ap"][float(t)]))
        metrics["video_mAP@0.5:0.95"] = _pct(np.mean([_mean(vr["ap"][t]) for t in VIDEO_IOUS_5095]))
        for t in video_ious:
            for c, label in enumerate(gt.labels):
                metrics[f"video_AP@{t:g}-{label}"] = _pct(vr["ap"][float(t)][c])
        metrics["video_tubes_after_nms"] = vr["num_tubes"]
        if 0.5 in vr["ap"]:
            details["curves"]["video-AP@0.5"] = {"precision": vr["precision"][0.5],
                                                 "recall": vr["recall"][0.5]}
            details["aps"]["video-AP@0.5"] = vr["ap"][0.5]
        details["video"] = vr
    return metrics, details


def link_detections(
    per_frame: Dict[Tuple[str, int], Dict[str, np.ndarray]],
    opts: LinkingOptions,
) -> List[Tube]:
    """Link the detections of every video.

    Args:
        per_frame: (video, frame) -> {"boxes" (N, 4) inclusive pixels, "scores" (N,),
            "classes" (N,), optional "actionness" (N,)}. Every processed frame is a key,
            with or without detections.
        opts: linking options.
    """
    by_video: Dict[str, List[Tuple[int, Dict[str, np.ndarray]]]] = collections.defaultdict(list)
    for (video, frame), d in per_frame.items():
        by_video[video].append((frame, d))
    tubes: List[Tube] = []
    for video in sorted(by_video):
        frames = by_video[video]
        extras = None
        if all("actionness" in d for _, d in frames):
            extras = {"actionness": [d["actionness"] for _, d in frames]}
        tubes.extend(
            link_video(
                [f for f, _ in frames], [d["boxes"] for _, d in frames],
                [d["scores"] for _, d in frames], [d["classes"] for _, d in frames],
                extras=extras, opts=opts, video=video,
            )
        )
    return tubes


def _flatten(per_frame: Dict[Tuple[str, int], Dict[str, np.ndarray]]) -> FrameDetections:
    keys = sorted(per_frame)
    videos = sorted({v for v, _ in keys})
    vpos = {v: i for i, v in enumerate(videos)}
    sizes = np.asarray([len(per_frame[k]["scores"]) for k in keys], dtype=np.int64)

    def cat(field: str, shape: Tuple[int, ...], dtype) -> np.ndarray:
        parts = [np.asarray(per_frame[k][field], dtype=dtype).reshape(shape) for k in keys]
        return np.concatenate(parts) if parts else np.zeros((0,) + shape[1:], dtype)

    return FrameDetections(
        videos=videos,
        video=np.repeat(np.asarray([vpos[v] for v, _ in keys], dtype=np.int64), sizes),
        frame=np.repeat(np.asarray([f for _, f in keys], dtype=np.int64), sizes),
        label=cat("classes", (-1,), np.int64),
        score=cat("scores", (-1,), np.float32),
        boxes=cat("boxes", (-1, 4), np.float32),
    )


class PCSCEvaluator(DatasetEvaluator):
    """Frame-mAP and video-mAP (with online linking and optional TR) of a video test split.

    ``process`` keeps, per key frame, the detections converted to the GT's pixel convention.
    ``evaluate`` gathers them on the main process, links tubes per video and class, refines
    them when asked and actionness is present, computes the metrics, logs a per-class table
    and writes (atomically, to ``output_dir``) ``pcsc_detections.json``, ``pcsc_tubes.json``
    (and ``pcsc_tubes_refined.json``), ``pcsc_metrics.json`` and ``pcsc_pr_curves.png``.
    When actionness is present, video metrics are computed with and without TR (suffixes
    "/noTR" and "/TR", plus "/TR-ends" and "/TR-split" for both trimming rules); the unsuffixed
    keys follow ``refine``.
    """

    @configurable
    def __init__(
        self,
        dataset_name: str,
        *,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        tube_options: Optional[LinkingOptions] = None,
        refine_options: Optional[RefineOptions] = None,
        refine: bool = False,
        ap_convention: str = "act",
        frame_iou: float = 0.5,
        video_ious: Sequence[float] = (0.2, 0.5, 0.75),
        tube_nms: float = 0.3,
        write_outputs: bool = True,
        annotations: Optional[Dict[str, Any]] = None,
    ):
        """
        Args:
            dataset_name: a registered test split; its annotations come from
                ``pcsc_d2.data.get_split_annotations(dataset_name)`` (read at evaluate time)
                unless ``annotations`` is given.
            output_dir: where outputs are written (None: nothing is written).
            distributed: gather predictions from all processes before evaluating.
            tube_options: linking options (default: the TUBES.* defaults).
            refine_options: TR options (default: the TUBES.REFINE.* defaults).
            refine: apply TR to the tubes of the main metrics (needs actionness).
            ap_convention: "act" or "voc".
            frame_iou: IoU threshold of frame-AP.
            video_ious: tube-IoU thresholds reported on their own (0.5:0.95 is added).
            tube_nms: per-video tube NMS threshold of video-AP.
            write_outputs: write detections, tubes, metrics and figure to output_dir.
            annotations: the split's {"labels", "videos", "gttubes", "nframes", "resolution"}.
        """
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._tube_options = tube_options or LinkingOptions()
        self._refine_options = refine_options or RefineOptions()
        self._refine = refine
        self._ap_convention = check_convention(ap_convention)
        self._frame_iou = frame_iou
        self._video_ious = tuple(video_ious)
        self._tube_nms = tube_nms
        self._write_outputs = write_outputs
        self._annotations = annotations
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None):
        return {
            "dataset_name": dataset_name,
            "output_dir": output_dir if output_dir is not None else cfg.OUTPUT_DIR,
            "tube_options": LinkingOptions.from_config(cfg),
            "refine_options": RefineOptions.from_config(cfg),
            "refine": cfg.TUBES.REFINE.ENABLED,
            "ap_convention": cfg.TEST.PCSC.AP_CONVENTION,
            "frame_iou": cfg.TEST.PCSC.FRAME_IOU,
            "video_ious": tuple(cfg.TEST.PCSC.VIDEO_IOUS),
            "tube_nms": cfg.TEST.PCSC.TUBE_NMS,
            "write_outputs": cfg.TEST.PCSC.WRITE_OUTPUTS,
        }

    def reset(self):
        self._predictions: List[Tuple[str, int, Dict[str, np.ndarray]]] = []

    def process(self, inputs, outputs):
        """
        Args:
            inputs: the mapper's dicts; "video" and "frame" (1-based) are used.
            outputs: the model's outputs; "instances" with pred_boxes (XYXY_ABS, original
                image coordinates), scores, pred_classes and optional actionness.
        """
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            d = {
                "boxes": d2_to_gt(inst.pred_boxes.tensor.numpy()),
                "scores": inst.scores.numpy().astype(np.float32),
                "classes": inst.pred_classes.numpy().astype(np.int32),
            }
            if inst.has("actionness"):
                d["actionness"] = inst.actionness.numpy().astype(np.float32)
            self._predictions.append((str(inp["video"]), int(inp["frame"]), d))

    def _gather(self) -> Optional[List[Tuple[str, int, Dict[str, np.ndarray]]]]:
        if not self._distributed:
            return self._predictions
        comm.synchronize()
        gathered = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return None
        return list(itertools.chain(*gathered))

    def _get_annotations(self) -> Dict[str, Any]:
        if self._annotations is None:
            from pcsc_d2.data import get_split_annotations

            self._annotations = get_split_annotations(self._dataset_name)
        return self._annotations

    def evaluate(self):
        predictions = self._gather()
        if predictions is None:
            return {}
        if not predictions:
            logger.warning("[PCSCEvaluator] Did not receive valid predictions.")
            return {}
        # A (video, frame) seen twice (e.g. padded distributed sampling) counts once.
        per_frame = {(v, f): d for v, f, d in predictions}
        # Frame-level GT only on the frames that were evaluated (key-frame stride).
        gt = GroundTruth.from_annotations(self._get_annotations()).restrict_to_frames(per_frame)
        dets = _flatten(per_frame)
        tubes = link_detections(per_frame, self._tube_options)
        has_actionness = bool(tubes) and all("actionness" in t.extras for t in tubes)
        if self._refine and not has_actionness:
            logger.warning("TUBES.REFINE is on but the outputs carry no actionness: no TR.")
        kwargs = dict(ap_convention=self._ap_convention, frame_iou=self._frame_iou,
                      video_ious=self._video_ious, tube_nms=self._tube_nms)
        metrics, details = compute_metrics(gt, dets, tubes, **kwargs)
        refined = None
        if has_actionness:
            refined = refine_tubes(tubes, self._refine_options)
            tr_metrics, tr_details = compute_metrics(gt, None, refined, errors=False, **kwargs)
            video_keys = [k for k in tr_metrics if k.startswith("video_mAP")]
            for k in video_keys:
                metrics[k + "/noTR"] = metrics[k]
                metrics[k + "/TR"] = tr_metrics[k]
            # The other trimming rule too (cheap: no detector run), so every evaluation compares
            # TUBES.REFINE.MODE "ends" and "split" on the same tubes: "/TR-ends", "/TR-split".
            for mode in MODES:
                other = tr_metrics
                if mode != self._refine_options.mode:
                    opts = dataclasses.replace(self._refine_options, mode=mode)
                    other, _ = compute_metrics(gt, None, refine_tubes(tubes, opts), errors=False,
                                               **kwargs)
                for k in video_keys:
                    metrics[f"{k}/TR-{mode}"] = other[k]
            if self._refine:
                metrics.update({k: v for k, v in tr_metrics.items() if k.startswith("video_")})
                details["curves"].update(tr_details["curves"])
                details["aps"].update(tr_details["aps"])
        metrics["num_tubes"] = len(refined if (self._refine and refined is not None) else tubes)
        self._log_table(gt, metrics)
        if self._output_dir and self._write_outputs:
            self._write(dets, tubes, refined, metrics, details, gt)
        return collections.OrderedDict(
            {"pcsc": {k: v for k, v in metrics.items() if not isinstance(v, str)}}
        )

    def _log_table(self, gt: GroundTruth, metrics: Dict[str, Any]) -> None:
        cols = [k.split("-", 1)[0] for k in metrics if k.endswith("-" + gt.labels[0])]
        rows = [[label] + [metrics.get(f"{c}-{label}", float("nan")) for c in cols]
                for label in gt.labels]
        rows.append(["mean"] + [metrics.get(c.replace("_AP", "_mAP"), float("nan"))
                                for c in cols])
        table = tabulate(rows, headers=["class"] + cols, floatfmt=".2f", tablefmt="pipe")
        logger.info("PCSC evaluation of %s (AP convention: %s), percent:\n%s",
                    self._dataset_name, self._ap_convention, table)

    def _write(self, dets, tubes, refined, metrics, details, gt) -> None:
        out = self._output_dir
        atomic_save_json(dets.to_json(), os.path.join(out, "pcsc_detections.json"))
        atomic_save_json([t.to_json() for t in tubes], os.path.join(out, "pcsc_tubes.json"))
        if refined is not None:
            atomic_save_json([t.to_json() for t in refined],
                             os.path.join(out, "pcsc_tubes_refined.json"))
        atomic_save_json(jsonable(metrics), os.path.join(out, "pcsc_metrics.json"), indent=1)
        plot_pr_curves(os.path.join(out, "pcsc_pr_curves.png"), gt.labels, details["curves"],
                       details["aps"], self._ap_convention)
        logger.info("Wrote detections, tubes, metrics and PR curves to %s", out)
