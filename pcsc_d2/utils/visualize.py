"""Draw action tubes on frames and write them as a GIF or an MP4."""
import logging
import os
import tempfile
from typing import Dict, Iterable, List, Optional, Sequence

import cv2
import numpy as np
from PIL import Image

from .io import atomic_open, give_default_permissions

__all__ = ["draw_boxes", "tube_boxes_by_frame", "write_contact_sheet", "write_video"]

logger = logging.getLogger(__name__)

# Distinct, colour-blind-friendly colours (RGB), cycled by class.
_PALETTE = [
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (255, 255, 255),
]


def tube_boxes_by_frame(tubes: Iterable[Dict]) -> Dict[int, List[Dict]]:
    """Index tubes by frame.

    Args:
        tubes: dicts with "label", "score", "frames" (L,) and "boxes" (L, 4).

    Returns:
        {frame (1-based): [{"box": (4,), "label": int, "score": float, "tube": int}]}
    """
    per_frame: Dict[int, List[Dict]] = {}
    for i, tube in enumerate(tubes):
        for frame, box in zip(tube["frames"], tube["boxes"]):
            per_frame.setdefault(int(frame), []).append(
                {"box": np.asarray(box), "label": int(tube["label"]), "score": float(tube["score"]),
                 "tube": i}
            )
    return per_frame


def draw_boxes(
    image: np.ndarray,
    items: Sequence[Dict],
    class_names: Sequence[str],
    gt_boxes: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Draw labelled boxes (and dashed-looking thin white GT boxes) on a copy of an image.

    Args:
        image: (H, W, 3) uint8 RGB.
        items: dicts with "box" (4,) x1 y1 x2 y2, "label" and "score".
        class_names: names indexed by label.
        gt_boxes: optional (G, 4) ground-truth boxes, drawn thin and white.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    out = np.ascontiguousarray(image.copy())
    scale = max(out.shape[0], out.shape[1]) / 320.0
    thick = max(1, int(round(2 * scale)))
    if gt_boxes is not None:
        for x1, y1, x2, y2 in np.asarray(gt_boxes).reshape(-1, 4).astype(int):
            cv2.rectangle(out, (x1, y1), (x2, y2), (255, 255, 255), 1)
    for item in items:
        x1, y1, x2, y2 = np.asarray(item["box"]).astype(int)
        color = _PALETTE[item["label"] % len(_PALETTE)]
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick)
        text = f"{class_names[item['label']]} {item['score']:.2f}"
        cv2.putText(
            out, text, (x1, max(8, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * scale, color, 1,
            cv2.LINE_AA,
        )
    return out


def write_video(frames: Sequence[np.ndarray], path: str, fps: float = 10.0) -> None:
    """Write RGB frames to ``path`` (.gif or .mp4), atomically.

    Args:
        frames: (H, W, 3) uint8 RGB images, all the same size.
        path: output file; the extension picks the format.
        fps: frames per second.
    """
    if not frames:
        raise ValueError(f"write_video({path!r}): no frames to write")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".gif":
        images = [Image.fromarray(f) for f in frames]
        with atomic_open(path, "wb") as f:
            images[0].save(
                f, format="GIF", save_all=True, append_images=images[1:],
                duration=int(1000 / fps), loop=0,
            )
    elif ext in (".mp4", ".avi"):
        h, w = frames[0].shape[:2]
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=ext)
        os.close(fd)
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if ext == ".mp4" else "MJPG"))
        writer = cv2.VideoWriter(tmp, fourcc, fps, (w, h))
        try:
            for f in frames:
                writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        give_default_permissions(tmp)
        os.replace(tmp, path)
    else:
        raise ValueError(f"write_video({path!r}): unsupported extension {ext!r} (gif, mp4, avi)")
    logger.info("Wrote %d frames to %s", len(frames), path)


def write_contact_sheet(rows: Sequence[Sequence[np.ndarray]], path: str) -> None:
    """Tile images into one PNG (one row per sequence, left to right), atomically.

    Args:
        rows: R sequences of C (H, W, 3) uint8 RGB images, all the same size.
        path: the .png to write.
    """
    if not rows or any(len(r) != len(rows[0]) or not r for r in rows):
        raise ValueError(f"write_contact_sheet({path!r}): needs rows of equal, non-zero length")
    sheet = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    with atomic_open(path, "wb") as f:
        Image.fromarray(sheet).save(f, format="PNG")
    logger.info("Wrote a %dx%d contact sheet to %s", len(rows), len(rows[0]), path)
