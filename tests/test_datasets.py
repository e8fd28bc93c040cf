"""Dataset registration and key-frame dicts on a tiny hand-made UCF-layout set."""
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import pcsc_d2  # noqa: F401
from pcsc_d2.data import (
    class_flip_permutation,
    clip_frame_indices,
    get_split_annotations,
    register_action_dataset,
    save_annotations,
)
from pcsc_d2.data.synthetic import CLASSES

H, W = 24, 32


@pytest.fixture
def tiny_root(tmp_path):
    tube = np.array([[f, 2, 3, 12, 20] for f in range(3, 8)], np.float32)
    gt = {
        "labels": ["A", "B"],
        "gttubes": {"A/v1": {0: [tube]}, "B/v2": {1: [tube[:2] + [0, 1, 1, 1, 1]]}},
        "nframes": {"A/v1": 10, "B/v2": 6},
        "resolution": {"A/v1": (H, W), "B/v2": (H, W)},
        "train_videos": [["A/v1"]],
        "test_videos": [["B/v2"]],
    }
    for video, n in gt["nframes"].items():
        for kind in ("rgb-images", "brox-images"):
            os.makedirs(tmp_path / kind / video)
            for i in range(1, n + 1):
                cv2.imwrite(str(tmp_path / kind / video / f"{i:05d}.jpg"), np.full((H, W, 3), i))
    save_annotations(gt, str(tmp_path / "gt.pkl"))
    return str(tmp_path)


def test_clip_indices_clamp_at_both_ends():
    assert clip_frame_indices(1, 10, 4) == [1, 1, 1, 2]
    assert clip_frame_indices(10, 10, 4) == [8, 9, 10, 10]
    assert clip_frame_indices(5, 10, 8) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert clip_frame_indices(2, 3, 5) == [1, 1, 2, 3, 3]


def test_train_dicts_are_the_annotated_frames(tiny_root):
    register_action_dataset("tiny_train", tiny_root, "gt.pkl", 1, True, num_frames=4)
    dicts = DatasetCatalog.get("tiny_train")
    assert [d["frame"] for d in dicts] == [3, 4, 5, 6, 7]
    d = dicts[0]
    assert d["video"] == "A/v1" and d["nframes"] == 10 and (d["height"], d["width"]) == (H, W)
    assert d["image_id"] == "A/v1/00003"
    root = os.path.abspath(tiny_root)
    assert d["rgb_files"] == [os.path.join(root, "rgb-images", "A/v1", f"{i:05d}.jpg")
                              for i in (1, 2, 3, 4)]
    assert d["flow_files"][-1] == os.path.join(root, "brox-images", "A/v1", "00004.jpg")
    (ann,) = d["annotations"]
    assert ann["bbox"] == [2.0, 3.0, 13.0, 21.0]  # inclusive pixels -> XYXY_ABS (x2 + 1, y2 + 1)
    assert ann["category_id"] == 0 and ann["tube_id"] == 0
    assert MetadataCatalog.get("tiny_train").thing_classes == ["A", "B"]
    gttubes = MetadataCatalog.get("tiny_train").gttubes
    assert list(gttubes) == ["A/v1"] and gttubes["A/v1"][0][0][:, 0].tolist() == [3, 4, 5, 6, 7]
    register_action_dataset("tiny_train2", tiny_root, "gt.pkl", 1, True, num_frames=4,
                            key_frame_stride=2)
    assert [d["frame"] for d in DatasetCatalog.get("tiny_train2")] == [3, 5, 7]


def test_test_dicts_cover_every_frame(tiny_root):
    register_action_dataset("tiny_test", tiny_root, "gt.pkl", 1, False, num_frames=4)
    dicts = DatasetCatalog.get("tiny_test")
    assert [d["frame"] for d in dicts] == [1, 2, 3, 4, 5, 6]
    assert [len(d["annotations"]) for d in dicts] == [0, 0, 1, 1, 0, 0]
    last = dicts[-1]["rgb_files"]
    assert [os.path.basename(p) for p in last] == ["00004.jpg", "00005.jpg", "00006.jpg",
                                                   "00006.jpg"]
    split = get_split_annotations("tiny_test")
    assert split["videos"] == ["B/v2"] and list(split["gttubes"]) == ["B/v2"]


def test_missing_dataset_names_the_expected_path(tmp_path):
    register_action_dataset("tiny_missing", str(tmp_path / "nowhere"), "gt.pkl", 1, True)
    with pytest.raises(FileNotFoundError, match="nowhere.*gt.pkl"):
        DatasetCatalog.get("tiny_missing")


def test_predefined_names_are_registered_lazily(monkeypatch, tmp_path):
    names = ["ucf24_train", "ucf24_test", "synthetic_train", "synthetic_test"] + [
        f"jhmdb_{s}_split{i}" for s in ("train", "test") for i in (1, 2, 3)
    ]
    for name in names:
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).evaluator_type == "pcsc"
    # Re-registration with another root/K (what configure_pcsc_datasets does) replaces them.
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    from pcsc_d2.data import register_pcsc_datasets

    register_pcsc_datasets(num_frames=4)
    expected = str(tmp_path / "jhmdb" / "JHMDB-GT.pkl")
    assert MetadataCatalog.get("jhmdb_test_split2").gt_file == expected
    with pytest.raises(FileNotFoundError, match="JHMDB-GT.pkl"):
        DatasetCatalog.get("jhmdb_test_split2")
    monkeypatch.delenv("DETECTRON2_DATASETS")
    register_pcsc_datasets()


def test_class_flip_permutation(tiny_root):
    # The synthetic set mirrors MoveRight <-> MoveLeft; the field's datasets mirror nothing.
    assert MetadataCatalog.get("synthetic_train").class_flip_map == [("MoveRight", "MoveLeft")]
    assert {"MoveRight", "MoveLeft"} <= set(CLASSES)
    assert MetadataCatalog.get("ucf24_train").class_flip_map == []
    assert class_flip_permutation(["ucf24_train"]) is None  # reads no GT file
    register_action_dataset("tiny_flip", tiny_root, "gt.pkl", 1, True, class_flip_map=[("B", "A")])
    register_action_dataset("tiny_noflip", tiny_root, "gt.pkl", 1, True)
    register_action_dataset("tiny_bad", tiny_root, "gt.pkl", 1, True, class_flip_map=[("A", "C")])
    assert class_flip_permutation(["tiny_flip"]) == [1, 0]
    assert class_flip_permutation(["tiny_noflip"]) is None
    with pytest.raises(ValueError, match="'C'.*gt.pkl"):
        class_flip_permutation(["tiny_bad"])
    with pytest.raises(ValueError, match="mirror their classes differently"):
        class_flip_permutation(["tiny_flip", "tiny_noflip"])
