"""Dataset registration and key-frame dicts on a tiny hand-made UCF-layout set."""
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import pcsc_d2  # noqa: F401
from pcsc_d2.data import (
    class_flip_pairs,
    class_flip_permutation,
    clip_frame_indices,
    get_split_annotations,
    load_annotations,
    register_action_dataset,
    register_pcsc_datasets,
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


def test_class_flip_permutation(tiny_root, tmp_path):
    # The pairs come from the GT file's "flip_pairs" key; a file without it mirrors nothing.
    gt = load_annotations(os.path.join(tiny_root, "gt.pkl"))
    save_annotations(dict(gt, flip_pairs=[["B", "A"]]), os.path.join(tiny_root, "flip.pkl"))
    save_annotations(dict(gt, flip_pairs=[["A", "C"]]), os.path.join(tiny_root, "bad.pkl"))
    save_annotations(dict(gt, flip_pairs=[["A", "B"], ["B", "A"]]),
                     os.path.join(tiny_root, "twice.pkl"))
    register_action_dataset("tiny_flip", tiny_root, "flip.pkl", 1, True)
    register_action_dataset("tiny_noflip", tiny_root, "gt.pkl", 1, True)
    register_action_dataset("tiny_bad", tiny_root, "bad.pkl", 1, True)
    register_action_dataset("tiny_twice", tiny_root, "twice.pkl", 1, True)
    assert class_flip_permutation(["tiny_flip"]) == [1, 0]
    assert class_flip_permutation(["tiny_noflip"]) is None
    with pytest.raises(ValueError, match="bad.pkl.*'C', which is not one of the file's classes"):
        class_flip_permutation(["tiny_bad"])
    with pytest.raises(ValueError, match="twice.pkl.*second partner"):
        class_flip_permutation(["tiny_twice"])
    with pytest.raises(ValueError, match="mirror their classes differently"):
        class_flip_permutation(["tiny_flip", "tiny_noflip"])
    # Pairs given at registration override the file's.
    register_action_dataset("tiny_override", tiny_root, "gt.pkl", 1, True,
                            class_flip_map=[("A", "B")])
    assert class_flip_permutation(["tiny_override"]) == [1, 0]
    with pytest.raises(ValueError, match="not a pair"):
        class_flip_pairs({"labels": ["A"], "flip_pairs": [["A"]]})


def test_synthetic_generator_writes_its_flip_pairs(tmp_path, monkeypatch):
    from pcsc_d2.data.synthetic import SyntheticConfig, generate_synthetic_dataset

    tiny = SyntheticConfig(num_train=1, num_test=1, min_frames=12, max_frames=12)
    generate_synthetic_dataset(str(tmp_path / "synthetic"), seed=0, cfg=tiny, workers=1)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_pcsc_datasets()
    try:
        assert class_flip_permutation(["synthetic_train"]) == [1, 0, 2, 3, 4]
        assert CLASSES[:2] == ["MoveRight", "MoveLeft"]
    finally:
        monkeypatch.delenv("DETECTRON2_DATASETS")
        register_pcsc_datasets()


def _prepared_folder(root, name, gt, layout_dir="rgb-images", ext="pkl"):
    os.makedirs(os.path.join(root, name, layout_dir), exist_ok=True)
    save_annotations(gt, os.path.join(root, name, f"{name}-GT.{ext}"))


def test_dataset_folders_register_themselves(tiny_root, tmp_path, monkeypatch):
    gt = load_annotations(os.path.join(tiny_root, "gt.pkl"))
    root = str(tmp_path / "root")
    _prepared_folder(root, "mine", gt)
    three = dict(gt, train_videos=[["A/v1"], ["B/v2"], ["A/v1"]],
                 test_videos=[["B/v2"], ["A/v1"], ["B/v2"]])
    _prepared_folder(root, "hmdb_like", three, layout_dir="Frames", ext="json")
    _prepared_folder(root, "no_frames", gt, layout_dir="something_else")
    os.makedirs(os.path.join(root, "synthetic", "rgb-images"))  # predefined: keeps its names
    save_annotations(gt, os.path.join(root, "synthetic", "synthetic-GT.pkl"))
    monkeypatch.setenv("DETECTRON2_DATASETS", root)
    calls = []
    import pcsc_d2.data.datasets as datasets_module

    real_load = datasets_module.load_annotations
    monkeypatch.setattr(datasets_module, "load_annotations",
                        lambda path: calls.append(path) or real_load(path))
    try:
        names = register_pcsc_datasets(num_frames=4)
        # Registration lists folders only: no GT file was read.
        assert calls == []
        assert names == ["hmdb_like_train", "hmdb_like_test", "mine_train", "mine_test"]
        assert not any(n.startswith(("no_frames", "synthetic_train_")) for n in DatasetCatalog.list())
        meta = MetadataCatalog.get("hmdb_like_test")
        assert meta.layout == "jhmdb" and meta.split == 1 and not meta.is_train
        assert meta.gt_file == os.path.join(root, "hmdb_like", "hmdb_like-GT.json")
        train = DatasetCatalog.get("mine_train")
        assert [d["frame"] for d in train] == [3, 4, 5, 6, 7] and calls
        assert train[0]["rgb_files"][0] == os.path.join(root, "mine", "rgb-images", "A/v1",
                                                        "00001.jpg")
        assert MetadataCatalog.get("synthetic_train").gt_file == os.path.join(
            root, "synthetic", "synthetic-GT.pkl")
        # Split names are registered when a config asks for them.
        from pcsc_d2.engine import get_pcsc_cfg

        get_pcsc_cfg(None, ["DATASETS.TRAIN", "('hmdb_like_train_split3',)",
                            "DATASETS.TEST", "('hmdb_like_test_split2', 'mine_test_split9')"])
        assert MetadataCatalog.get("hmdb_like_train_split3").split == 3
        assert [d["video"] for d in DatasetCatalog.get("hmdb_like_test_split2")][0] == "A/v1"
        with pytest.raises(ValueError, match="split 9 requested, the file has 1"):
            DatasetCatalog.get("mine_test_split9")
    finally:
        monkeypatch.delenv("DETECTRON2_DATASETS")
        register_pcsc_datasets()
