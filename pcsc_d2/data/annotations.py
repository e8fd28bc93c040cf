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
import numbers
import os
from typing import Any, Dict, List

import numpy as np

from pcsc_d2.utils.errors import CorruptFileError, InputError, require_file
from pcsc_d2.utils.io import atomic_open, atomic_save_pickle
from pcsc_d2.utils.safe_pickle import SafeUnpickler, UnsafePickleError

__all__ = ["SafeUnpickler", "UnsafePickleError", "load_annotations", "save_annotations",
           "validate_annotations"]

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("labels", "gttubes", "nframes", "resolution", "train_videos", "test_videos")


def _read_pickle(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            # Python 2 pickles store str as bytes; latin1 maps them 1:1 (numpy's convention too).
            return SafeUnpickler(f, filename=path, encoding="latin1").load()
    except UnsafePickleError:
        raise
    # A damaged pickle fails in many ways (EOFError, UnpicklingError, ValueError, KeyError...).
    except Exception as e:
        raise CorruptFileError(
            f"{path}: not a readable GT pickle, truncated or another format "
            f"({type(e).__name__}: {e})"
        ) from e


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a UTF-8 JSON text file ({e})") from e


def load_annotations(path: str) -> Dict:
    """Load and validate a GT file (``.pkl`` of the field, or the same schema as ``.json``).

    Args:
        path: UCF101v2-GT.pkl, JHMDB-GT.pkl, synthetic-GT.pkl or a JSON conversion of one.

    Returns:
        The schema above, normalised: tube arrays float32 (n, 5), nframes int, resolution
        (int, int), labels list of str, splits lists of lists of str.

    Raises:
        MissingFileError: the file does not exist or is a directory.
        CorruptFileError: the file is empty or not a readable pickle.
        UnsafePickleError: the pickle names a global other than numpy's array builders.
        InputError: the content breaks the schema (the JSON does not parse, a type is wrong, a
            value is out of range); the message names the file, and the video, label, tube and
            frame where there is one.
    """
    require_file(path, "GT file")
    if os.path.getsize(path) == 0:
        raise CorruptFileError(f"{path}: empty file, expected a GT file")
    gt = _read_json(path) if path.endswith(".json") else _read_pickle(path)
    gt = _normalise(gt, path)
    validate_annotations(gt, path)
    return gt


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _positive_int(x: Any) -> bool:
    return _is_number(x) and float(x).is_integer() and x >= 1


def _mapping(gt: Dict, key: str, path: str, what: str) -> Dict:
    value = gt[key]
    if not isinstance(value, dict):
        raise InputError(f"{path}: '{key}' must be a dict {what}, got {type(value).__name__}")
    return value


def _tube_array(tube: Any, where: str) -> np.ndarray:
    """A tube as a float32 (n, 5) array; rows of another length are an error, never reshaped."""
    if isinstance(tube, (list, tuple)) and len(tube) == 0:
        return np.zeros((0, 5), np.float32)
    try:
        raw = np.asarray(tube)
    except ValueError as e:  # ragged rows
        raise InputError(f"{where}: rows must all be 5 numbers [frame, x1, y1, x2, y2]") from e
    if raw.dtype.kind not in "iuf":
        raise InputError(
            f"{where}: rows must hold numbers [frame, x1, y1, x2, y2], got {raw.dtype} values"
        )
    if raw.ndim != 2 or raw.shape[1] != 5:
        raise InputError(
            f"{where}: expected an array of shape (n, 5) [frame, x1, y1, x2, y2], got shape "
            f"{raw.shape}"
        )
    return raw.astype(np.float32)


def _normalise_tubes(gttubes: Dict, path: str) -> Dict[str, Dict[int, List[np.ndarray]]]:
    tubes = {}
    for video, per_label in gttubes.items():
        if not isinstance(per_label, dict):
            raise InputError(
                f"{path}: video {video}: gttubes entry must map label -> list of tubes, got "
                f"{type(per_label).__name__}"
            )
        tubes[str(video)] = {}
        for label, tube_list in per_label.items():
            try:
                index = int(label)
            except (TypeError, ValueError) as e:
                raise InputError(
                    f"{path}: video {video}: label key {label!r} is not a class index"
                ) from e
            if not isinstance(tube_list, (list, tuple)):
                raise InputError(
                    f"{path}: video {video}, label {label}: expected a list of tubes, got "
                    f"{type(tube_list).__name__}"
                )
            tubes[str(video)][index] = [
                _tube_array(t, f"{path}: video {video}, label {label}, tube {i}")
                for i, t in enumerate(tube_list)
            ]
    return tubes


def _normalise(gt: Any, path: str) -> Dict:
    if not isinstance(gt, dict):
        raise InputError(f"{path}: expected a dict at the top level, got {type(gt).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in gt]
    if missing:
        raise InputError(f"{path}: missing keys {missing} (needs {list(REQUIRED_KEYS)})")
    out = {k: v for k, v in gt.items() if k not in REQUIRED_KEYS}
    if not isinstance(gt["labels"], (list, tuple)):
        raise InputError(f"{path}: 'labels' must be a list of class names")
    out["labels"] = [str(x) for x in gt["labels"]]
    nframes = _mapping(gt, "nframes", path, "{video: number of frames}")
    for video, n in nframes.items():
        if not _positive_int(n):
            raise InputError(f"{path}: video {video}: nframes {n!r} is not a positive integer")
    out["nframes"] = {str(v): int(n) for v, n in nframes.items()}
    resolution = _mapping(gt, "resolution", path, "{video: (height, width)}")
    for video, r in resolution.items():
        pair = isinstance(r, (list, tuple, np.ndarray)) and len(r) == 2
        if not (pair and all(map(_positive_int, r))):
            raise InputError(
                f"{path}: video {video}: resolution {r!r} is not a pair (height, width) of "
                "positive integers"
            )
    out["resolution"] = {str(v): (int(r[0]), int(r[1])) for v, r in resolution.items()}
    for key in ("train_videos", "test_videos"):
        splits = gt[key]
        if not isinstance(splits, (list, tuple)) or not all(
            isinstance(s, (list, tuple)) for s in splits
        ):
            raise InputError(
                f"{path}: '{key}' must be a list of lists of video names (one per split)"
            )
        out[key] = [[str(v) for v in split] for split in splits]
    gttubes = _mapping(gt, "gttubes", path, "{video: {label: [tube, ...]}}")
    out["gttubes"] = _normalise_tubes(gttubes, path)
    return out


def _check_tube(t: np.ndarray, where: str, nframes: int, height: int, width: int) -> None:
    """Raise InputError unless ``t`` is a valid (n, 5) tube of a video of that size."""
    if len(t) == 0:
        raise InputError(f"{where}: empty tube")
    # NaN passes every comparison below (they are all False): reject it first.
    finite = np.isfinite(t).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise InputError(f"{where}: row {row} {t[row].tolist()} holds NaN or infinity")
    frames = t[:, 0]
    if not np.all(frames == np.round(frames)):
        raise InputError(f"{where}: frame indices must be integers")
    if frames.min() < 1 or frames.max() > nframes:
        raise InputError(
            f"{where}: frames {int(frames.min())}..{int(frames.max())} outside "
            f"1..{nframes} (nframes)"
        )
    steps = np.diff(frames)
    if np.any(steps <= 0):
        k = int(np.argmax(steps <= 0))
        problem = (
            f"frame {int(frames[k])} appears twice" if steps[k] == 0
            else f"frame {int(frames[k + 1])} comes after frame {int(frames[k])}"
        )
        raise InputError(
            f"{where}: {problem}; a tube holds one box per frame, frames in increasing order"
        )
    x1, y1, x2, y2 = t[:, 1], t[:, 2], t[:, 3], t[:, 4]
    if np.any(x1 > x2) or np.any(y1 > y2):
        bad = int(frames[np.argmax((x1 > x2) | (y1 > y2))])
        raise InputError(f"{where}: frame {bad}: box has x1 > x2 or y1 > y2")
    outside = (x1 < 0) | (y1 < 0) | (x2 > width - 1) | (y2 > height - 1)
    if np.any(outside):
        bad = int(frames[np.argmax(outside)])
        raise InputError(
            f"{where}: frame {bad}: box {t[np.argmax(outside), 1:].tolist()} lies "
            f"outside the {width}x{height} image (inclusive pixels, x2 <= width - 1)"
        )


def validate_annotations(gt: Dict, path: str = "<annotations>") -> None:
    """Check the schema's invariants; raise InputError naming the file, video and problem.

    Args:
        gt: a GT dict in the normalised form :func:`load_annotations` returns.
        path: the file it comes from or goes to, for the messages.
    """
    num_labels = len(gt["labels"])
    if num_labels == 0:
        raise InputError(f"{path}: 'labels' is empty: the file names no class")
    for key in ("train_videos", "test_videos"):
        for s, split in enumerate(gt[key]):
            for video in split:
                if video not in gt["nframes"] or video not in gt["resolution"]:
                    raise InputError(
                        f"{path}: {key}[{s}] lists video {video}, which has no nframes/resolution"
                    )
    for video, per_label in gt["gttubes"].items():
        if video not in gt["nframes"] or video not in gt["resolution"]:
            raise InputError(f"{path}: video {video} has tubes but no nframes/resolution entry")
        nframes = gt["nframes"][video]
        height, width = gt["resolution"][video]
        for label, tube_list in per_label.items():
            if not 0 <= label < num_labels:
                raise InputError(
                    f"{path}: video {video}: label index {label} outside 0..{num_labels - 1}"
                )
            for i, t in enumerate(tube_list):
                _check_tube(t, f"{path}: video {video}, label {label}, tube {i}", nframes,
                            height, width)


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
