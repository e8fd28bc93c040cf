"""Every YAML in configs/ loads with add_pcsc_config; the quick ones build a model."""
import glob
import os

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model

import pcsc_d2.modeling  # noqa: F401  (registers the PCSC components)
from pcsc_d2.config import add_pcsc_config

_CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
_ALL = sorted(glob.glob(os.path.join(_CONFIGS, "**", "*.yaml"), recursive=True))
_QUICK = [p for p in _ALL if os.sep + "quick" + os.sep in p]


def _load(path):
    cfg = get_cfg()
    add_pcsc_config(cfg)
    cfg.merge_from_file(path)
    return cfg


def test_configs_exist():
    assert len(_ALL) >= 15 and _QUICK
    names = {os.path.relpath(p, _CONFIGS) for p in _ALL}
    assert {"Base-PCSC.yaml", "pcsc_ucf24.yaml", "pcsc_jhmdb.yaml", "pcsc_synthetic.yaml"} <= names


@pytest.mark.parametrize("path", _ALL, ids=lambda p: os.path.relpath(p, _CONFIGS))
def test_config_loads(path):
    cfg = _load(path)
    assert cfg.MODEL.META_ARCHITECTURE == "PCSCTwoStreamRCNN"
    assert cfg.MODEL.ROI_HEADS.NAME == "PCSCCascadeROIHeads"
    assert list(cfg.MODEL.PIXEL_MEAN) == [127.5] * 3 and list(cfg.MODEL.PIXEL_STD) == [127.5] * 3
    pcsc = cfg.MODEL.PCSC
    assert set(pcsc.STREAMS) <= {"rgb", "flow"} and pcsc.STREAMS
    assert 0 <= pcsc.NUM_STAGES <= 4
    assert pcsc.NUM_STAGES == 0 or len(pcsc.STREAMS) == 2
    assert set(cfg.MODEL.FPN.IN_FEATURES) <= set(cfg.MODEL.I3D.OUT_FEATURES)
    # The LR schedule drops inside the run.
    assert all(0 < s < cfg.SOLVER.MAX_ITER for s in cfg.SOLVER.STEPS)
    if os.path.basename(path) != "Base-PCSC.yaml":
        with open(path) as f:
            assert "_BASE_" in f.read()


def test_paper_schedule_and_classes():
    ucf = _load(os.path.join(_CONFIGS, "pcsc_ucf24.yaml"))
    assert ucf.MODEL.ROI_HEADS.NUM_CLASSES == 24 and ucf.SOLVER.BASE_LR == 0.01
    epoch = ucf.SOLVER.MAX_ITER // 6
    assert tuple(ucf.SOLVER.STEPS) == (4 * epoch, 5 * epoch)
    assert ucf.MODEL.RPN.BATCH_SIZE_PER_IMAGE == 256
    # The paper samples 512 RoIs per image; the configs sample 256 (Base-PCSC.yaml says why).
    assert ucf.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE == 256
    jhmdb = _load(os.path.join(_CONFIGS, "pcsc_jhmdb.yaml"))
    assert jhmdb.MODEL.ROI_HEADS.NUM_CLASSES == 21
    assert jhmdb.DATASETS.TRAIN == ("jhmdb_train_split1",)


@pytest.mark.parametrize("path", _QUICK, ids=lambda p: os.path.relpath(p, _CONFIGS))
def test_quick_config_builds(path):
    cfg = _load(path)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.device.type == "cpu"
    assert sorted(model.proposal_generators) == sorted(cfg.MODEL.PCSC.STREAMS)
