"""Pre-flight checks: what a run reads is checked before any model is built or frame decoded.

Without them a misspelled dataset name gets detectron2's list of ~100 COCO/LVIS names, a
``MODEL.ROI_HEADS.NUM_CLASSES`` below the dataset's class count crashes inside the loss once
training has started, and a missing ``MODEL.WEIGHTS`` file raises an AssertionError. Each check
raises a typed error (:mod:`pcsc_d2.utils.errors`) whose message names the config key and the
file; :func:`check_train_net_args` turns one into a single ``error:`` line and exit status 2.
"""
import argparse
import difflib
import logging
import os
from typing import Dict, List, Optional, Sequence

import yaml
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

from pcsc_d2.data import get_split_annotations
from pcsc_d2.utils.errors import (
    INPUT_ERRORS,
    InputError,
    MissingFileError,
    exit_with_error,
    require_file,
)

from .checkpoint import check_checkpoint_file
from .defaults import get_pcsc_cfg

__all__ = [
    "action_datasets",
    "check_dataset_names",
    "check_num_classes",
    "check_pcsc_setup",
    "check_train_net_args",
    "check_weights",
    "load_pcsc_cfg",
]

logger = logging.getLogger(__name__)


def action_datasets() -> Dict[str, str]:
    """{name: GT file} of the registered action datasets (metadata evaluator_type "pcsc")."""
    out = {}
    for name in MetadataCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("evaluator_type", None) == "pcsc":
            out[name] = meta.get("gt_file", "?")
    return out


def _registered_summary() -> str:
    """The action datasets grouped by the GT file they read, on one line."""
    by_file: Dict[str, List[str]] = {}
    for name, gt_file in action_datasets().items():
        by_file.setdefault(gt_file, []).append(name)
    groups = [f"{', '.join(names)} (GT file {f})" for f, names in by_file.items()]
    return "; ".join(groups) or "none"


