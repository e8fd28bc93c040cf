"""The two-stream clip mapper: shapes, resize, flip of pixels, boxes and x-flow."""

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


def test_flip_swaps_mirrored_classes_only_when_flipping(clip_dict):
    # Class 1 mirrors into class 0 (say MoveLeft -> MoveRight); class 2 is its own mirror.
    flip_map = [1, 0, 2]
    cfg = _cfg(1.0)
    flipped = PCSCClipMapper(cfg, is_train=True)
    flipping = PCSCClipMapper(
        is_train=True, augmentations=flipped.augmentations, num_frames=K, class_flip_map=flip_map
    )
    assert flipped.class_flip_map is None  # no training dataset with mirrored classes
    assert flipped(clip_dict)["instances"].gt_classes.tolist() == [1]
    assert flipping(clip_dict)["instances"].gt_classes.tolist() == [0]
    third = dict(clip_dict, annotations=[dict(clip_dict["annotations"][0], category_id=2)])
    assert flipping(third)["instances"].gt_classes.tolist() == [2]
    not_flipping = PCSCClipMapper(
        is_train=True, augmentations=PCSCClipMapper(_cfg(0.0), is_train=True).augmentations,
        num_frames=K, class_flip_map=flip_map,
    )
    assert not_flipping(clip_dict)["instances"].gt_classes.tolist() == [1]


def test_errors_name_the_problem(clip_dict):
    mapper = PCSCClipMapper(_cfg(0.0), is_train=False)
    missing = dict(clip_dict, rgb_files=clip_dict["rgb_files"][:-1] + ["/no/such/frame.jpg"])
    with pytest.raises(IOError, match="/no/such/frame.jpg"):
        mapper(missing)
    with pytest.raises(ValueError, match="INPUT.NUM_FRAMES is 4"):
        mapper(dict(clip_dict, rgb_files=clip_dict["rgb_files"][:2]))


def test_channel_order_frame_order_and_repeated_paths(tmp_path, clip_dict):
    # Frame i is pure red with R = 10 * (i + 1) (written as BGR); flow frame i has x = i, y = 7.
    rgb, flow = [], []
    for i in range(3):
        img = np.zeros((H, W, 3), np.uint8)
        img[..., 2] = 10 * (i + 1)
        rgb.append(str(tmp_path / f"red{i}.png"))
        cv2.imwrite(rgb[-1], img)
        f = np.zeros((H, W, 3), np.uint8)
        f[..., 2], f[..., 1] = i, 7
        flow.append(str(tmp_path / f"fl{i}.png"))
        cv2.imwrite(flow[-1], f)
    # A clip clamped at the start of a video repeats its first frame.
    order = [0, 0, 1, 2]
    d = dict(clip_dict, rgb_files=[rgb[i] for i in order], flow_files=[flow[i] for i in order])
    out = PCSCClipMapper(_cfg(0.0), is_train=False)(d)
    r, f = out["rgb"].numpy(), out["flow"].numpy()
    assert r[0, :, 0, 0].tolist() == [10, 10, 20, 30]
    assert r[1:].max() == 0
    assert f[0, :, 5, 5].tolist() == [0, 0, 1, 2] and (f[1] == 7).all() and f[2].max() == 0


def test_resize_then_flip_keeps_boxes_on_the_pixels(clip_dict):
    out = PCSCClipMapper(_cfg(1.0, size=2 * H), is_train=True)(clip_dict)
    rgb = out["rgb"].numpy()
    assert rgb.shape == (3, K, 2 * H, 2 * W)
    # The square (cols 5..14, rows 10..19) becomes cols 10..29 at 2x, then 90..109 mirrored.
    x1, y1, x2, y2 = out["instances"].gt_boxes.tensor[0].tolist()
    assert (x1, y1, x2, y2) == (90.0, 20.0, 110.0, 40.0)
    assert rgb[:, :, 30, 100].min() > 200 and rgb[:, :, 30, 20].max() < 50
    assert rgb[:, :, 30, int(x1) - 3].max() < 50 and rgb[:, :, 30, int(x2) + 2].max() < 50


def test_frame_size_must_match_the_entry(clip_dict):
    with pytest.raises(ValueError, match="rgb0.png is 60x40"):
        PCSCClipMapper(_cfg(0.0), is_train=False)(dict(clip_dict, height=50))
