"""Evaluation of spatio-temporal action detection as the field computes it (ACT conventions):
frame-AP, video-AP, tube IoU, error analysis, MABO, and :class:`PCSCEvaluator` for Detectron2.
Run ``python -m pcsc_d2.evaluation --help`` for the command line."""
from .ap import AP_CONVENTIONS, ap_from_pr, average_precision, greedy_match
from .error_analysis import ERROR_TYPES, classify_false_positives, frame_ap_errors
from .evaluator import PCSCEvaluator, compute_metrics, link_detections
from .frame_ap import FrameDetections, GroundTruth, frame_ap, frame_mabo, frame_top_box_iou
from .video_ap import VIDEO_IOUS_5095, tube_iou, tube_nms, video_ap

__all__ = [
    "AP_CONVENTIONS",
    "ERROR_TYPES",
    "VIDEO_IOUS_5095",
    "FrameDetections",
    "GroundTruth",
    "PCSCEvaluator",
    "ap_from_pr",
    "average_precision",
    "classify_false_positives",
    "compute_metrics",
    "frame_ap",
    "frame_ap_errors",
    "frame_mabo",
    "frame_top_box_iou",
    "greedy_match",
    "link_detections",
    "tube_iou",
    "tube_nms",
    "video_ap",
]
