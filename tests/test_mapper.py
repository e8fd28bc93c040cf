"""The two-stream clip mapper: shapes, resize, flip of pixels, boxes and x-flow."""
import os

import cv2
import numpy as np
import pytest
from detectron2.structures import BoxMode

from pcsc_d2.config import add_pcsc_config
from pcsc_d2.data import PCSCClipMapper
from detectron2.config import get_cfg

H, W, K = 40, 60, 4


def _cfg(flip: float, size: int = H):
    cfg = get_cfg()
    add_pcsc_config(cfg)
    cfg.INPUT.NUM_FRAMES = K
    cfg.INPUT.MIN_SIZE_TRAIN = (size,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.MIN_SIZE_TEST = size
    cfg.INPUT.MAX_SIZE_TEST = 1000
    cfg.INPUT.FLIP_PROB = flip
    return cfg


@pytest.fixture
def clip_dict(tmp_path):
    rgb, flow = [], []
    for i in range(K):
        img = np.zeros((H, W, 3), np.uint8)
        img[10:20, 5:15] = 255  # a bright square on the left (BGR = RGB for white)
        p = str(tmp_path / f"rgb{i}.png")
        cv2.imwrite(p, img)
        rgb.append(p)
        f = np.full((H, W, 3), 128, np.uint8)
        f[10:20, 5:15, 2] = 200  # x-flow (R channel; BGR index 2) of +4.5 px on the square
        f[10:20, 5:15, 1] = 100  # y-flow (G channel)
        p = str(tmp_path / f"flow{i}.png")
        cv2.imwrite(p, f)
        flow.append(p)
    return {"video": "A/v", "frame": 2, "nframes": K, "height": H, "width": W,
            "image_id": "A/v/00002", "rgb_files": rgb, "flow_files": flow,
            "annotations": [{"bbox": [5.0, 10.0, 15.0, 20.0], "bbox_mode": BoxMode.XYXY_ABS,
                             "category_id": 1}]}


def test_shapes_and_resize(clip_dict):
    out = PCSCClipMapper(_cfg(0.0, size=2 * H), is_train=False)(clip_dict)
    assert out["rgb"].shape == (3, K, 2 * H, 2 * W) and out["rgb"].dtype.is_floating_point is False
    assert out["flow"].shape == (3, K, 2 * H, 2 * W)
    assert out["instances"].gt_boxes.tensor.tolist() == [[10.0, 20.0, 30.0, 40.0]]
    assert out["instances"].gt_classes.tolist() == [1]
    assert (out["height"], out["width"], out["frame"]) == (H, W, 2)


def test_flip_mirrors_pixels_boxes_and_inverts_x_flow(clip_dict):
    out = PCSCClipMapper(_cfg(1.0), is_train=True)(clip_dict)
    rgb, flow = out["rgb"].numpy(), out["flow"].numpy()
    # The square moved to columns 45..54; the box follows it.
    assert rgb[:, :, 15, 50].min() == 255 and rgb[:, :, 15, 10].max() == 0
    assert out["instances"].gt_boxes.tensor.tolist() == [[45.0, 10.0, 55.0, 20.0]]
    # x-flow (channel 0 = R) becomes 255 - c: 200 -> 55 on the square, 128 -> 127 elsewhere;
    # y-flow (channel 1) is unchanged.
    assert (flow[0, :, 15, 50] == 55).all() and (flow[0, :, 30, 30] == 127).all()
    assert (flow[1, :, 15, 50] == 100).all()


def test_errors_name_the_problem(clip_dict):
    mapper = PCSCClipMapper(_cfg(0.0), is_train=False)
    missing = dict(clip_dict, rgb_files=clip_dict["rgb_files"][:-1] + ["/no/such/frame.jpg"])
    with pytest.raises(IOError, match="/no/such/frame.jpg"):
        mapper(missing)
    with pytest.raises(ValueError, match="INPUT.NUM_FRAMES is 4"):
        mapper(dict(clip_dict, rgb_files=clip_dict["rgb_files"][:2]))
