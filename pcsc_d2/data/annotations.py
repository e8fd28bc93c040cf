"""Ground-truth files of the field (UCF101v2-GT.pkl, JHMDB-GT.pkl): safe loading and validation.

Schema (REFERENCE section 3)::

    {
      "labels": [str, ...],                               # class names
      "gttubes": {video: {label (0-based): [array (n, 5) frame, x1, y1, x2, y2]}},
      "nframes": {video: int},
      "resolution": {video: (height, width)},
      "train_videos": [[video, ...], ...],                # one list per split
      "test_videos": [[video, ...], ...],
    }

Frames are 1-indexed; boxes are 0-indexed inclusive pixel corners (x2 <= width - 1). The
pickles are Python 2 pickles; loading a pickle can run code, so :class:`SafeUnpickler` only
admits the globals numpy needs to rebuild arrays.
"""
import json
import logging
import os
from typing import Any, Dict

import numpy as np

from pcsc_d2.utils.io import atomic_open, atomic_save_pickle
from pcsc_d2.utils.safe_pickle import SafeUnpickler, UnsafePickleError

__all__ = ["SafeUnpickler", "UnsafePickleError", "load_annotations", "save_annotations",
           "validate_annotations"]

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("labels", "gttubes", "nframes", "resolution", "train_videos", "test_videos")

def _read_pickle(path: str) -> Any:
    with open(path, "rb") as f:
        # Python 2 pickles store str as bytes; latin1 maps them 1:1 (numpy's convention too).
        return SafeUnpickler(f, filename=path, encoding="latin1").load()


def _read_json(path: str) -> Dict:
    with open(path) as f:
        raw = json.load(f)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    gttubes = raw.get("gttubes", {})
    if isinstance(gttubes, dict):
        raw["gttubes"] = {
            v: {int(k): [np.asarray(t, dtype=np.float32).reshape(-1, 5) if len(t) else
                         np.zeros((0, 5), np.float32) for t in tubes]
                for k, tubes in per_label.items()}
            if isinstance(per_label, dict) else per_label
            for v, per_label in gttubes.items()
        }
    return raw


