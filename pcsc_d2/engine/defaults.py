"""Config and data-loader builders shared by train_net.py, the tools and the demo."""
import logging
import os
from typing import Dict, List, Optional

import detectron2.engine.defaults as d2_defaults
from detectron2.config import CfgNode, get_cfg
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import create_ddp_model
from detectron2.utils import comm
import torch
from torch import nn

from pcsc_d2.config import add_pcsc_config
from pcsc_d2.data import PCSCClipMapper, configure_pcsc_datasets

__all__ = [
    "configure_amp",
    "get_pcsc_cfg",
    "build_pcsc_train_loader",
    "build_pcsc_test_loader",
    "create_ddp_model_cpu_aware",
    "enable_cpu_distributed_training",
    "split_cpu_threads",
    "train_net_dist_url",
]

logger = logging.getLogger(__name__)


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


def build_pcsc_test_loader(
    cfg: CfgNode, dataset_name: Optional[str] = None, *, dataset: Optional[List[Dict]] = None
):
    """detectron2's inference loader over the clip mapper, TEST.PCSC.BATCH_SIZE key frames a batch.

    Args:
        cfg: the config.
        dataset_name: a registered split (its dicts are loaded from the catalog; in a group of
            processes each loads its share, detectron2's InferenceSampler) ...
        dataset: ... or the dataset dicts themselves (e.g. the key frames still to run), all of
            them, in order, whatever the process group: the caller shares them out.
    """
    mapper = PCSCClipMapper(cfg, is_train=False)
    batch_size = cfg.TEST.PCSC.BATCH_SIZE
    if dataset is not None:
        return build_detection_test_loader(
            dataset, mapper=mapper, batch_size=batch_size, num_workers=cfg.DATALOADER.NUM_WORKERS,
            sampler=torch.utils.data.SequentialSampler(dataset),
        )
    return build_detection_test_loader(cfg, dataset_name, mapper=mapper, batch_size=batch_size)


def configure_amp(train_loop, cfg: CfgNode) -> None:
    """Give detectron2's AMPTrainer the precision of SOLVER.AMP.PRECISION.

    detectron2 builds its AMPTrainer for float16 with a gradient scaler; bfloat16 has float32's
    range, so it trains without loss scaling. Anything but an AMPTrainer is left alone.

    Args:
        train_loop: ``DefaultTrainer._trainer`` (a SimpleTrainer or AMPTrainer).
        cfg: the config.
    """
    from detectron2.engine import AMPTrainer

    if not isinstance(train_loop, AMPTrainer):
        return
    name = cfg.SOLVER.AMP.PRECISION
    if name not in ("bfloat16", "float16"):
        raise ValueError(f"SOLVER.AMP.PRECISION must be 'bfloat16' or 'float16', got {name!r}")
    train_loop.precision = getattr(torch, name)
    if name == "bfloat16":
        train_loop.grad_scaler = torch.amp.GradScaler("cuda", enabled=False)


def create_ddp_model_cpu_aware(model: nn.Module, **kwargs) -> nn.Module:
    """detectron2's create_ddp_model, valid for CPU models too.

    detectron2 always passes ``device_ids=[local_rank]``, which DistributedDataParallel
    rejects for a CPU module; CPU processes (gloo) need ``device_ids=None``.
    """
    if next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return create_ddp_model(model, **kwargs)


def enable_cpu_distributed_training() -> None:
    """Make DefaultTrainer wrap CPU models correctly when several processes train (gloo)."""
    d2_defaults.create_ddp_model = create_ddp_model_cpu_aware


def split_cpu_threads(cfg: CfgNode) -> int:
    """Give each of N CPU processes on this machine (``--num-gpus N``) cores // N threads.

    Without this every process would start one thread per core and N processes would fight
    over the cores. On 2 cores, two processes of one thread train the synthetic config about
    1.3x faster than one process of two threads (README, Speed): the small maps leave one
    process's second thread idle much of the time. ``OMP_NUM_THREADS``, when set, wins.

    Returns:
        The thread count of this process.
    """
    procs = comm.get_local_size()
    if cfg.MODEL.DEVICE != "cpu" or procs <= 1 or "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    threads = max(1, len(os.sched_getaffinity(0)) // procs)
    torch.set_num_threads(threads)
    if comm.is_main_process():
        logger.info("%d CPU processes: %d thread(s) each", procs, threads)
    return threads


def train_net_dist_url(args, parser) -> str:
    """The rendezvous address of train_net.py's processes.

    detectron2's default ``--dist-url`` is a port derived from the user id only, so two
    multi-process jobs of one user on one machine (two seeds at once, an ablation beside the
    tests) collide: the second dies with EADDRINUSE. On one machine, unless the user named an
    address, take a free port ("auto"); several machines need the address they all agree on.
    """
    if args.num_machines == 1 and args.dist_url == parser.get_default("dist_url"):
        return "auto"
    return args.dist_url
