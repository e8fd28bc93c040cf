"""Action datasets in the field's layout: key-frame dicts, registration of a split, flip pairs.

Datasets live under ``$DETECTRON2_DATASETS`` (default ``./datasets``) in the layout the field
ships (see datasets/README.md); :mod:`pcsc_d2.data.builtin` registers the predefined names and
every dataset folder found there. Registration is lazy: the first use of a dataset reads its GT
file and fails with FileNotFoundError naming the expected path.

Classes that a horizontal flip turns into each other (e.g. MoveRight and MoveLeft) come from
the GT file's optional ``"flip_pairs"`` key: a list of [class name, class name] pairs.

A dataset dict describes one key frame::

    {"video": "Class/vid", "frame": 12, "nframes": 150, "height": 240, "width": 320,
     "image_id": "Class/vid/00012",
     "rgb_files": [K paths], "flow_files": [K paths],    # the clip centred on the key frame
     "annotations": [{"bbox": [x1, y1, x2, y2], "bbox_mode": BoxMode.XYXY_ABS,
                      "category_id": 3, "tube_id": 0}]}

The clip holds frames ``key - K // 2 .. key - K // 2 + K - 1`` clamped to ``1..nframes`` (for
even K the key frame is the (K//2 + 1)-th of the clip). Boxes are converted from the GT's
inclusive pixels to XYXY_ABS by :func:`pcsc_d2.structures.gt_to_d2`, here and nowhere else.
"""
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from pcsc_d2.structures import gt_to_d2
from pcsc_d2.utils.errors import InputError

from .annotations import load_annotations

__all__ = [
    "FLIP_PAIRS_KEY",
    "LAYOUTS",
    "class_flip_pairs",
    "class_flip_permutation",
    "clip_frame_indices",
    "get_split_annotations",
    "load_action_dataset",
    "register_action_dataset",
]

logger = logging.getLogger(__name__)

# layout -> (rgb folder, rgb extension, flow folder, flow extension)
LAYOUTS = {
    "ucf": ("rgb-images", ".jpg", "brox-images", ".jpg"),
    "jhmdb": ("Frames", ".png", "FlowBrox04", ".jpg"),
}

# The GT file's optional key listing the [class, class] pairs that a horizontal flip swaps.
FLIP_PAIRS_KEY = "flip_pairs"

_GT_CACHE: Dict[str, tuple] = {}


