"""The two-stream clip mapper: a key-frame dict -> RGB and flow clips plus the key frame's boxes."""
import copy
import inspect
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from pcsc_d2.utils.image_io import read_image

from .datasets import class_flip_permutation

__all__ = ["PCSCClipMapper", "read_clip", "read_frames"]

logger = logging.getLogger(__name__)


def _imread(path: str) -> np.ndarray:
    """A (H, W, 3) uint8 BGR frame; a missing, truncated or undecodable file is an IOError."""
    return read_image(path)


def read_frames(paths: List[str]) -> np.ndarray:
    """Read K images as one (K, H, W, 3) uint8 RGB array.

    Flow images are read the same way: their channels then come out as R = x-flow,
    G = y-flow, B = magnitude.

    Raises:
        IOError: naming the first file that is missing, truncated or cannot be decoded.
    """
    # A clip clamped at a video end repeats paths: decode each file once.
    cache: Dict[str, np.ndarray] = {}
    for p in paths:
        if p not in cache:
            cache[p] = _imread(p)
    return np.ascontiguousarray(np.stack([cache[p] for p in paths])[..., ::-1])  # BGR -> RGB


def _transform_frame(transforms: T.TransformList, img: np.ndarray) -> np.ndarray:
    """Apply a sampled transform to one (H, W, 3) frame, returning a contiguous array.

    A resize to the size the frame already has is skipped (the field's 320x240 frames at the
    default 240 px sizes), and a flip uses cv2.flip, which copies once into contiguous memory
    where np.flip's view would cost a strided copy later.
    """
    for t in transforms.transforms:
        if isinstance(t, T.NoOpTransform):
            continue
        if isinstance(t, T.ResizeTransform) and (t.h, t.w) == (t.new_h, t.new_w):
            continue
        img = cv2.flip(img, 1) if isinstance(t, T.HFlipTransform) else t.apply_image(img)
    return np.ascontiguousarray(img)