def load_annotations(path: str) -> Dict:
    """Load and validate a GT file (``.pkl`` of the field, or the same schema as ``.json``).

    Args:
        path: UCF101v2-GT.pkl, JHMDB-GT.pkl, synthetic-GT.pkl or a JSON conversion of one.

    Returns:
        The schema above, normalised: tube arrays float32 (n, 5), nframes int, resolution
        (int, int), labels list of str, splits lists of lists of str.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafePickleError: the pickle names a global other than numpy's array builders.
        ValueError: the content breaks the schema; the message names the file and video.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    if path.endswith(".json"):
        gt = _read_json(path)
    else:
        try:
            gt = _read_pickle(path)
        except UnsafePickleError:
            raise
        except Exception as e:
            raise ValueError(f"{path}: not a readable annotation pickle ({e})") from e
    gt = _normalise(gt, path)
    validate_annotations(gt, path)
    return gt


def _normalise(gt: Any, path: str) -> Dict:
    if not isinstance(gt, dict):
        raise ValueError(f"{path}: expected a dict at the top level, got {type(gt).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in gt]
    if missing:
        raise ValueError(f"{path}: missing keys {missing} (needs {list(REQUIRED_KEYS)})")
    out = {k: v for k, v in gt.items() if k not in REQUIRED_KEYS}
    if not isinstance(gt["labels"], (list, tuple)):
        raise ValueError(f"{path}: 'labels' must be a list of class names")
    out["labels"] = [str(x) for x in gt["labels"]]
    for video, n in gt["nframes"].items():
        if isinstance(n, bool) or not float(n).is_integer() or n < 1:
            raise ValueError(f"{path}: video {video}: nframes {n!r} is not a positive integer")
    out["nframes"] = {str(v): int(n) for v, n in gt["nframes"].items()}
    out["resolution"] = {str(v): (int(r[0]), int(r[1])) for v, r in gt["resolution"].items()}
    for key in ("train_videos", "test_videos"):
        splits = gt[key]
        if not isinstance(splits, (list, tuple)) or not all(
            isinstance(s, (list, tuple)) for s in splits
        ):
            raise ValueError(
                f"{path}: '{key}' must be a list of lists of video names (one per split)"
            )
        out[key] = [[str(v) for v in split] for split in splits]
    tubes = {}
    for video, per_label in gt["gttubes"].items():
        if not isinstance(per_label, dict):
            raise ValueError(
                f"{path}: video {video}: gttubes entry must map label -> list of tubes"
            )
        tubes[str(video)] = {}
        for label, tube_list in per_label.items():
            arrays = []
            for i, t in enumerate(tube_list):
                a = np.asarray(t, dtype=np.float32)
                if a.ndim != 2 or a.shape[1] != 5:
                    raise ValueError(
                        f"{path}: video {video}, label {label}, tube {i}: expected an array of "
                        f"shape (n, 5) [frame, x1, y1, x2, y2], got shape {a.shape}"
                    )
                arrays.append(a)
            tubes[str(video)][int(label)] = arrays
    out["gttubes"] = tubes
    return out


def validate_annotations(gt: Dict, path: str = "<annotations>") -> None:
    """Check the schema's invariants; raise ValueError naming the file, video and problem."""
    num_labels = len(gt["labels"])
    for key in ("train_videos", "test_videos"):
        for s, split in enumerate(gt[key]):
            for video in split:
                if video not in gt["nframes"] or video not in gt["resolution"]:
                    raise ValueError(
                        f"{path}: {key}[{s}] lists video {video}, which has no nframes/resolution"
                    )
    for video, per_label in gt["gttubes"].items():
        if video not in gt["nframes"] or video not in gt["resolution"]:
            raise ValueError(f"{path}: video {video} has tubes but no nframes/resolution entry")
        nframes = gt["nframes"][video]
        height, width = gt["resolution"][video]
        for label, tube_list in per_label.items():
            if not 0 <= label < num_labels:
                raise ValueError(
                    f"{path}: video {video}: label index {label} outside 0..{num_labels - 1}"
                )
            for i, t in enumerate(tube_list):
                where = f"{path}: video {video}, label {label}, tube {i}"
                if len(t) == 0:
                    raise ValueError(f"{where}: empty tube")
                frames = t[:, 0]
                if not np.all(frames == np.round(frames)):
                    raise ValueError(f"{where}: frame indices must be integers")
                if frames.min() < 1 or frames.max() > nframes:
                    raise ValueError(
                        f"{where}: frames {int(frames.min())}..{int(frames.max())} outside "
                        f"1..{nframes} (nframes)"
                    )
                x1, y1, x2, y2 = t[:, 1], t[:, 2], t[:, 3], t[:, 4]
                if np.any(x1 > x2) or np.any(y1 > y2):
                    bad = int(frames[np.argmax((x1 > x2) | (y1 > y2))])
                    raise ValueError(f"{where}: frame {bad}: box has x1 > x2 or y1 > y2")
                if np.any(x1 < 0) or np.any(y1 < 0) or np.any(x2 > width - 1) or np.any(
                    y2 > height - 1
                ):
                    outside = (x1 < 0) | (y1 < 0) | (x2 > width - 1) | (y2 > height - 1)
                    bad = int(frames[np.argmax(outside)])
                    raise ValueError(
                        f"{where}: frame {bad}: box {t[np.argmax(outside), 1:].tolist()} lies "
                        f"outside the {width}x{height} image (inclusive pixels, x2 <= width - 1)"
                    )


def annotations_to_json(gt: Dict) -> Dict:
    """The schema with arrays as lists and label keys as strings (JSON object keys)."""
    return {
        **{k: v for k, v in gt.items() if k not in REQUIRED_KEYS},
        "labels": list(gt["labels"]),
        "gttubes": {
            v: {str(label): [t.tolist() for t in tubes] for label, tubes in per_label.items()}
            for v, per_label in gt["gttubes"].items()
        },
        "nframes": dict(gt["nframes"]),
        "resolution": {v: list(r) for v, r in gt["resolution"].items()},
        "train_videos": gt["train_videos"],
        "test_videos": gt["test_videos"],
    }


def save_annotations(gt: Dict, path: str) -> None:
    """Validate and write ``gt`` as ``.json`` or as a protocol-2 pickle, atomically."""
    validate_annotations(gt, path)
    if path.endswith(".json"):
        with atomic_open(path, "w") as f:
            json.dump(annotations_to_json(gt), f)
    else:
        atomic_save_pickle(gt, path, protocol=2)
    logger.info("Wrote %d videos of annotations to %s", len(gt["nframes"]), path)
