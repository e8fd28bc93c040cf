"""Training/evaluation glue shared by train_net.py and the tools."""
from .checkpoint import PCSCCheckpointer, make_checkpointer_atomic
from .defaults import (
    build_pcsc_test_loader,
    build_pcsc_train_loader,
    configure_amp,
    enable_cpu_distributed_training,
    get_pcsc_cfg,
    split_cpu_threads,
    train_net_dist_url,
)

__all__ = [
    "PCSCCheckpointer",
    "make_checkpointer_atomic",
    "build_pcsc_test_loader",
    "build_pcsc_train_loader",
    "configure_amp",
    "enable_cpu_distributed_training",
    "get_pcsc_cfg",
    "split_cpu_threads",
    "train_net_dist_url",
]
