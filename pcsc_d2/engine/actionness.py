"""Training the class-specific actionness classifiers of temporal refinement (TR), end to end.

As the paper does it: run the trained detector (frozen) over the training videos, link its
detections into tubes per class, label every tube box 1 when it overlaps (IoU > 0.5) a GT box of
the tube's class in that frame, else 0, and train one binary classifier per class on the boxes'
cooperated RoI features.

The per-video samples are cached under ``<output>/actionness_samples/`` (one ``.npz`` per video,
written atomically), so an interrupted run resumes with the videos it had not finished. The
result is a checkpoint ``<output>/model_tr.pth`` holding the detector and the trained head.
"""
import collections
import logging
import os
from typing import Dict, List, Tuple

import numpy as np
import torch
import tqdm
from detectron2.data import MetadataCatalog
from detectron2.utils import comm

from pcsc_d2.data.datasets import load_action_dataset, get_split_annotations
from pcsc_d2.structures import d2_to_gt
from pcsc_d2.tubes import LinkingOptions, label_tube_boxes, link_video, train_actionness_classifiers
from pcsc_d2.utils.io import atomic_open, atomic_save_json

from .checkpoint import PCSCCheckpointer
from .defaults import build_pcsc_test_loader

__all__ = ["extract_actionness_samples", "train_actionness"]

logger = logging.getLogger(__name__)


def _sample_file(folder: str, video: str) -> str:
    return os.path.join(folder, video.replace("/", "__") + ".npz")


def _link_and_label(video: str, per_frame: Dict[int, Dict], gttubes: Dict, opts) -> Dict:
    """Link one video's detections and label each tube box at the processed frames."""
    frames = sorted(per_frame)
    tubes = link_video(
        frames,
        [per_frame[f]["boxes"] for f in frames],
        [per_frame[f]["scores"] for f in frames],
        [per_frame[f]["classes"] for f in frames],
        extras={"features": [per_frame[f]["features"] for f in frames]},
        opts=opts,
        video=video,
    )
    processed = set(frames)
    feats, classes, labels = [], [], []
    for tube, tube_labels in zip(tubes, label_tube_boxes(tubes, gttubes)):
        # Boxes linking filled into unprocessed frames repeat a neighbour: not new samples.
        keep = np.array([int(f) in processed for f in tube.frames], dtype=bool)
        feats.append(tube.extras["features"][keep])
        classes.append(np.full(int(keep.sum()), tube.label, dtype=np.int64))
        labels.append(np.asarray(tube_labels, dtype=np.float32)[keep])
    dim = next(iter(per_frame.values()))["features"].shape[1] if per_frame else 0
    return {
        "features": np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
        "classes": np.concatenate(classes) if classes else np.zeros(0, np.int64),
        "labels": np.concatenate(labels) if labels else np.zeros(0, np.float32),
    }


@torch.no_grad()
def extract_actionness_samples(cfg, model, dataset_name: str, folder: str) -> None:
    """Run the detector over the videos of ``dataset_name`` and cache labelled tube boxes.

    In a group of processes (detectron2's ``comm``), each runs its share of the videos.

    Args:
        cfg: the config (TUBES.* for linking, TUBES.REFINE.TRAIN_FRAME_STRIDE, INPUT.*).
        model: the detector, built with MODEL.PCSC.OUTPUT_FEATURES = True.
        dataset_name: a registered pcsc_d2 dataset (its videos and GT are used).
        folder: cache folder; videos with a finished ``.npz`` there are skipped.
    """
    meta = MetadataCatalog.get(dataset_name)
    gt = get_split_annotations(dataset_name)
    dicts = load_action_dataset(
        meta.dataset_root, meta.gt_file, meta.split, meta.is_train, meta.layout,
        cfg.INPUT.NUM_FRAMES, cfg.TUBES.REFINE.TRAIN_FRAME_STRIDE, annotated_only=False,
    )
    # Several processes (tools/train_actionness.py --num-gpus N) share the videos out, the same
    # way whatever is cached already.
    mine = set(sorted({d["video"] for d in dicts})[comm.get_rank():: comm.get_world_size()])
    todo = [d for d in dicts
            if d["video"] in mine and not os.path.isfile(_sample_file(folder, d["video"]))]
    remaining = collections.Counter(d["video"] for d in todo)
    logger.info(
        "TR samples: %d key frames of %d videos to run in this process (of %d)",
        len(todo), len(remaining), comm.get_world_size(),
    )
    if not todo:
        return
    loader = build_pcsc_test_loader(cfg, dataset=todo)
    opts = LinkingOptions.from_config(cfg)
    model.eval()
    per_video: Dict[str, Dict[int, Dict[str, np.ndarray]]] = collections.defaultdict(dict)
    with tqdm.tqdm(total=len(todo), desc="TR: detector on training videos",
                   disable=not comm.is_main_process()) as progress:
        for inputs in loader:
            for inp, out in zip(inputs, model(inputs)):
                video = inp["video"]
                inst = out["instances"].to("cpu")
                per_video[video][inp["frame"]] = {
                    "boxes": d2_to_gt(inst.pred_boxes.tensor.numpy()),
                    "scores": inst.scores.numpy(),
                    "classes": inst.pred_classes.numpy(),
                    "features": inst.features.numpy().astype(np.float32),
                }
                # Write a video's samples as soon as its last key frame is done, so that an
                # interruption loses at most the videos in progress.
                remaining[video] -= 1
                if remaining[video] == 0:
                    frames = per_video.pop(video)
                    samples = _link_and_label(video, frames, gt["gttubes"].get(video, {}), opts)
                    with atomic_open(_sample_file(folder, video), "wb") as f:
                        np.savez(f, **samples)
            progress.update(len(inputs))


