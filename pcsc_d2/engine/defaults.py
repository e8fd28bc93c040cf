"""Config and data-loader builders shared by train_net.py, the tools and the demo."""
from typing import List, Optional

from detectron2.config import CfgNode, get_cfg
from detectron2.data import build_detection_test_loader, build_detection_train_loader

from pcsc_d2.config import add_pcsc_config
from pcsc_d2.data import PCSCClipMapper, configure_pcsc_datasets

__all__ = ["get_pcsc_cfg", "build_pcsc_train_loader", "build_pcsc_test_loader"]


def get_pcsc_cfg(config_file: Optional[str] = None, opts: Optional[List[str]] = None) -> CfgNode:
    """Detectron2's defaults + pcsc_d2's keys, merged with a YAML file and KEY VALUE overrides.

    The datasets are re-registered with the config's clip length and key-frame strides, since
    those decide what a dataset dict holds.
    """
    cfg = get_cfg()
    add_pcsc_config(cfg)
    if config_file:
        cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(list(opts))
    configure_pcsc_datasets(cfg)
    return cfg


def build_pcsc_train_loader(cfg: CfgNode):
    """detectron2's train loader over the two-stream clip mapper."""
    return build_detection_train_loader(cfg, mapper=PCSCClipMapper(cfg, is_train=True))


def build_pcsc_test_loader(cfg: CfgNode, dataset_name: str):
    """detectron2's inference loader (one key frame per batch) over the clip mapper."""
    return build_detection_test_loader(
        cfg, dataset_name, mapper=PCSCClipMapper(cfg, is_train=False)
    )