def read_clip(
    paths: List[str],
    transforms: Optional[T.TransformList] = None,
    expected_size: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """Read K frames, transform each with the same ``transforms``, as one RGB planar clip.

    Args:
        paths: K image paths (repeats allowed: each file is decoded once).
        transforms: applied to every frame; None applies nothing.
        expected_size: (height, width) every decoded frame must have (the size ``transforms``
            was sampled for); None checks nothing.

    Returns:
        uint8 array (3, K, H', W') in RGB channel order (for flow images: x, y, magnitude).

    Raises:
        IOError: naming the first file that is missing, truncated or cannot be decoded.
        ValueError: naming a frame whose size is not ``expected_size``.
    """
    transforms = transforms or T.TransformList([])
    clip = None
    first_index: Dict[str, int] = {}
    for k, p in enumerate(paths):
        if p in first_index:
            clip[:, k] = clip[:, first_index[p]]
            continue
        img = _imread(p)
        if expected_size is not None and img.shape[:2] != tuple(expected_size):
            raise ValueError(
                f"frame {p} is {img.shape[1]}x{img.shape[0]} (WxH) but its dataset entry says "
                f"{expected_size[1]}x{expected_size[0]} (the GT file's resolution)"
            )
        img = _transform_frame(transforms, img)
        if clip is None:
            clip = np.empty((3, len(paths)) + img.shape[:2], np.uint8)
        # cv2.split writes each channel plane with SIMD; taking the planes in reverse order
        # turns OpenCV's BGR into RGB. About 2x faster than a strided numpy transpose.
        blue, green, red = cv2.split(img)
        clip[0, k], clip[1, k], clip[2, k] = red, green, blue
        first_index[p] = k
    return clip


def _reads_image_only(aug: T.Augmentation) -> bool:
    """Whether ``aug.get_transform`` takes just the image (detectron2's rule for input_args)."""
    if aug.input_args is not None:
        return tuple(aug.input_args) == ("image",)
    return len(inspect.signature(aug.get_transform).parameters) == 1


class PCSCClipMapper:
    """Map a key-frame dataset dict to the model's input.

    One transform (resize, and at training time a horizontal flip) is sampled per clip and
    applied to every frame of both streams and to the key frame's boxes. A flip mirrors the
    flow images too, and a mirrored x-flow changes sign: its channel c becomes 255 - c. A flip
    also relabels the classes whose mirror image is another class (``class_flip_map``).

    Output dict::

        {"rgb": uint8 (3, K, H, W), "flow": uint8 (3, K, H, W),
         "instances": Instances (gt_boxes, gt_classes) in the resized frame,
         "height", "width" (original), "video", "frame", "nframes", "image_id"}
    """

    @configurable
    def __init__(
        self,
        *,
        is_train: bool,
        augmentations: List[T.Augmentation],
        num_frames: int,
        class_flip_map: Optional[Sequence[int]] = None,
    ):
        """
        Args:
            is_train: keep annotations and use the training augmentations.
            augmentations: detectron2 augmentations, sampled once per clip.
            num_frames: K; every dict must hold K rgb_files and K flow_files.
            class_flip_map: on a horizontal flip, class c becomes ``class_flip_map[c]``
                (see :func:`pcsc_d2.data.class_flip_permutation`); None keeps every class.
        """
        self.is_train = is_train
        self.class_flip_map = list(class_flip_map) if class_flip_map is not None else None
        for aug in augmentations:
            if not _reads_image_only(aug):
                raise ValueError(
                    f"PCSCClipMapper samples transforms from the image size only; {aug} needs "
                    "other inputs too"
                )
        self.augmentations = list(augmentations)
        self.num_frames = num_frames
        logger.info(
            "[PCSCClipMapper] %s, K=%d, augmentations: %s",
            "train" if is_train else "test", num_frames, augmentations,
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        augs = utils.build_augmentation(cfg, is_train)  # ResizeShortestEdge (+ flip at train)
        if is_train:
            augs = [a for a in augs if not isinstance(a, T.RandomFlip)]
            if cfg.INPUT.FLIP_PROB > 0:
                augs.append(T.RandomFlip(prob=cfg.INPUT.FLIP_PROB, horizontal=True))
        return {
            "is_train": is_train,
            "augmentations": augs,
            "num_frames": cfg.INPUT.NUM_FRAMES,
            "class_flip_map": class_flip_permutation(cfg.DATASETS.TRAIN) if is_train else None,
        }

    def _sample_transforms(self, height: int, width: int) -> T.TransformList:
        """Sample one transform per augmentation for a (height, width) clip, reading no pixels."""
        transforms = []
        for aug in self.augmentations:
            # A zero-stride array of the current size: augmentations read only its shape.
            probe = np.broadcast_to(np.zeros((), np.uint8), (height, width, 3))
            t = aug.get_transform(probe)
            transforms.append(t)
            if isinstance(t, T.ResizeTransform):
                height, width = t.new_h, t.new_w
            elif not isinstance(t, (T.HFlipTransform, T.VFlipTransform, T.NoOpTransform)):
                height, width = t.apply_image(np.zeros((height, width, 3), np.uint8)).shape[:2]
        return T.TransformList(transforms)

    def __call__(self, dataset_dict: Dict) -> Dict:
        d = copy.deepcopy(dataset_dict)
        for key in ("rgb_files", "flow_files"):
            if len(d[key]) != self.num_frames:
                raise ValueError(
                    f"{d['image_id']}: {key} holds {len(d[key])} frames but INPUT.NUM_FRAMES is "
                    f"{self.num_frames}; register the datasets with the config's K "
                    "(pcsc_d2.data.configure_pcsc_datasets(cfg))"
                )
        # Sample the clip's one transform from the recorded size, then read both streams
        # through it frame by frame (no (K, H, W, 3) intermediate).
        size = (d["height"], d["width"])
        transforms = self._sample_transforms(*size)
        rgb = read_clip(d.pop("rgb_files"), transforms, size)
        flow = read_clip(d.pop("flow_files"), transforms, size)
        if rgb.shape != flow.shape:
            raise ValueError(
                f"{d['image_id']}: RGB clip {tuple(rgb.shape)} and flow clip {tuple(flow.shape)} "
                "differ in size"
            )
        flipped = any(isinstance(t, T.HFlipTransform) for t in transforms.transforms)
        if flipped:
            np.subtract(255, flow[0], out=flow[0])  # mirrored x-flow changes sign
        h, w = rgb.shape[2:]
        d["rgb"] = torch.from_numpy(rgb)
        d["flow"] = torch.from_numpy(flow)
        annos = [
            utils.transform_instance_annotations(a, transforms, (h, w))
            for a in d.pop("annotations", [])
        ]
        if flipped and self.class_flip_map is not None:
            for a in annos:
                a["category_id"] = self.class_flip_map[a["category_id"]]
        d["instances"] = utils.annotations_to_instances(annos, (h, w))
        return d