def load_actionness_samples(folder: str, videos: List[str]) -> Dict[str, np.ndarray]:
    """Concatenate the cached samples of ``videos``: features (M, D), classes (M,), labels (M,)."""
    parts = [np.load(_sample_file(folder, v)) for v in videos]
    if not parts:
        raise ValueError(f"no videos to load actionness samples of from {folder}")
    return {k: np.concatenate([p[k] for p in parts]) for k in ("features", "classes", "labels")}


def split_videos(videos: List[str], fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """Seeded (train, validation) split of ``videos``; validation gets round(fraction * n) of
    them (at least one when fraction > 0 and there are two or more videos)."""
    videos = sorted(videos)
    n_val = int(round(fraction * len(videos)))
    if fraction > 0 and len(videos) >= 2:
        n_val = min(max(n_val, 1), len(videos) - 1)
    order = np.random.default_rng(seed).permutation(len(videos))
    val = sorted(videos[i] for i in order[:n_val])
    return [v for v in videos if v not in set(val)], val


def train_actionness(cfg, model, dataset_name: str, output_dir: str) -> str:
    """Extract samples (resumable), train ``model.actionness_head``, save the checkpoint.

    The head is re-initialised from ``cfg.SEED`` (0 when negative) first, so the same samples
    and config give the same classifiers. TUBES.REFINE.VAL_FRACTION of the training videos are
    held out to pick the best epoch; the history goes to ``<output_dir>/actionness_history.json``.

    Args:
        cfg: the config; MODEL.PCSC.ACTIONNESS.ENABLED and OUTPUT_FEATURES must be on.
        model: the detector with its trained weights loaded and an actionness head.
        dataset_name: the training dataset.
        output_dir: where the cache and ``model_tr.pth`` go.

    Returns:
        the path of the saved checkpoint (written by the main process of a group).
    """
    folder = os.path.join(output_dir, "actionness_samples")
    extract_actionness_samples(cfg, model, dataset_name, folder)
    comm.synchronize()  # every process's videos are cached; the main process trains
    if not comm.is_main_process():
        return os.path.join(output_dir, "model_tr.pth")
    seed = cfg.SEED if cfg.SEED >= 0 else 0
    r = cfg.TUBES.REFINE
    train_videos, val_videos = split_videos(
        get_split_annotations(dataset_name)["videos"], r.VAL_FRACTION, seed
    )
    train = load_actionness_samples(folder, train_videos)
    val = load_actionness_samples(folder, val_videos) if val_videos else None
    for name, samples, videos in (("training", train, train_videos), ("validation", val, val_videos)):
        if samples is None:
            continue
        num_pos = int(samples["labels"].sum())
        logger.info(
            "TR %s: %d tube boxes (%d positive, %d negative) of %d classes in %d videos", name,
            len(samples["labels"]), num_pos, len(samples["labels"]) - num_pos,
            len(np.unique(samples["classes"])), len(videos),
        )
    if len(train["labels"]) == 0:
        raise RuntimeError(
            "TR: the detector produced no tube on the training videos; train the detector first"
        )
    # The head starts from the seed, whatever the caller's RNG did before: same samples, same
    # config, same classifiers.
    head = model.actionness_head
    head.reset_parameters(torch.Generator(device=head.weight.device).manual_seed(seed))
    head.requires_grad_(True)
    history = train_actionness_classifiers(
        head, train, val, epochs=r.TRAIN_EPOCHS, lr=r.TRAIN_LR, batch_size=r.TRAIN_BATCH_SIZE,
        seed=seed,
    )
    head.requires_grad_(False)
    head.trained.fill_(True)
    positives = np.bincount(train["classes"][train["labels"] > 0], minlength=head.num_classes)
    head.class_trained.copy_(torch.from_numpy(positives[: head.num_classes] > 0))
    untrained = [i for i in range(head.num_classes) if positives[i] == 0]
    if untrained:
        logger.info(
            "TR: %d of %d classes had no action box in training (classes %s): their tubes are "
            "left as linked", len(untrained), head.num_classes, untrained,
        )
    history.update(train_videos=len(train_videos), val_videos=len(val_videos))
    atomic_save_json(history, os.path.join(output_dir, "actionness_history.json"), indent=1)
    PCSCCheckpointer(model, output_dir).save("model_tr")
    return os.path.join(output_dir, "model_tr.pth")
