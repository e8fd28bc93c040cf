#!/usr/bin/env python
"""Evaluate a trained PCSC model after each stage t (TEST_STAGES = t) in one inference pass.

    python tools/eval_stages.py --config-file configs/pcsc_synthetic.yaml --stages 0,1,2,3,4 \
        MODEL.WEIGHTS output/ablation/seed1/pcsc/model_final.pth OUTPUT_DIR output/eval_stages

Writes OUTPUT_DIR/stage<t>/pcsc_metrics.json (and the evaluator's other files) for every t.
"""
import argparse
import logging

from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from pcsc_d2.engine import PCSCCheckpointer, get_pcsc_cfg
from pcsc_d2.engine.checks import check_train_net_args
from pcsc_d2.evaluation.stage_unions import evaluate_stage_unions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--stages", default="0,1,2,3,4", help="comma-separated values of t")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    setup_logger(name="pcsc_d2")
    setup_logger(name="detectron2", abbrev_name="d2")
    args.eval_only, args.resume = True, False
    check_train_net_args(args)
    cfg = get_pcsc_cfg(args.config_file, args.opts)
    model = build_model(cfg)
    PCSCCheckpointer(model, strict=True, allow_missing=("actionness_head.",)).load(
        cfg.MODEL.WEIGHTS
    )
    stages = [int(t) for t in args.stages.split(",")]
    results = evaluate_stage_unions(cfg, model, cfg.DATASETS.TEST[0], stages, cfg.OUTPUT_DIR)
    for t, r in results.items():
        logging.getLogger("pcsc_d2").info("stage %d: frame_mAP@0.5 %.2f", t,
                                          r["pcsc"].get("frame_mAP@0.5", float("nan")))


if __name__ == "__main__":
    main()
