"""The one place where box conventions meet.

The field's ground truth (UCF101v2-GT.pkl, JHMDB-GT.pkl) stores boxes as 0-indexed,
*inclusive* pixel corners: a box covering pixels 10..19 has x1 = 10, x2 = 19, and its area
is (x2 - x1 + 1) * (y2 - y1 + 1). Detectron2's ``BoxMode.XYXY_ABS`` is continuous: the same
box is [10, 20). The data layer converts GT with :func:`gt_to_d2` when it builds dataset
dicts; evaluation converts predictions back with :func:`d2_to_gt` and then uses the field's
+1-pixel IoU. Nothing else converts boxes.
"""
import numpy as np

__all__ = ["gt_to_d2", "d2_to_gt"]

_INCLUSIVE_OFFSET = np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32)


def gt_to_d2(boxes: np.ndarray) -> np.ndarray:
    """Inclusive-pixel GT boxes -> Detectron2 XYXY_ABS.

    Args:
        boxes: (N, 4) x1 y1 x2 y2, inclusive pixel corners.

    Returns:
        (N, 4) float32 x1 y1 x2 y2, continuous coordinates (x2 + 1, y2 + 1).
    """
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4) + _INCLUSIVE_OFFSET


def d2_to_gt(boxes: np.ndarray) -> np.ndarray:
    """Detectron2 XYXY_ABS boxes -> the GT files' inclusive-pixel convention.

    Args:
        boxes: (N, 4) x1 y1 x2 y2, continuous coordinates.

    Returns:
        (N, 4) float32 x1 y1 x2 y2 with x2 - 1, y2 - 1.
    """
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4) - _INCLUSIVE_OFFSET
