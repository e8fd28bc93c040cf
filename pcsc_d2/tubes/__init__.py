"""Video level of PCSC: online linking of detections into tubes, temporal refinement (TR) and
the training data of TR's actionness classifiers. Pure numpy functions (TR training: torch)."""
from .actionness_data import label_tube_boxes, train_actionness_classifiers
from .linking import LinkingOptions, Tube, box_iou, link_video, paired_box_iou
from .refinement import RefineOptions, refine_tube, refine_tubes

__all__ = [
    "Tube",
    "LinkingOptions",
    "RefineOptions",
    "box_iou",
    "paired_box_iou",
    "link_video",
    "refine_tube",
    "refine_tubes",
    "label_tube_boxes",
    "train_actionness_classifiers",
]
