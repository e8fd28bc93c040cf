"""The two-stream clip mapper: a key-frame dict -> RGB and flow clips plus the key frame's boxes."""
import copy
import logging
from typing import Dict, List

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

__all__ = ["PCSCClipMapper", "read_frames"]

logger = logging.getLogger(__name__)


def read_frames(paths: List[str]) -> np.ndarray:
    """Read K images as one (K, H, W, 3) uint8 RGB array.

    Flow images are read the same way: their channels then come out as R = x-flow,
    G = y-flow, B = magnitude.

    Raises:
        IOError: naming the first file that is missing or cannot be decoded.
    """
    # A clip clamped at a video end repeats paths: decode each file once.
    cache: Dict[str, np.ndarray] = {}
    for p in paths:
        if p not in cache:
            img = cv2.imread(p, cv2.IMREAD_COLOR)
            if img is None:
                raise IOError(f"cannot read frame {p} (missing or not an image)")
            cache[p] = img
    clip = np.stack([cache[p] for p in paths])
    return clip[..., ::-1]  # BGR -> RGB


def _apply_to_clip(transforms: T.TransformList, clip: np.ndarray) -> np.ndarray:
    """Apply one sampled transform to every frame of a (K, H, W, 3) clip.

    A resize to the size the clip already has is skipped (the field's 320x240 frames at the
    default 240 px test size), and flips act on the whole clip at once.
    """
    for t in transforms.transforms:
        if isinstance(t, T.ResizeTransform) and (t.h, t.w) == (t.new_h, t.new_w):
            continue
        if isinstance(t, (T.HFlipTransform, T.NoOpTransform)):
            clip = t.apply_image(clip)
        else:
            clip = np.stack([t.apply_image(f) for f in clip])
    return np.ascontiguousarray(clip)


class PCSCClipMapper:
    """Map a key-frame dataset dict to the model's input.

    One transform (resize, and at training time a horizontal flip) is sampled per clip and
    applied to every frame of both streams and to the key frame's boxes. A flip mirrors the
    flow images too, and a mirrored x-flow changes sign: its channel c becomes 255 - c.

    Output dict::

        {"rgb": uint8 (3, K, H, W), "flow": uint8 (3, K, H, W),
         "instances": Instances (gt_boxes, gt_classes) in the resized frame,
         "height", "width" (original), "video", "frame", "nframes", "image_id"}
    """

    @configurable
    def __init__(self, *, is_train: bool, augmentations: List[T.Augmentation], num_frames: int):
        """
        Args:
            is_train: keep annotations and use the training augmentations.
            augmentations: detectron2 augmentations, sampled once per clip.
            num_frames: K; every dict must hold K rgb_files and K flow_files.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
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
        return {"is_train": is_train, "augmentations": augs, "num_frames": cfg.INPUT.NUM_FRAMES}

    def __call__(self, dataset_dict: Dict) -> Dict:
        d = copy.deepcopy(dataset_dict)
        for key in ("rgb_files", "flow_files"):
            if len(d[key]) != self.num_frames:
                raise ValueError(
                    f"{d['image_id']}: {key} holds {len(d[key])} frames but INPUT.NUM_FRAMES is "
                    f"{self.num_frames}; register the datasets with the config's K "
                    "(pcsc_d2.data.configure_pcsc_datasets(cfg))"
                )
        rgb = read_frames(d.pop("rgb_files"))
        flow = read_frames(d.pop("flow_files"))
        if rgb.shape != flow.shape:
            raise ValueError(f"{d['image_id']}: RGB frames {rgb.shape} and flow {flow.shape} differ")
        aug_input = T.AugInput(rgb[self.num_frames // 2])
        transforms = self.augmentations(aug_input)
        rgb, flow = _apply_to_clip(transforms, rgb), _apply_to_clip(transforms, flow)
        if any(isinstance(t, T.HFlipTransform) for t in transforms.transforms):
            flow[..., 0] = 255 - flow[..., 0]
        h, w = rgb.shape[1:3]
        # (K, H, W, 3) -> (3, K, H, W)
        d["rgb"] = torch.from_numpy(np.ascontiguousarray(rgb.transpose(3, 0, 1, 2)))
        d["flow"] = torch.from_numpy(np.ascontiguousarray(flow.transpose(3, 0, 1, 2)))
        annos = [
            utils.transform_instance_annotations(a, transforms, (h, w))
            for a in d.pop("annotations", [])
        ]
        d["instances"] = utils.annotations_to_instances(annos, (h, w))
        return d