def check_dataset_names(names: Sequence[str], key: str) -> Dict[str, int]:
    """Check that each dataset is registered, finds its GT file and read its class count.

    Reading the GT file here (it is cached) validates it before the model is built.

    Args:
        names: dataset names, e.g. ``cfg.DATASETS.TRAIN``.
        key: the config key they come from, for the messages.

    Returns:
        {name: number of classes} for the action datasets among ``names``.

    Raises:
        InputError: an unknown name (the message lists the registered action datasets and the
            GT file each reads), or a GT file that breaks the schema.
        MissingFileError: a dataset's GT file does not exist.
    """
    counts = {}
    for name in names:
        if name not in DatasetCatalog.list():
            close = difflib.get_close_matches(name, list(action_datasets()), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(
                f"{key}: no dataset named {name!r}{hint}. Registered action datasets: "
                f"{_registered_summary()}. The root is $DETECTRON2_DATASETS (default ./datasets)"
            )
        meta = MetadataCatalog.get(name)
        if meta.get("evaluator_type", None) != "pcsc":
            logger.warning(
                "%s: dataset %r is not an action dataset registered by pcsc_d2; its class count "
                "and files are not checked", key, name,
            )
            continue
        gt_file = meta.gt_file
        if os.path.isdir(gt_file) or not os.path.exists(gt_file):
            problem = "is a directory" if os.path.isdir(gt_file) else "not found"
            raise MissingFileError(
                f"{gt_file}: {problem}: the GT file of dataset {name!r} ({key}). Datasets are "
                "read from $DETECTRON2_DATASETS (default ./datasets); see datasets/README.md"
            )
        try:
            labels = get_split_annotations(name)["labels"]
        except IndexError as e:  # the split the dataset names is not in the file
            raise InputError(
                f"{gt_file}: has no split {meta.split}, which dataset {name!r} ({key}) reads"
            ) from e
        counts[name] = len(labels)
    return counts


def check_num_classes(cfg: CfgNode, class_counts: Dict[str, int]) -> None:
    """MODEL.ROI_HEADS.NUM_CLASSES against each dataset's class count.

    Fewer classes than a dataset has is an error (the loss would fail on the first label past
    the end); more is a warning (the extra outputs are never trained).
    """
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    for name, n in class_counts.items():
        gt_file = MetadataCatalog.get(name).gt_file
        if num_classes < n:
            raise InputError(
                f"MODEL.ROI_HEADS.NUM_CLASSES is {num_classes} but dataset {name!r} has {n} "
                f"classes ({gt_file}): set MODEL.ROI_HEADS.NUM_CLASSES {n}"
            )
        if num_classes > n:
            logger.warning(
                "MODEL.ROI_HEADS.NUM_CLASSES is %d but dataset %r has %d classes (%s): the %d "
                "extra class outputs are never trained", num_classes, name, n, gt_file,
                num_classes - n,
            )


def check_weights(cfg: CfgNode, *, required: bool = False, resume: bool = False) -> None:
    """The checkpoint a run will load exists and is complete (MODEL.WEIGHTS or, on --resume,
    the last checkpoint of OUTPUT_DIR).

    Args:
        cfg: the config.
        required: the run needs trained weights (--eval-only, actionness training); an empty
            MODEL.WEIGHTS is then an error.
        resume: --resume: the last checkpoint of OUTPUT_DIR, if there is one, replaces
            MODEL.WEIGHTS.
    """
    tag = os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")
    if resume and os.path.isfile(tag):
        with open(tag) as f:
            name = f.read().strip()
        check_checkpoint_file(os.path.join(cfg.OUTPUT_DIR, name), f"checkpoint named by {tag}")
        return
    weights = cfg.MODEL.WEIGHTS
    needs = (
        "this run needs a trained checkpoint: pass MODEL.WEIGHTS <output>/model_final.pth "
        "(or --resume to use the last checkpoint of OUTPUT_DIR)"
    )
    if not weights:
        if required:
            raise InputError(f"MODEL.WEIGHTS is empty: {needs}")
        return
    if "://" in weights:  # a URL (detectron2://, https://): fetched and checked at load time
        return
    try:
        check_checkpoint_file(weights, "checkpoint (MODEL.WEIGHTS)")
    except MissingFileError as e:
        if required:
            raise MissingFileError(f"{e}; {needs}") from e
        raise


def check_pcsc_setup(
    cfg: CfgNode,
    *,
    dataset_keys: Sequence[str] = ("TRAIN", "TEST"),
    weights_required: bool = False,
    resume: bool = False,
) -> None:
    """Every pre-flight check of a run: datasets, class count, weights.

    Args:
        cfg: the config of the run.
        dataset_keys: the DATASETS.<key> lists the run uses.
        weights_required: see :func:`check_weights`.
        resume: see :func:`check_weights`.
    """
    counts: Dict[str, int] = {}
    for key in dataset_keys:
        counts.update(check_dataset_names(cfg.DATASETS.get(key), f"DATASETS.{key}"))
    check_num_classes(cfg, counts)
    check_weights(cfg, required=weights_required, resume=resume)


def load_pcsc_cfg(config_file: str, opts: Optional[Sequence[str]] = None) -> CfgNode:
    """:func:`get_pcsc_cfg`, with a missing file or a bad key or value as an InputError."""
    if config_file:
        require_file(config_file, "config file")
    try:
        return get_pcsc_cfg(config_file, list(opts or []))
    # yacs reports unknown keys with KeyError and wrong value types with AssertionError.
    except (KeyError, AssertionError, ValueError, yaml.YAMLError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise InputError(f"{config_file or '<command line>'}: {message}") from e


def check_train_net_args(args: argparse.Namespace) -> None:
    """train_net.py's pre-flight: on an input problem, one ``error:`` line and exit status 2.

    Args:
        args: from ``detectron2.engine.default_argument_parser``.
    """
    try:
        cfg = load_pcsc_cfg(args.config_file, args.opts)
        check_pcsc_setup(
            cfg,
            dataset_keys=("TEST",) if args.eval_only else ("TRAIN", "TEST"),
            weights_required=args.eval_only,
            resume=args.resume,
        )
        # Evaluation-only tools (tools/eval_stages.py) run one process and have no launcher
        # arguments; only training splits its batch.
        workers = 1 if args.eval_only else args.num_gpus * args.num_machines
        if cfg.SOLVER.IMS_PER_BATCH % workers:
            raise InputError(
                f"{args.config_file or '<command line>'}: SOLVER.IMS_PER_BATCH = "
                f"{cfg.SOLVER.IMS_PER_BATCH} does not split over {workers} training processes "
                "(--num-gpus x --num-machines); make it a multiple"
            )
    except INPUT_ERRORS as e:
        exit_with_error(e)