def _load_gt_cached(path: str) -> Dict:
    """load_annotations, cached per file (and re-read when the file changes)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    stamp = os.stat(path).st_mtime_ns
    if path not in _GT_CACHE or _GT_CACHE[path][0] != stamp:
        _GT_CACHE[path] = (stamp, load_annotations(path))
    return _GT_CACHE[path][1]


def clip_frame_indices(frame: int, nframes: int, num_frames: int) -> List[int]:
    """The K frame indices (1-based) of the clip centred on ``frame``, clamped to the video.

    >>> clip_frame_indices(1, 10, 4)
    [1, 1, 1, 2]
    >>> clip_frame_indices(10, 10, 4)
    [8, 9, 10, 10]
    """
    start = frame - num_frames // 2
    return [min(max(i, 1), nframes) for i in range(start, start + num_frames)]


def _frames_of_tubes(per_label: Dict[int, List[np.ndarray]]) -> Dict[int, list]:
    """{frame: [(label, tube_id, box (4,))]} over every tube of a video."""
    out: Dict[int, list] = {}
    tube_id = 0
    for label in sorted(per_label):
        for tube in per_label[label]:
            for row in tube:
                out.setdefault(int(row[0]), []).append((label, tube_id, row[1:5]))
            tube_id += 1
    return out


def load_action_dataset(
    root: str,
    gt_file: str,
    split: int,
    is_train: bool,
    layout: str = "ucf",
    num_frames: int = 8,
    key_frame_stride: int = 1,
    annotated_only: Optional[bool] = None,
) -> List[Dict]:
    """Build the key-frame dicts of one split.

    Args:
        root: the dataset folder (holding the GT file and the frame folders).
        gt_file: GT file name (or absolute path).
        split: 1-based split number.
        is_train: take the split's train videos (else its test videos).
        layout: "ucf" or "jhmdb" (folder names and extensions, see LAYOUTS).
        num_frames: K, frames per clip.
        key_frame_stride: keep frames with (frame - 1) % stride == 0.
        annotated_only: keep only frames covered by a GT tube; defaults to ``is_train`` (training
            uses annotated frames, testing every frame).

    Returns:
        list of dataset dicts (module docstring), ordered by video then frame.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {sorted(LAYOUTS)}")
    if annotated_only is None:
        annotated_only = is_train
    gt_path = gt_file if os.path.isabs(gt_file) else os.path.join(root, gt_file)
    if os.path.isdir(gt_path):
        raise InputError(f"{gt_path}: is a directory; the ground-truth file (a .pkl) was expected")
    if not os.path.isfile(gt_path):
        raise FileNotFoundError(
            f"Ground-truth file not found: {gt_path}. Expected the {layout} layout under {root} "
            "(see datasets/README.md; the root is $DETECTRON2_DATASETS, default ./datasets)."
        )
    gt = _load_gt_cached(gt_path)
    splits = gt["train_videos"] if is_train else gt["test_videos"]
    if not 1 <= split <= len(splits):
        raise InputError(f"{gt_path}: split {split} requested, the file has {len(splits)}")
    rgb_dir, rgb_ext, flow_dir, flow_ext = LAYOUTS[layout]
    dicts = []
    for video in splits[split - 1]:
        nframes = gt["nframes"][video]
        height, width = gt["resolution"][video]
        by_frame = _frames_of_tubes(gt["gttubes"].get(video, {}))
        frames = sorted(by_frame) if annotated_only else range(1, nframes + 1)
        for frame in frames:
            if (frame - 1) % key_frame_stride:
                continue
            clip = clip_frame_indices(frame, nframes, num_frames)
            entries = by_frame.get(frame, [])
            boxes = gt_to_d2(np.array([e[2] for e in entries], np.float32).reshape(-1, 4))
            dicts.append(
                {
                    "video": video,
                    "frame": frame,
                    "nframes": nframes,
                    "height": height,
                    "width": width,
                    "image_id": f"{video}/{frame:05d}",
                    "rgb_files": [
                        os.path.join(root, rgb_dir, video, f"{i:05d}{rgb_ext}") for i in clip
                    ],
                    "flow_files": [
                        os.path.join(root, flow_dir, video, f"{i:05d}{flow_ext}") for i in clip
                    ],
                    "annotations": [
                        {
                            "bbox": box.tolist(),
                            "bbox_mode": BoxMode.XYXY_ABS,
                            "category_id": int(label),
                            "tube_id": int(tube_id),
                        }
                        for (label, tube_id, _), box in zip(entries, boxes)
                    ],
                }
            )
    logger.info(
        "Loaded %d key frames of %d %s videos (split %d) from %s",
        len(dicts), len(splits[split - 1]), "train" if is_train else "test", split, gt_path,
    )
    return dicts


def register_action_dataset(
    name: str,
    root: str,
    gt_file: str,
    split: int,
    is_train: bool,
    layout: str = "ucf",
    num_frames: int = 8,
    key_frame_stride: int = 1,
    class_flip_map: Sequence[Tuple[str, str]] = (),
) -> None:
    """Register (or re-register) a split of an action dataset in DatasetCatalog/MetadataCatalog.

    ``class_flip_map`` lists the pairs of class names that a horizontal flip turns into each
    other (e.g. ("MoveRight", "MoveLeft")); the training mapper swaps their labels on a flip.
    Left empty, the pairs come from the GT file's ``"flip_pairs"`` key (read on first use).

    Nothing is read now. The first DatasetCatalog.get(name) reads the GT file and sets
    ``thing_classes`` and ``gttubes`` (the split's per-video GT tubes) in the metadata; the
    metadata also carries ``gt_file``, ``split``,
    ``is_train``, ``dataset_root`` and ``evaluator_type = "pcsc"`` (get_split_annotations
    and the evaluator use them).
    """
    # Absolute paths: the catalog must not depend on the working directory of later calls.
    root = os.path.abspath(root)
    gt_path = gt_file if os.path.isabs(gt_file) else os.path.join(root, gt_file)

    def load() -> List[Dict]:
        dicts = load_action_dataset(
            root, gt_path, split, is_train, layout, num_frames, key_frame_stride
        )
        meta = MetadataCatalog.get(name)
        if not hasattr(meta, "gttubes"):
            split_gt = get_split_annotations(name)  # also sets thing_classes
            meta.gttubes = split_gt["gttubes"]  # per-video GT tubes, for evaluators
        return dicts

    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    if name in MetadataCatalog:
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        gt_file=gt_path,
        split=split,
        is_train=is_train,
        dataset_root=root,
        layout=layout,
        evaluator_type="pcsc",
        class_flip_map=[tuple(pair) for pair in class_flip_map],
    )


