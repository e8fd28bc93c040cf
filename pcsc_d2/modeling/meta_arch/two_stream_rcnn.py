"""PCSC's meta-architecture: a two-stream (RGB + optical flow) Faster R-CNN on I3D-FPN."""
import logging
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import move_device_like
from detectron2.modeling import (
    META_ARCH_REGISTRY,
    build_backbone,
    build_proposal_generator,
    build_roi_heads,
)
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import log_first_n

from ..actionness import PCSCActionnessHead

logger = logging.getLogger(__name__)

__all__ = ["PCSCTwoStreamRCNN"]


@META_ARCH_REGISTRY.register()
class PCSCTwoStreamRCNN(nn.Module):
    """Two-stream backbone -> one RPN per stream -> cross-stream cascade RoI heads.

    Its streams are those of the backbone (``MODEL.PCSC.STREAMS``); with one stream it is the
    single-stream I3D-FPN Faster R-CNN baseline.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        proposal_generators: Dict[str, nn.Module],
        roi_heads: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        actionness_head: Optional[nn.Module] = None,
        output_features: bool = False,
        inference_dtype: Optional[torch.dtype] = None,
    ):
        """
        Args:
            backbone: a :class:`PCSCTwoStreamBackbone` (``streams``, ``size_divisibility``,
                forward({stream: clip}) -> {stream: {level: map}}).
            proposal_generators: {stream: RPN}, each with its own parameters.
            roi_heads: a :class:`PCSCCascadeROIHeads`.
            pixel_mean, pixel_std: per-channel normalisation shared by both streams (127.5 maps
                uint8 to [-1, 1], the range I3D was trained on).
            actionness_head: per-class actionness classifiers; None = no actionness output.
                Its parameters are frozen here (the detector's losses do not train it; TR's
                training does, see pcsc_d2.engine.actionness), and it scores detections only
                once trained (its ``trained`` flag, saved in checkpoints).
            output_features: keep each detection's feature in ``Instances.features``.
            inference_dtype: run inference under autocast to this dtype (e.g. torch.bfloat16 on
                a GPU); None runs it in fp32. Outputs are fp32 either way.
        """
        super().__init__()
        self.backbone = backbone
        self.streams = list(backbone.streams)
        if set(proposal_generators) != set(self.streams):
            raise ValueError(
                f"one proposal generator per stream {self.streams}, got {list(proposal_generators)}"
            )
        self.proposal_generators = nn.ModuleDict(proposal_generators)
        self.roi_heads = roi_heads
        self.actionness_head = actionness_head
        if actionness_head is not None:
            actionness_head.requires_grad_(False)
        self.output_features = output_features
        self.inference_dtype = inference_dtype
        # (C, 1, 1, 1): clips are (C, K, H, W).
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1, 1), False)
        if self.pixel_mean.shape != self.pixel_std.shape:
            raise ValueError(f"PIXEL_MEAN {pixel_mean} and PIXEL_STD {pixel_std} differ in length")

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        roi_heads = build_roi_heads(cfg, shapes)
        actionness_head = None
        if cfg.MODEL.PCSC.ACTIONNESS.ENABLED or cfg.TUBES.REFINE.ENABLED:
            actionness_head = PCSCActionnessHead(cfg, roi_heads.feature_dim)
        return {
            "backbone": backbone,
            "proposal_generators": {
                s: build_proposal_generator(cfg, shapes) for s in backbone.streams
            },
            "roi_heads": roi_heads,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "actionness_head": actionness_head,
            "output_features": cfg.MODEL.PCSC.OUTPUT_FEATURES,
            "inference_dtype": (
                getattr(torch, cfg.SOLVER.AMP.PRECISION) if cfg.TEST.PCSC.AMP else None
            ),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: a list, batched outputs of :class:`pcsc_d2.data.PCSCClipMapper`.
                Each item is a dict with:

                * "rgb", "flow": uint8 tensors (3, K, H, W), the K frames centred on the key
                  frame (flow images: R = x-flow, G = y-flow, B = magnitude). Only the
                  detector's streams are read.
                * "instances" (training): Instances((H, W)) with gt_boxes and gt_classes.
                * "height", "width": the original frame size; outputs are rescaled to it.
                * "video", "frame", "nframes", "image_id": passed through untouched.

        Returns:
            At training, a dict of losses: "loss_rpn_cls_<stream>", "loss_rpn_loc_<stream>",
            "loss_cls_s<t>_<stream>", "loss_box_reg_s<t>_<stream>". At inference, one dict per
            input, {"instances": Instances((height, width))} with pred_boxes (XYXY_ABS in
            original coordinates), scores, pred_classes, and features (R, D) float32 (the
            detection's cooperated feature of the last stage, see
            PCSCCascadeROIHeads.detection_features) when MODEL.PCSC.OUTPUT_FEATURES, actionness
            (R,) in [0, 1] when the actionness head exists.
        """
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_clips(batched_inputs)
        if "instances" not in batched_inputs[0]:
            raise ValueError("training inputs need 'instances' (the key frame's ground truth)")
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone({s: images[s].tensor for s in self.streams})
        proposals, losses = self._propose(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses.update(detector_losses)
        return losses

    def inference(self, batched_inputs: List[Dict], do_postprocess: bool = True):
        """Detect on the key frames of ``batched_inputs`` (see :meth:`forward`).

        Returns:
            With ``do_postprocess``, as :meth:`forward`; else the raw list[Instances] in the
            network's input resolution, always with ``features`` (R, D): every detection's
            cooperated feature from ``roi_heads.detection_features``.
        """
        assert not self.training
        images = self.preprocess_clips(batched_inputs)
        amp = torch.autocast(
            self.device.type, dtype=self.inference_dtype, enabled=self.inference_dtype is not None
        )
        with amp:
            features = self.backbone({s: images[s].tensor for s in self.streams})
            proposals, _ = self._propose(images, features, None)
            results, _ = self.roi_heads(images, features, proposals, None)
            if not do_postprocess or self._scores_actionness() or self.output_features:
                boxes = [r.pred_boxes for r in results]
                for r, f in zip(results, self.roi_heads.detection_features(features, boxes)):
                    r.features = f.float()
        for r in results:
            r.scores = r.scores.float()
        if not do_postprocess:
            return results
        outputs = []
        image_sizes = images[self.streams[0]].image_sizes
        for result, inp, image_size in zip(results, batched_inputs, image_sizes):
            height = inp.get("height", image_size[0])
            width = inp.get("width", image_size[1])
            outputs.append({"instances": self._finish(detector_postprocess(result, height, width))})
        return outputs

    @torch.no_grad()
    def inference_stage_unions(
        self, batched_inputs: List[Dict], stages: Sequence[int]
    ) -> List[Dict[int, Instances]]:
        """The detections after each of ``stages`` from one pass (the ablation's Table 5).

        Returns:
            One dict per input, {t: Instances in the original frame size}: the output with
            MODEL.PCSC.TEST_STAGES = t (pred_boxes, scores, pred_classes; no features).
        """
        assert not self.training
        images = self.preprocess_clips(batched_inputs)
        features = self.backbone({s: images[s].tensor for s in self.streams})
        proposals, _ = self._propose(images, features, None)
        per_stage = self.roi_heads.stage_union_results(features, proposals, stages)
        image_sizes = images[self.streams[0]].image_sizes
        outputs: List[Dict[int, Instances]] = [{} for _ in batched_inputs]
        for t, results in per_stage.items():
            for out, r, inp, (h, w) in zip(outputs, results, batched_inputs, image_sizes):
                out[t] = detector_postprocess(r, inp.get("height", h), inp.get("width", w))
        return outputs

    @torch.no_grad()
    def inspect(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        """The boxes of every step of the detector, for analysis (tools/box_quality.py).

        Args:
            batched_inputs: as for :meth:`forward`.

        Returns:
            One dict per input, boxes (R, 4) XYXY_ABS in the original frame size:
            "proposals_<stream>" (each RPN's), "<stream>_s<t>_in" (the proposals P_t^i of each
            test stage), "<stream>_s<t>" (its boxes B_t^i) and "final" (the output detections).
        """
        assert not self.training
        images = self.preprocess_clips(batched_inputs)
        features = self.backbone({s: images[s].tensor for s in self.streams})
        proposals, _ = self._propose(images, features, None)
        stages = self.roi_heads.stage_detections(features, proposals)
        finals, _ = self.roi_heads(images, features, proposals, None)
        outputs = []
        image_sizes = images[self.streams[0]].image_sizes
        for i, (inp, (h, w)) in enumerate(zip(batched_inputs, image_sizes)):
            scale = torch.tensor(
                [inp.get("width", w) / w, inp.get("height", h) / h] * 2, device=self.device
            )
            boxes = {f"proposals_{s}": proposals[s][i].proposal_boxes.tensor for s in self.streams}
            for (s, t), dets in stages.items():
                boxes[f"{s}_s{t}_in"], boxes[f"{s}_s{t}"] = dets[i][2], dets[i][0]
            boxes["final"] = finals[i].pred_boxes.tensor
            outputs.append({k: v * scale for k, v in boxes.items()})
        return outputs

    def _scores_actionness(self) -> bool:
        """Whether the model has a trained actionness head (an untrained one says so, once)."""
        if self.actionness_head is None:
            return False
        if not bool(self.actionness_head.trained):
            log_first_n(
                logging.WARNING,
                "The actionness head is untrained (the weights are a detector's, not "
                "tools/train_actionness.py's): no actionness, so no temporal refinement.",
                name=__name__,
            )
            return False
        return True

    def _finish(self, instances: Instances) -> Instances:
        """Add actionness from the detections' features; keep the features only when asked."""
        if not instances.has("features"):
            return instances
        if self._scores_actionness():
            instances.actionness = self.actionness_head.actionness(
                instances.features, instances.pred_classes
            )
        if not self.output_features:
            instances.remove("features")
        return instances

    def _propose(self, images: Dict[str, ImageList], features, gt_instances):
        """Run each stream's RPN; its losses are renamed "<loss>_<stream>"."""
        proposals, losses = {}, {}
        for s in self.streams:
            if self.training:
                with get_event_storage().name_scope(s):
                    proposals[s], rpn_losses = self.proposal_generators[s](
                        images[s], features[s], gt_instances
                    )
            else:
                proposals[s], rpn_losses = self.proposal_generators[s](
                    images[s], features[s], None
                )
            losses.update({f"{k}_{s}": v for k, v in rpn_losses.items()})
        return proposals, losses

    def preprocess_clips(self, batched_inputs: List[Dict]) -> Dict[str, ImageList]:
        """Normalise, pad and batch each stream's clips.

        Returns:
            {stream: ImageList whose tensor is (N, 3, K, H', W'), H' and W' padded to the
            backbone's size divisibility}.
        """
        images = {}
        for s in self.streams:
            clips = []
            for i, x in enumerate(batched_inputs):
                if s not in x:
                    raise KeyError(f"input {i} ({x.get('image_id', '?')}) has no '{s}' clip")
                clip = move_device_like(x[s], self.pixel_mean)
                if clip.dim() != 4 or clip.shape[0] != self.pixel_mean.shape[0]:
                    raise ValueError(
                        f"input {i} ({x.get('image_id', '?')}): the '{s}' clip must be "
                        f"(3, K, H, W), got {tuple(clip.shape)}"
                    )
                clips.append((clip.float() - self.pixel_mean) / self.pixel_std)
            images[s] = ImageList.from_tensors(clips, self.backbone.size_divisibility)
        return images
