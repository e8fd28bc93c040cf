"""Dataset registration: UCF-101-24, J-HMDB-21 and the synthetic set, one dict per key frame.

Datasets live under ``$DETECTRON2_DATASETS`` (default ``./datasets``) in the layout the field
ships (see datasets/README.md). Registration is lazy: importing reads nothing; the first use of
a dataset reads its GT file and fails with FileNotFoundError naming the expected path.

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

from .annotations import load_annotations

__all__ = [
    "LAYOUTS",
    "class_flip_permutation",
    "clip_frame_indices",
    "configure_pcsc_datasets",
    "get_split_annotations",
    "load_action_dataset",
    "register_action_dataset",
    "register_pcsc_datasets",
]

logger = logging.getLogger(__name__)

# layout -> (rgb folder, rgb extension, flow folder, flow extension)
LAYOUTS = {
    "ucf": ("rgb-images", ".jpg", "brox-images", ".jpg"),
    "jhmdb": ("Frames", ".png", "FlowBrox04", ".jpg"),
}

# name -> (folder under the root, GT file, layout, split (1-based), is_train)
_PREDEFINED = {
    "ucf24_train": ("ucf24", "UCF101v2-GT.pkl", "ucf", 1, True),
    "ucf24_test": ("ucf24", "UCF101v2-GT.pkl", "ucf", 1, False),
    "synthetic_train": ("synthetic", "synthetic-GT.pkl", "ucf", 1, True),
    "synthetic_test": ("synthetic", "synthetic-GT.pkl", "ucf", 1, False),
}
for _s in (1, 2, 3):
    _PREDEFINED[f"jhmdb_train_split{_s}"] = ("jhmdb", "JHMDB-GT.pkl", "jhmdb", _s, True)
    _PREDEFINED[f"jhmdb_test_split{_s}"] = ("jhmdb", "JHMDB-GT.pkl", "jhmdb", _s, False)

# folder -> pairs of classes that a horizontal flip turns into each other. UCF-101-24's and
# J-HMDB-21's classes do not depend on left/right; the synthetic set's MoveRight/MoveLeft do.
_CLASS_FLIP_MAPS = {"synthetic": [("MoveRight", "MoveLeft")]}

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
    if not os.path.isfile(gt_path):
        raise FileNotFoundError(
            f"Ground-truth file not found: {gt_path}. Expected the {layout} layout under {root} "
            "(see datasets/README.md; the root is $DETECTRON2_DATASETS, default ./datasets)."
        )
    gt = _load_gt_cached(gt_path)
    splits = gt["train_videos"] if is_train else gt["test_videos"]
    if not 1 <= split <= len(splits):
        raise ValueError(f"{gt_path}: split {split} requested, the file has {len(splits)}")
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


def class_flip_permutation(dataset_names: Sequence[str]) -> Optional[List[int]]:
    """The label each class takes when a training clip is flipped horizontally.

    Args:
        dataset_names: the training datasets (their metadata's ``class_flip_map``).

    Returns:
        perm with perm[c] = the class that a mirrored action of class c shows, or None when a
        flip keeps every class.

    Raises:
        ValueError: a pair names an unknown class, or the datasets disagree.
    """
    perms = set()
    for name in dataset_names:
        pairs = MetadataCatalog.get(name).get("class_flip_map", None) or []
        if not pairs:
            perms.add(None)
            continue
        labels = get_split_annotations(name)["labels"]
        perm = list(range(len(labels)))
        for a, b in pairs:
            if a not in labels or b not in labels:
                raise ValueError(
                    f"dataset {name!r}: class_flip_map pair ({a!r}, {b!r}) names a class that "
                    f"{MetadataCatalog.get(name).gt_file} does not have ({labels})"
                )
            i, j = labels.index(a), labels.index(b)
            perm[i], perm[j] = j, i
        perms.add(tuple(perm))
    if len(perms) > 1:
        raise ValueError(f"training datasets {list(dataset_names)} mirror their classes differently")
    perm = next(iter(perms), None)
    return None if perm is None else list(perm)


def _default_root() -> str:
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def register_pcsc_datasets(
    root: Optional[str] = None, num_frames: int = 8, train_stride: int = 1, test_stride: int = 1
) -> None:
    """Register every predefined split (see datasets/README.md) under ``root``."""
    root = root or _default_root()
    for name, (folder, gt_file, layout, split, is_train) in _PREDEFINED.items():
        register_action_dataset(
            name,
            os.path.join(root, folder),
            gt_file,
            split,
            is_train,
            layout,
            num_frames,
            train_stride if is_train else test_stride,
            _CLASS_FLIP_MAPS.get(folder, ()),
        )


def configure_pcsc_datasets(cfg) -> None:
    """Re-register the predefined splits with the config's K and key-frame strides."""
    register_pcsc_datasets(
        None,
        cfg.INPUT.NUM_FRAMES,
        cfg.DATASETS.TRAIN_KEY_FRAME_STRIDE,
        cfg.DATASETS.TEST_KEY_FRAME_STRIDE,
    )
