#!/usr/bin/env python
"""Train the actionness classifiers of temporal refinement (TR) for a trained PCSC detector.

    python tools/train_actionness.py --config-file configs/pcsc_ucf24.yaml [--num-gpus N] \
        MODEL.WEIGHTS output/pcsc_ucf24/model_final.pth OUTPUT_DIR output/pcsc_ucf24_tr

Runs the frozen detector over the training videos, links tubes, labels their boxes against the
GT (IoU > 0.5 with a GT box of the tube's class), trains one binary classifier per class and
writes OUTPUT_DIR/model_tr.pth (detector + head). With ``--num-gpus N`` N processes share the
videos out (GPUs, or on a CPU the cores split between them, as train_net.py does), then the main
one trains. Interrupted? Run the same command again: the videos already processed are cached.
Evaluate with ``train_net.py --eval-only MODEL.WEIGHTS OUTPUT_DIR/model_tr.pth
MODEL.PCSC.ACTIONNESS.ENABLED True TUBES.REFINE.ENABLED True``.
"""
import argparse
import logging

from detectron2.engine import launch
from detectron2.modeling import build_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from pcsc_d2.engine import PCSCCheckpointer, split_cpu_threads
from pcsc_d2.engine.actionness import train_actionness
from pcsc_d2.engine.checks import check_pcsc_setup, load_pcsc_cfg
from pcsc_d2.utils.errors import INPUT_ERRORS, exit_with_error


def run(cfg) -> None:
    """One process: its share of the detector runs, then (main process) the classifiers."""
    setup_logger(name="pcsc_d2", distributed_rank=comm.get_rank())
    setup_logger(name="detectron2", abbrev_name="d2", distributed_rank=comm.get_rank())
    split_cpu_threads(cfg)
    model = build_model(cfg)
    # The detector must match exactly; only the (untrained) actionness head may be absent.
    PCSCCheckpointer(model, strict=True, allow_missing=("actionness_head.",)).load(
        cfg.MODEL.WEIGHTS
    )
    path = train_actionness(cfg, model, cfg.DATASETS.TRAIN[0], cfg.OUTPUT_DIR)
    if comm.is_main_process():
        logging.getLogger("pcsc_d2").info("Wrote %s", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes (GPUs; on a CPU the cores are split between them)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    try:  # config, training dataset, class count and detector weights, before any work
        cfg = load_pcsc_cfg(args.config_file, args.opts)
        check_pcsc_setup(cfg, dataset_keys=("TRAIN",), weights_required=True)
    except INPUT_ERRORS as e:
        exit_with_error(e)
    cfg.MODEL.PCSC.OUTPUT_FEATURES = True
    cfg.MODEL.PCSC.ACTIONNESS.ENABLED = True
    cfg.freeze()
    launch(run, args.num_gpus, dist_url="auto", args=(cfg,))


if __name__ == "__main__":
    main()
