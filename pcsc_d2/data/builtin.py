"""The registered dataset names: the predefined splits and every dataset folder of the root.

Importing :mod:`pcsc_d2.data` calls :func:`register_pcsc_datasets` (the Detectron2 idiom of a
``builtin.py``). Under ``$DETECTRON2_DATASETS`` (default ``./datasets``):

- the predefined names: ``ucf24_{train,test}`` (``ucf24/UCF101v2-GT.pkl``),
  ``jhmdb_{train,test}_split{1,2,3}`` (``jhmdb/JHMDB-GT.pkl``), ``synthetic_{train,test}``;
- every other folder that holds a ``<NAME>-GT.pkl`` (or ``<NAME>-GT.json``) next to
  ``rgb-images/`` (ucf layout) or ``Frames/`` (jhmdb layout), e.g. one written by
  ``python -m pcsc_d2.data.prepare``: ``<NAME>_train`` and ``<NAME>_test`` (its split 1).
  How many splits a file has is only known once it is read, so ``<NAME>_train_split<k>`` /
  ``<NAME>_test_split<k>`` are registered when a config names them
  (:func:`configure_pcsc_datasets`, which ``get_pcsc_cfg`` and train_net.py call) or when
  passed to :func:`register_pcsc_datasets`.

Registration reads folder listings only, never a GT file.
"""
import logging
import os
import re
from typing import Dict, Iterable, List, Optional, Tuple

from .datasets import LAYOUTS, register_action_dataset

__all__ = ["configure_pcsc_datasets", "discover_datasets", "register_pcsc_datasets"]

logger = logging.getLogger(__name__)

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

# A GT file of a dataset folder: <NAME>-GT.pkl or <NAME>-GT.json.
_GT_NAME = re.compile(r"(.+)-GT\.(pkl|json)")
_SPLIT_NAME = re.compile(r"(.+)_(train|test)_split([1-9][0-9]*)")


def _default_root() -> str:
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def _folder_layout(folder: str) -> Optional[str]:
    """The layout whose RGB folder ``folder`` holds, or None."""
    for layout, (rgb_dir, _, _, _) in LAYOUTS.items():
        if os.path.isdir(os.path.join(folder, rgb_dir)):
            return layout
    return None


def discover_datasets(root: str) -> Dict[str, Tuple[str, str, str]]:
    """The dataset folders of ``root``: ``{NAME: (folder, GT file name, layout)}``.

    A folder counts when it holds ``<NAME>-GT.pkl`` or ``<NAME>-GT.json`` and the RGB folder
    of the ucf (``rgb-images/``) or jhmdb (``Frames/``) layout. The GT files of the predefined
    datasets are left to their predefined names. Only folder listings are read.
    """
    predefined = {(folder, gt) for folder, gt, _, _, _ in _PREDEFINED.values()}
    found: Dict[str, Tuple[str, str, str]] = {}
    try:
        entries = sorted(e.name for e in os.scandir(root) if e.is_dir())
    except OSError:  # no root: nothing to discover
        return found
    for folder in entries:
        path = os.path.join(root, folder)
        try:
            files = sorted(os.listdir(path))
        except OSError:
            continue
        layout = None
        # A .pkl comes before the .json of the same NAME: the pickle is the one used.
        for gt_file in sorted(files, key=lambda f: (not f.endswith(".pkl"), f)):
            match = _GT_NAME.fullmatch(gt_file)
            if not match or (folder, gt_file) in predefined:
                continue
            layout = layout or _folder_layout(path)
            name = match.group(1)
            if layout is None:
                logger.debug("%s: no rgb-images/ or Frames/ next to it: not registered",
                             os.path.join(path, gt_file))
            elif name in found:
                if found[name][0] != path:
                    logger.warning("%s: dataset %r is already registered from %s; ignored",
                                   os.path.join(path, gt_file), name, found[name][0])
            else:
                found[name] = (path, gt_file, layout)
    return found


def register_pcsc_datasets(
    root: Optional[str] = None,
    num_frames: int = 8,
    train_stride: int = 1,
    test_stride: int = 1,
    split_names: Iterable[str] = (),
) -> List[str]:
    """Register the predefined splits and every dataset folder under ``root``.

    Args:
        root: the datasets root; default ``$DETECTRON2_DATASETS`` (or ``./datasets``).
        num_frames: K, frames per clip.
        train_stride, test_stride: key-frame strides of the train and test splits.
        split_names: names of the form ``<NAME>_train_split<k>`` / ``<NAME>_test_split<k>``
            to register as well, for discovered datasets with several splits.

    Returns:
        the names registered for discovered dataset folders.
    """
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
        )
    found = discover_datasets(root)
    wanted = [(f"{n}_{kind}", n, kind, 1) for n in found for kind in ("train", "test")]
    for split_name in split_names:
        match = _SPLIT_NAME.fullmatch(split_name)
        if match and match.group(1) in found and split_name not in _PREDEFINED:
            wanted.append((split_name, match.group(1), match.group(2), int(match.group(3))))
    for name, dataset, kind, split in wanted:
        if name in _PREDEFINED:
            logger.warning("dataset folder %s would register %r, a predefined name: skipped",
                           found[dataset][0], name)
            continue
        folder, gt_file, layout = found[dataset]
        is_train = kind == "train"
        register_action_dataset(name, folder, gt_file, split, is_train, layout, num_frames,
                                train_stride if is_train else test_stride)
    return [w[0] for w in wanted if w[0] not in _PREDEFINED]


def configure_pcsc_datasets(cfg) -> None:
    """Re-register the datasets with the config's K and key-frame strides (and the
    ``<NAME>_{train,test}_split<k>`` names its DATASETS.TRAIN / TEST ask for)."""
    register_pcsc_datasets(
        None,
        cfg.INPUT.NUM_FRAMES,
        cfg.DATASETS.TRAIN_KEY_FRAME_STRIDE,
        cfg.DATASETS.TEST_KEY_FRAME_STRIDE,
        split_names=list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST),
    )