def get_split_annotations(dataset_name: str) -> Dict:
    """The GT of a registered dataset's videos, for evaluation.

    Returns:
        {"labels": [str], "videos": [video], "gttubes", "nframes", "resolution"} restricted to
        the split's videos (schema of :mod:`pcsc_d2.data.annotations`).
    """
    meta = MetadataCatalog.get(dataset_name)
    if not hasattr(meta, "gt_file"):
        raise KeyError(f"dataset {dataset_name!r} is not a registered pcsc_d2 action dataset")
    if not os.path.isfile(meta.gt_file):
        raise FileNotFoundError(f"dataset {dataset_name!r}: GT file not found: {meta.gt_file}")
    gt = _load_gt_cached(meta.gt_file)
    videos = (gt["train_videos"] if meta.is_train else gt["test_videos"])[meta.split - 1]
    if not hasattr(meta, "thing_classes"):
        meta.thing_classes = list(gt["labels"])
    return {
        "labels": list(gt["labels"]),
        "videos": list(videos),
        "gttubes": {v: gt["gttubes"].get(v, {}) for v in videos},
        "nframes": {v: gt["nframes"][v] for v in videos},
        "resolution": {v: gt["resolution"][v] for v in videos},
    }


def class_flip_pairs(gt: Dict, path: str = "<GT>") -> List[Tuple[str, str]]:
    """The class pairs a horizontal flip swaps, from a GT dict's optional ``"flip_pairs"`` key.

    Args:
        gt: a loaded GT file (:func:`pcsc_d2.data.load_annotations`).
        path: the file, for messages.

    Returns:
        [(name_a, name_b)], empty when the key is absent.

    Raises:
        InputError: the key is not a list of pairs of two different class names of the file's
            ``labels``, or a class appears in two pairs; the message names the file.
    """
    raw = gt.get(FLIP_PAIRS_KEY) or []
    labels = list(gt["labels"])
    usage = 'expected a list of [class, class] pairs, e.g. [["MoveRight", "MoveLeft"]]'
    if not isinstance(raw, (list, tuple)):
        raise InputError(f"{path}: {FLIP_PAIRS_KEY!r}: {usage}, got {type(raw).__name__}")
    pairs, seen = [], set()
    for pair in raw:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise InputError(f"{path}: {FLIP_PAIRS_KEY!r}: {pair!r} is not a pair; {usage}")
        a, b = (str(x) for x in pair)
        for name in (a, b):
            if name not in labels:
                raise InputError(
                    f"{path}: {FLIP_PAIRS_KEY!r}: pair ({a!r}, {b!r}) names {name!r}, which is "
                    f"not one of the file's classes {labels}"
                )
        if a == b or a in seen or b in seen:
            raise InputError(
                f"{path}: {FLIP_PAIRS_KEY!r}: pair ({a!r}, {b!r}) pairs a class with itself or "
                "with a second partner"
            )
        seen.update((a, b))
        pairs.append((a, b))
    return pairs


def class_flip_permutation(dataset_names: Sequence[str]) -> Optional[List[int]]:
    """The label each class takes when a training clip is flipped horizontally.

    Args:
        dataset_names: the training datasets. Their pairs are the metadata's
            ``class_flip_map`` when it was given at registration, else the GT file's
            ``"flip_pairs"`` (the GT file is read).

    Returns:
        perm with perm[c] = the class that a mirrored action of class c shows, or None when a
        flip keeps every class.

    Raises:
        InputError (a ValueError): a pair names an unknown class, or the datasets disagree.
    """
    perms = set()
    for name in dataset_names:
        meta = MetadataCatalog.get(name)
        labels = get_split_annotations(name)["labels"]
        gt = {"labels": labels, FLIP_PAIRS_KEY: meta.get("class_flip_map", None) or []}
        source = f"dataset {name!r} (class_flip_map)"
        if not gt[FLIP_PAIRS_KEY]:
            gt = _load_gt_cached(meta.gt_file)
            source = meta.gt_file
        pairs = class_flip_pairs(gt, source)
        if not pairs:
            perms.add(None)
            continue
        perm = list(range(len(labels)))
        for a, b in pairs:
            i, j = labels.index(a), labels.index(b)
            perm[i], perm[j] = j, i
        perms.add(tuple(perm))
    if len(perms) > 1:
        raise InputError(
            f"training datasets {list(dataset_names)} mirror their classes differently"
        )
    perm = next(iter(perms), None)
    return None if perm is None else list(perm)
