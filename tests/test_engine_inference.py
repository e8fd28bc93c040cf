"""Inference glue on a tiny synthetic set: batched test loading, and TR's training command
(sample extraction resumes after an interruption; training writes a trained head)."""
import os

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from pcsc_d2.data import get_split_annotations
from pcsc_d2.data.datasets import register_action_dataset
from pcsc_d2.data.synthetic import SyntheticConfig, generate_synthetic_dataset
from pcsc_d2.data.datasets import load_action_dataset
from pcsc_d2.engine import build_pcsc_test_loader, get_pcsc_cfg
from pcsc_d2.engine.actionness import (
    _sample_file,
    extract_actionness_samples,
    load_actionness_samples,
    split_videos,
    train_actionness,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quick", "pcsc_tiny.yaml")
DATASET = "pcsc_test_tr_train"


class _Interrupted(RuntimeError):
    pass


class _CountingModel:
    """Wraps the detector: counts the key frames it runs; raises once ``stop_after`` is hit."""

    def __init__(self, model, stop_after=None):
        self.model, self.stop_after, self.frames = model, stop_after, []

    def eval(self):
        self.model.eval()
        return self

    def __call__(self, inputs):
        if self.stop_after is not None and len(self.frames) >= self.stop_after:
            raise _Interrupted("simulated crash")
        self.frames += [(x["video"], x["frame"]) for x in inputs]
        return self.model(inputs)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tr") / "synthetic")
    generate_synthetic_dataset(
        root, seed=1, cfg=SyntheticConfig(num_train=2, num_test=1, min_frames=16, max_frames=16),
        workers=1,
    )
    register_action_dataset(DATASET, root, "synthetic-GT.pkl", 1, True, num_frames=4)
    cfg = get_pcsc_cfg(CONFIG, [
        "MODEL.PCSC.OUTPUT_FEATURES", "True", "MODEL.PCSC.ACTIONNESS.ENABLED", "True",
        "TUBES.REFINE.TRAIN_FRAME_STRIDE", "2", "TUBES.REFINE.TRAIN_EPOCHS", "3",
        # An untrained detector scores every box low: keep its tubes so there are samples.
        "TUBES.MIN_LENGTH", "2",
    ])
    torch.manual_seed(0)
    model = build_model(cfg)
    return cfg, model


def test_extraction_resumes_with_the_unfinished_videos(setup, tmp_path):
    cfg, model = setup
    videos = get_split_annotations(DATASET)["videos"]
    assert len(videos) == 2
    folder = str(tmp_path / "samples")
    frames_per_video = 8  # 16 frames, key-frame stride 2

    # Crash on the first key frame of the second video: the first video's samples are on disk
    # already (written when its last key frame was done, not when the next video starts).
    crashing = _CountingModel(model, stop_after=frames_per_video)
    with pytest.raises(_Interrupted):
        extract_actionness_samples(cfg, crashing, DATASET, folder)
    assert os.path.isfile(_sample_file(folder, videos[0]))
    assert not os.path.isfile(_sample_file(folder, videos[1]))
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]
    first = dict(np.load(_sample_file(folder, videos[0])))

    # The rerun runs the detector on the second video's key frames only.
    resumed = _CountingModel(model)
    extract_actionness_samples(cfg, resumed, DATASET, folder)
    assert {v for v, _ in resumed.frames} == {videos[1]}
    assert sorted(f for _, f in resumed.frames) == list(range(1, 17, 2))
    total = 0
    for video in videos:
        samples = np.load(_sample_file(folder, video))
        n = len(samples["labels"])
        total += n
        assert samples["features"].shape == (n, 64)  # ROI_BOX_HEAD.FC_DIM of the tiny config
        assert samples["classes"].shape == (n,)
        assert set(np.unique(samples["labels"])) <= {0.0, 1.0}
    assert total > 0
    np.testing.assert_array_equal(first["labels"], np.load(_sample_file(folder, videos[0]))["labels"])

    # Everything cached: nothing runs.
    idle = _CountingModel(model)
    extract_actionness_samples(cfg, idle, DATASET, folder)
    assert idle.frames == []


def test_processes_share_the_videos_out_and_cache_what_one_process_does(setup, tmp_path,
                                                                         monkeypatch):
    """tools/train_actionness.py --num-gpus 2: each process runs whole videos of its own (the
    linking needs all of a video's frames), none is run twice, and the cache is the same as one
    process writes."""
    from detectron2.utils import comm

    cfg, model = setup
    videos = get_split_annotations(DATASET)["videos"]
    alone = str(tmp_path / "alone")
    extract_actionness_samples(cfg, model, DATASET, alone)
    shared = str(tmp_path / "shared")
    runs = []
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    for rank in (0, 1):
        monkeypatch.setattr(comm, "get_rank", lambda r=rank: r)
        counting = _CountingModel(model)
        extract_actionness_samples(cfg, counting, DATASET, shared)
        runs.append(counting.frames)
    assert [{v for v, _ in frames} for frames in runs] == [{videos[0]}, {videos[1]}]
    assert [len(frames) for frames in runs] == [8, 8]  # every key frame of its video, once
    for video in videos:
        one, two = np.load(_sample_file(alone, video)), np.load(_sample_file(shared, video))
        for key in ("classes", "labels"):
            np.testing.assert_array_equal(one[key], two[key])
        np.testing.assert_allclose(one["features"], two["features"], rtol=1e-5, atol=1e-6)


