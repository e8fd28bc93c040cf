"""Evaluate a staged PCSC model after every stage t from one inference pass (the ablation's
Table 5: the union of stages 0..t of both streams), instead of one run per MODEL.PCSC.TEST_STAGES.
"""
import logging
import os
from typing import Dict, Sequence

import torch
import tqdm
from detectron2.evaluation.evaluator import inference_context

from .evaluator import PCSCEvaluator

__all__ = ["evaluate_stage_unions"]

logger = logging.getLogger(__name__)


def evaluate_stage_unions(
    cfg, model, dataset_name: str, stages: Sequence[int], output_dir: str
) -> Dict[int, Dict]:
    """Frame- and video-level metrics of ``model`` with TEST_STAGES = t for every t in ``stages``.

    Args:
        cfg: the config (test loader, evaluator options; TR stays off: these rows have none).
        model: a :class:`pcsc_d2.modeling.PCSCTwoStreamRCNN`.
        dataset_name: a registered test split.
        stages: the values of t.
        output_dir: each t's evaluator writes into ``<output_dir>/stage<t>/``.

    Returns:
        {t: the PCSCEvaluator's results ({"pcsc": metrics})}.
    """
    from pcsc_d2.engine import build_pcsc_test_loader

    ev_cfg = cfg.clone()
    ev_cfg.defrost()
    ev_cfg.TUBES.REFINE.ENABLED = False
    evaluators = {
        t: PCSCEvaluator(ev_cfg, dataset_name, os.path.join(output_dir, f"stage{t}"))
        for t in stages
    }
    for ev in evaluators.values():
        ev.reset()
    loader = build_pcsc_test_loader(cfg, dataset_name)
    with inference_context(model), torch.no_grad():
        for inputs in tqdm.tqdm(loader, desc=f"stages {list(stages)}"):
            outputs = model.inference_stage_unions(inputs, stages)
            for t, ev in evaluators.items():
                ev.process(inputs, [{"instances": out[t]} for out in outputs])
    return {t: ev.evaluate() for t, ev in evaluators.items()}
