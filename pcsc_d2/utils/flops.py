"""Multiply-adds of a PCSC model per key frame, by component (fvcore's jit-traced counts).

fvcore counts one fused multiply-add as one "flop"; this module says MACs for that count and
GFLOP for twice it. Counts follow the traced run: the box heads of a stage cost what that stage
received (few boxes from a randomly initialised model, up to MODEL.PCSC.COOP_TOPK per stream
from a trained one).
"""
import logging
from typing import Dict, List, Sequence

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import conv_flop_count, get_shape
from torch import nn

__all__ = ["component_macs", "model_macs", "training_macs"]

logger = logging.getLogger(__name__)


def _onednn_conv_macs(inputs: List, outputs: List) -> int:
    """aten::mkldnn_convolution (the I3D's CPU path) counted like aten::_convolution."""
    return conv_flop_count(get_shape(inputs[0]), get_shape(inputs[1]), get_shape(outputs[0]))


class _StreamsAsArgs(nn.Module):
    """Calls a PCSC model with its clips as positional tensors (what jit tracing needs)."""

    def __init__(self, model: nn.Module, batched_inputs: List[Dict], streams: Sequence[str]):
        super().__init__()
        self.model = model
        self.batched_inputs = batched_inputs
        self.streams = list(streams)

    def forward(self, *clips: torch.Tensor):
        n = len(self.batched_inputs)
        inputs = [dict(x) for x in self.batched_inputs]
        for i, s in enumerate(self.streams):
            for x, clip in zip(inputs, clips[i * n : (i + 1) * n]):
                x[s] = clip
        out = self.model(inputs)
        if isinstance(out, dict):  # training: the losses
            return tuple(out.values())
        return tuple(o["instances"].pred_boxes.tensor for o in out)


def model_macs(model: nn.Module, batched_inputs: List[Dict]) -> Dict[str, int]:
    """MACs of one forward of ``model`` (in its current train/eval mode) per module name.

    Args:
        model: a :class:`pcsc_d2.modeling.PCSCTwoStreamRCNN`; in training mode the inputs need
            "instances" and the call must happen inside an EventStorage.
        batched_inputs: the mapper's dicts.

    Returns:
        {module name ("" = the whole model, "backbone.bottom_up.rgb", ...): MACs}.
    """
    streams = list(model.streams)
    clips = tuple(x[s] for s in streams for x in batched_inputs)
    wrapper = _StreamsAsArgs(model, batched_inputs, streams)
    with torch.no_grad() if not model.training else torch.enable_grad():
        analysis = FlopCountAnalysis(wrapper, clips)
        analysis.set_op_handle("aten::mkldnn_convolution", _onednn_conv_macs)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        by_module = analysis.by_module()
    prefix = "model."
    out = {"": by_module.get("model", 0)}
    out.update({k[len(prefix):]: v for k, v in by_module.items() if k.startswith(prefix)})
    return out


def component_macs(per_module: Dict[str, int]) -> Dict[str, int]:
    """Group :func:`model_macs` into the parts of PCSC.

    Returns:
        ordered {"I3D rgb", "I3D flow", "message passing", "FPNs", "RPNs", "heads stage 0",
        "heads stage t" (t >= 1, box heads, predictors and g_t), "total"}; parts that the model
        lacks are left out.
    """
    parts = {
        "I3D rgb": per_module.get("backbone.bottom_up.rgb", 0),
        "I3D flow": per_module.get("backbone.bottom_up.flow", 0),
        "message passing": per_module.get("backbone.messages", 0),
        "FPNs": per_module.get("backbone.fpn", 0),
        "RPNs": per_module.get("proposal_generators", 0),
    }
    stages: Dict[int, int] = {}
    for name, macs in per_module.items():
        fields = name.split(".")
        if len(fields) != 3 or fields[0] != "roi_heads":
            continue
        if fields[1] in ("box_heads", "box_predictors"):
            stage = int(fields[2].rsplit("_s", 1)[1])
        elif fields[1] == "feature_messages":
            stage = int(fields[2][1:])
        else:
            continue
        stages[stage] = stages.get(stage, 0) + macs
    parts.update({f"heads stage {t}": stages[t] for t in sorted(stages)})
    parts = {k: v for k, v in parts.items() if v}
    parts["total"] = per_module.get("", 0)
    return parts


def training_macs(model: nn.Module, per_module: Dict[str, int]) -> int:
    """Estimated MACs of one training step (forward + backward) from its forward counts.

    The backward of a layer with trainable weights costs about twice its forward (gradients of
    its input and of its weights); frozen layers come first in PCSC (the I3D stem), so nothing
    flows back through them. A module's own MACs are its count minus its children's (the I3D
    units call their convolution functionally, so the count sits on the unit).

    Args:
        model: the model (only ``requires_grad`` of its parameters is read).
        per_module: :func:`model_macs` of a training-mode forward.
    """
    trainable = 0
    for name, module in model.named_modules():
        own = per_module.get(name, 0) - sum(
            per_module.get(f"{name}.{child}" if name else child, 0)
            for child, _ in module.named_children()
        )
        if own > 0 and any(p.requires_grad for p in module.parameters()):
            trainable += own
    return per_module.get("", 0) + 2 * trainable
