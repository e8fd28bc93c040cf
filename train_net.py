#!/usr/bin/env python
"""Train and evaluate PCSC (and its baselines) with Detectron2.

    python train_net.py --config-file configs/pcsc_ucf24.yaml
    python train_net.py --config-file configs/pcsc_ucf24.yaml --eval-only MODEL.WEIGHTS out/model_final.pth
    python train_net.py --config-file configs/pcsc_ucf24.yaml --resume      # after an interruption
    python train_net.py --config-file ... --num-gpus 8                      # torch.distributed

Everything PCSC-specific is registered by ``import pcsc_d2``; this file only wires the
two-stream clip mapper and the video-level evaluator into Detectron2's DefaultTrainer.
"""
import logging
import os

from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch

import pcsc_d2  # noqa: F401  (registers the PCSC modules and datasets)
from pcsc_d2.engine import (
    PCSCCheckpointer,
    build_pcsc_test_loader,
    build_pcsc_train_loader,
    configure_amp,
    enable_cpu_distributed_training,
    get_pcsc_cfg,
    make_checkpointer_atomic,
    split_cpu_threads,
    train_net_dist_url,
)
from pcsc_d2.engine.checkpoint import use_pcsc_checkpoint_hook
from pcsc_d2.engine.checks import check_train_net_args
from pcsc_d2.evaluation import PCSCEvaluator

logger = logging.getLogger("pcsc_d2.train_net")
# Several CPU processes (--num-gpus N with MODEL.DEVICE cpu) train with gloo.
enable_cpu_distributed_training()


class Trainer(DefaultTrainer):
    """DefaultTrainer with the two-stream clip loaders, the PCSC evaluator and atomic checkpoints."""

    def __init__(self, cfg):
        super().__init__(cfg)
        # A run killed while saving must leave the previous checkpoint usable for --resume.
        make_checkpointer_atomic(self.checkpointer)
        configure_amp(self._trainer, cfg)  # SOLVER.AMP.PRECISION (bf16 by default)

    def build_hooks(self):
        # Keeps the last SOLVER.CHECKPOINT_MAX_KEEP checkpoints; removes killed saves' leftovers.
        return use_pcsc_checkpoint_hook(super().build_hooks(), self.cfg.SOLVER.CHECKPOINT_MAX_KEEP)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_pcsc_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_pcsc_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return PCSCEvaluator(cfg, dataset_name, output_folder)


def setup(args):
    """Build the config (detectron2 defaults + pcsc_d2 keys + file + overrides) and log it."""
    cfg = get_pcsc_cfg(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    split_cpu_threads(cfg)
    if args.eval_only:
        # check_train_net_args has made sure the checkpoint to load exists.
        checkpointer = PCSCCheckpointer(Trainer.build_model(cfg), cfg.OUTPUT_DIR, strict=True)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, checkpointer.model)

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    parser = default_argument_parser()
    args = parser.parse_args()
    logger.info("Command line arguments: %s", args)
    # Config, datasets, class count and weights are checked before any process starts.
    check_train_net_args(args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=train_net_dist_url(args, parser),
        args=(args,),
    )