def test_train_actionness_writes_a_checkpoint_with_a_trained_head(setup, tmp_path):
    cfg, model = setup
    before = {k: v.clone() for k, v in model.actionness_head.state_dict().items()}
    path = train_actionness(cfg, model, DATASET, str(tmp_path))
    assert path == str(tmp_path / "model_tr.pth") and os.path.isfile(path)
    saved = torch.load(path, map_location="cpu", weights_only=False)["model"]
    head = {k[len("actionness_head."):]: v for k, v in saved.items()
            if k.startswith("actionness_head.")}
    assert head.keys() == before.keys()
    assert any(not torch.equal(head[k], before[k]) for k in before)
    # A classifier is marked trained when its class had an action box among TR's training
    # samples (the validation videos excluded).
    train_videos, _ = split_videos(get_split_annotations(DATASET)["videos"],
                                   cfg.TUBES.REFINE.VAL_FRACTION, max(cfg.SEED, 0))
    train = load_actionness_samples(str(tmp_path / "actionness_samples"), train_videos)
    positive = set(train["classes"][train["labels"] > 0].tolist())
    assert head["class_trained"].tolist() == [c in positive for c in range(len(before["bias"]))]

    # Whatever the global RNG did in between, the same command trains the same head.
    torch.manual_seed(123)
    torch.rand(100)
    again = torch.load(train_actionness(cfg, model, DATASET, str(tmp_path / "again")),
                       map_location="cpu", weights_only=False)["model"]
    assert all(torch.equal(again["actionness_head." + k], head[k]) for k in head)


def test_tr_samples_are_the_features_inference_gives_its_detections(setup, tmp_path):
    """TR trains on what it is applied to: every cached sample's feature is the feature that
    inference (the evaluator's path) gives one of the detections of the same video."""
    cfg, model = setup
    folder = str(tmp_path / "samples")
    extract_actionness_samples(cfg, model, DATASET, folder)
    video = get_split_annotations(DATASET)["videos"][0]
    samples = np.load(_sample_file(folder, video))
    assert len(samples["features"]) > 0
    meta = MetadataCatalog.get(DATASET)
    dicts = [d for d in load_action_dataset(meta.dataset_root, meta.gt_file, 1, True, "ucf", 4, 2,
                                            annotated_only=False) if d["video"] == video]
    model.eval()
    with torch.no_grad():
        feats = torch.cat([out["instances"].features for b in build_pcsc_test_loader(
            cfg, dataset=dicts) for out in model(b)])
    dist = torch.cdist(torch.from_numpy(samples["features"]), feats)
    assert float(dist.min(dim=1).values.max()) < 1e-4


def test_split_videos_is_seeded_and_disjoint():
    videos = [f"C/v{i}" for i in range(10)]
    train, val = split_videos(videos, 0.2, seed=3)
    assert len(val) == 2 and sorted(train + val) == sorted(videos)
    assert split_videos(list(reversed(videos)), 0.2, seed=3) == (train, val)
    assert split_videos(videos, 0.2, seed=4) != (train, val)
    assert split_videos(videos[:2], 0.01, seed=0)[1] != []  # at least one when asked for any
    assert split_videos(videos, 0.0, seed=0) == (sorted(videos), [])


def test_batched_inference_matches_one_key_frame_at_a_time(setup):
    cfg, model = setup
    meta = MetadataCatalog.get(DATASET)
    dicts = load_action_dataset(meta.dataset_root, meta.gt_file, 1, True, "ucf", 4, 3,
                                annotated_only=False)[:5]
    single_cfg, batched_cfg = cfg.clone(), cfg.clone()
    single_cfg.TEST.PCSC.BATCH_SIZE = 1
    batched_cfg.TEST.PCSC.BATCH_SIZE = 3
    model.eval()
    with torch.no_grad():
        singles = [model(b)[0]["instances"]
                   for b in build_pcsc_test_loader(single_cfg, dataset=dicts)]
        batches = list(build_pcsc_test_loader(batched_cfg, dataset=dicts))
        assert [len(b) for b in batches] == [3, 2]
        batched = [out["instances"] for b in batches for out in model(b)]
    assert len(batched) == len(singles) == 5
    for one, many in zip(singles, batched):
        assert len(one) == len(many) > 0
        torch.testing.assert_close(many.pred_boxes.tensor, one.pred_boxes.tensor, atol=1e-3, rtol=0)
        torch.testing.assert_close(many.scores, one.scores, atol=1e-4, rtol=0)
        assert torch.equal(many.pred_classes, one.pred_classes)
