"""The cross-stream cascade RoI heads of PCSC (region-proposal and feature cooperation)."""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, ROIHeads, build_box_head
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage

from ..backbone.grid import fpn_grid_offsets
from .cooperation import (
    STREAMS,
    CooperationStage,
    CrossStreamMessage,
    cooperate_proposals,
    cooperation_schedule,
)
from .box_voting import VOTING_WEIGHTS, vote_boxes, voting_weights
from .iou_scoring import IoUAwareOutputLayers
from .pooling import PCSCROIPooler
from .stage_sampling import label_and_sample_at_stage, per_stage
from .topk_nms import fast_rcnn_inference_topk

logger = logging.getLogger(__name__)

__all__ = ["PCSCCascadeROIHeads"]

# (predictions of FastRCNNOutputLayers, the proposals they were made on)
_StageOutput = Tuple[Tuple[torch.Tensor, torch.Tensor], List[Instances]]


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def _scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    return _ScaleGradient.apply(x, scale) if scale != 1.0 else x


def _key(stream: str, stage: int) -> str:
    return f"{stream}_s{stage}"


@ROI_HEADS_REGISTRY.register()
class PCSCCascadeROIHeads(ROIHeads):
    """Stage 0 runs each stream's head on its own RPN proposals; stages t = 1..T alternate
    RGB (odd t) and Flow (even t), each on P_t^i = B^i U B^j with F_t^i = F^i + g_t(F^j).

    With one stream (or two and T = 0) this is a plain Faster R-CNN box head per stream; with two
    streams and T = 0 it is late fusion (the union of both streams' detections, then NMS).

    Training, per stage and stream: GT boxes are added to the proposals, which are labelled at
    the stage's foreground IoU (MODEL.PCSC.STAGE_IOU_THRESH, or STAGE_IOU_THRESHS per stage) and
    sampled as in detectron2 (ROI_HEADS.BATCH_SIZE_PER_IMAGE, POSITIVE_FRACTION); a stage's
    detections B_t^i are its predictions on those sampled proposals, detached (as Cascade R-CNN
    passes boxes on). The added GT keeps every stage supplied with positives while the
    confidence filter of proposal cooperation still removes most boxes early in training. Losses of all stages are summed unscaled (the paper's total).
    """

    @configurable
    def __init__(
        self,
        *,
        streams: List[str],
        box_in_features: List[str],
        box_pooler: PCSCROIPooler,
        box_heads: Dict[str, nn.Module],
        box_predictors: Dict[str, nn.Module],
        feature_messages: Dict[str, nn.Module],
        num_stages: int,
        proposal_cooperation: bool = True,
        coop_score_thresh: float = 0.05,
        coop_nms_own: float = 0.7,
        coop_nms_other: float = 0.5,
        coop_topk: int = 300,
        test_stages: int = -1,
        test_score_thresh: float = 0.05,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
        test_box_voting: float = 0.0,
        test_box_voting_weight: str = "class",
        pass_gt_proposals: bool = False,
        stage_matchers: Optional[Sequence[Matcher]] = None,
        **kwargs,
    ):
        """
        Args:
            streams: the detector's streams, a subset of ("rgb", "flow").
            box_in_features: FPN levels RoIs are pooled from.
            box_pooler: the RoI pooler shared by every stage and stream (it has no parameters);
                a :class:`PCSCROIPooler`, which pools both streams at the same boxes at once.
            box_heads: {"<stream>_s<t>": box head} for stage 0 of every stream and each stage t.
            box_predictors: {"<stream>_s<t>": FastRCNNOutputLayers}, the same keys.
            feature_messages: {"s<t>": g_t} for t = 1..T; empty turns feature cooperation off.
            num_stages: T, the number of cooperation stages (needs two streams when > 0).
            proposal_cooperation: False: stage t uses the own stream's latest boxes only.
            coop_score_thresh, coop_nms_own, coop_nms_other, coop_topk: see
                :func:`cooperate_proposals`.
            test_stages: inference unites stages 0..test_stages (-1 = all).
            test_score_thresh, test_nms_thresh, test_topk_per_image: final per-class NMS.
            test_box_voting: > 0: each final box becomes the score-weighted mean of the union's
                boxes of its class overlapping it by at least this IoU (:func:`vote_boxes`).
            test_box_voting_weight: a voter's weight: "class" (its score for the kept box's
                class) or "foreground" (1 - its background probability, whatever the class).
            pass_gt_proposals: in training, also pass the predictions on the added GT boxes to
                the next stages (see :meth:`_detections`).
            stage_matchers: T + 1 matchers labelling the proposals of stages 0..T in training;
                None: ``proposal_matcher`` for every stage.
            kwargs: for :class:`ROIHeads` (num_classes, sampling, matcher, proposal_append_gt).
        """
        super().__init__(**kwargs)
        self.streams = [s for s in STREAMS if s in streams]
        if num_stages > 0 and len(self.streams) != 2:
            raise ValueError(
                f"MODEL.PCSC.NUM_STAGES = {num_stages} needs both streams, got {self.streams}; "
                "use NUM_STAGES 0 for a single-stream detector"
            )
        self.schedule: List[CooperationStage] = cooperation_schedule(num_stages)
        self.num_stages = num_stages
        self.box_in_features = box_in_features
        self.box_pooler = box_pooler
        self.box_heads = nn.ModuleDict(box_heads)
        self.box_predictors = nn.ModuleDict(box_predictors)
        self.feature_messages = nn.ModuleDict(feature_messages)
        self.proposal_cooperation = proposal_cooperation
        self.coop_score_thresh = coop_score_thresh
        self.coop_nms_own = coop_nms_own
        self.coop_nms_other = coop_nms_other
        self.coop_topk = coop_topk
        self.test_stages = num_stages if test_stages < 0 else min(test_stages, num_stages)
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image
        self.test_box_voting = test_box_voting
        if test_box_voting_weight not in VOTING_WEIGHTS:
            raise ValueError(f"MODEL.PCSC.TEST_BOX_VOTING_WEIGHT must be one of {VOTING_WEIGHTS}, "
                             f"got {test_box_voting_weight!r}")
        self.test_box_voting_weight = test_box_voting_weight
        self.pass_gt_proposals = pass_gt_proposals
        if stage_matchers is not None and len(stage_matchers) != num_stages + 1:
            raise ValueError(
                f"{len(stage_matchers)} stage matchers for stages 0..{num_stages}: "
                "give one per stage"
            )
        self.stage_matchers = (
            list(stage_matchers) if stage_matchers else [self.proposal_matcher] * (num_stages + 1)
        )

    @property
    def feature_dim(self) -> int:
        """D, the width of a detection's feature (the box head's output, flattened)."""
        shape = next(iter(self.box_heads.values())).output_shape
        return shape.channels * (shape.height or 1) * (shape.width or 1)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg)
        pcsc = cfg.MODEL.PCSC
        # The paper labels every stage's proposals at one IoU (> 0.5 is foreground);
        # STAGE_IOU_THRESHS gives each stage its own.
        ret["proposal_matcher"] = Matcher(
            [pcsc.STAGE_IOU_THRESH], [0, 1], allow_low_quality_matches=False
        )
        ret["stage_matchers"] = [
            Matcher([iou], [0, 1], allow_low_quality_matches=False)
            for iou in per_stage(pcsc.STAGE_IOU_THRESHS, pcsc.NUM_STAGES, "STAGE_IOU_THRESHS")
        ] or None
        ret.update(cls._init_box_heads(cfg, input_shape))
        ret.update(
            {
                "streams": list(pcsc.STREAMS),
                "num_stages": pcsc.NUM_STAGES,
                "proposal_cooperation": pcsc.PROPOSAL_COOPERATION,
                "coop_score_thresh": pcsc.COOP_SCORE_THRESH,
                "coop_nms_own": pcsc.COOP_NMS_OWN,
                "coop_nms_other": pcsc.COOP_NMS_OTHER,
                "coop_topk": pcsc.COOP_TOPK,
                "test_stages": pcsc.TEST_STAGES,
                "test_score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
                "test_nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
                "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
                "test_box_voting": pcsc.TEST_BOX_VOTING,
                "test_box_voting_weight": pcsc.TEST_BOX_VOTING_WEIGHT,
                "pass_gt_proposals": pcsc.PASS_GT_PROPOSALS,
            }
        )
        return ret

    @classmethod
    def _init_box_heads(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        offsets = fpn_grid_offsets(cfg)
        resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(f"ROI_HEADS.IN_FEATURES {in_features} have different channels")
        channels = channels.pop()
        box_pooler = PCSCROIPooler(
            output_size=resolution,
            scales=tuple(1.0 / input_shape[f].stride for f in in_features),
            sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
            pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
            level_offsets=[offsets[f] for f in in_features],
        )
        pooled_shape = ShapeSpec(channels=channels, height=resolution, width=resolution)
        streams = [s for s in STREAMS if s in cfg.MODEL.PCSC.STREAMS]
        heads = [(s, 0) for s in streams]
        heads += [(st.stream, st.stage) for st in cooperation_schedule(cfg.MODEL.PCSC.NUM_STAGES)]
        reg_weights = per_stage(
            cfg.MODEL.PCSC.STAGE_BBOX_REG_WEIGHTS, cfg.MODEL.PCSC.NUM_STAGES,
            "STAGE_BBOX_REG_WEIGHTS",
        ) or [cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS] * (cfg.MODEL.PCSC.NUM_STAGES + 1)
        iou_scoring = cfg.MODEL.PCSC.IOU_SCORING
        if iou_scoring.ENABLED:
            output_layers = IoUAwareOutputLayers
            extra = {"alpha": iou_scoring.ALPHA, "iou_loss_weight": iou_scoring.LOSS_WEIGHT}
        else:
            output_layers, extra = FastRCNNOutputLayers, {}
        box_heads, box_predictors = {}, {}
        for stream, stage in heads:
            head = build_box_head(cfg, pooled_shape)
            box_heads[_key(stream, stage)] = head
            box_predictors[_key(stream, stage)] = output_layers(
                cfg, head.output_shape,
                box2box_transform=Box2BoxTransform(weights=tuple(reg_weights[stage])), **extra,
            )
        feature_messages = {}
        if cfg.MODEL.PCSC.FEATURE_COOPERATION:
            for st in cooperation_schedule(cfg.MODEL.PCSC.NUM_STAGES):
                feature_messages[f"s{st.stage}"] = CrossStreamMessage(
                    channels, cfg.MODEL.PCSC.MESSAGE_REDUCTION
                )
        return {
            "box_in_features": in_features,
            "box_pooler": box_pooler,
            "box_heads": box_heads,
            "box_predictors": box_predictors,
            "feature_messages": feature_messages,
        }

    def forward(
        self,
        images,
        features: Dict[str, Dict[str, torch.Tensor]],
        proposals: Dict[str, List[Instances]],
        targets: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        """
        Args:
            images: unused (image sizes come from the proposals); kept for detectron2's
                signature.
            features: {stream: {level: (N, C, H_l, W_l)}}.
            proposals: {stream: N Instances with "proposal_boxes" and "objectness_logits"}.
            targets: N Instances with "gt_boxes" and "gt_classes" (training only).

        Returns:
            At training, ([], losses) with keys "loss_cls_s<t>_<stream>" and
            "loss_box_reg_s<t>_<stream>". At inference, (N Instances with pred_boxes, scores
            and pred_classes, {}); :meth:`detection_features` describes them.
        """
        del images
        outputs, _ = self._run_stages(features, proposals, targets)
        if self.training:
            return [], self._losses(outputs)
        return self._inference(outputs), {}

    def stage_detections(
        self, features: Dict[str, Dict[str, torch.Tensor]], proposals: Dict[str, List[Instances]]
    ) -> Dict[Tuple[str, int], List[Tuple[torch.Tensor, torch.Tensor]]]:
        """Every test stage's detections B_t^i, before the final union and NMS (for analysis,
        e.g. tools/box_quality.py).

        Args:
            features, proposals: as for :meth:`forward` (inference).

        Returns:
            {(stream, t): per image (boxes (R, 4) of the top foreground class in the network's
            input resolution, scores (R,), the proposals P_t^i (R', 4) the stage received)}.
        """
        outputs, detections = self._run_stages(features, proposals, None)
        for key in outputs:
            if key not in detections:
                detections[key] = self._detections(outputs, *key)
        return {
            key: [(b, s, p.proposal_boxes.tensor) for (b, s), p in zip(detections[key], props)]
            for key, (_, props) in outputs.items()
        }

    def stage_union_results(
        self,
        features: Dict[str, Dict[str, torch.Tensor]],
        proposals: Dict[str, List[Instances]],
        stages: Sequence[int],
    ) -> Dict[int, List[Instances]]:
        """The output after each of ``stages``, from one pass through the stages.

        Args:
            features, proposals: as for :meth:`forward` (inference).
            stages: values t of MODEL.PCSC.TEST_STAGES, each at most NUM_STAGES.

        Returns:
            {t: N Instances}: for every t, what :meth:`forward` returns with TEST_STAGES = t (the
            union of stages 0..t of both streams after per-class NMS), while the heads run once.
        """
        if not stages or max(stages) > self.num_stages or min(stages) < 0:
            raise ValueError(f"stages {list(stages)} must lie in 0..{self.num_stages}")
        outputs, _ = self._run_stages(features, proposals, None, max(stages))
        return {t: self._inference({k: v for k, v in outputs.items() if k[1] <= t})
                for t in stages}

    def _run_stages(self, features, proposals, targets, last_stage: Optional[int] = None):
        """Stage 0 of each stream, then the cooperation stages up to ``last_stage`` (default: all
        of them in training, the test stages at inference). Returns (outputs, the detections
        computed on the way)."""
        feats = {s: [features[s][f] for f in self.box_in_features] for s in self.streams}
        if last_stage is None:
            last_stage = self.num_stages if self.training else self.test_stages
        outputs: Dict[Tuple[str, int], _StageOutput] = {}
        for s in self.streams:
            outputs[(s, 0)] = self._run_stage(feats, proposals[s], s, 0, targets)
        # Each stage's detections feed two later stages (its stream's next and the other's).
        detections: Dict[Tuple[str, int], List[Tuple[torch.Tensor, torch.Tensor]]] = {}
        for st in self.schedule[:last_stage]:
            props = self._cooperate(outputs, st, detections)
            outputs[(st.stream, st.stage)] = self._run_stage(
                feats, props, st.stream, st.stage, targets, st.other
            )
        return outputs, detections

    def _run_stage(
        self,
        feats: Dict[str, List[torch.Tensor]],
        proposals: List[Instances],
        stream: str,
        stage: int,
        targets: Optional[List[Instances]],
        other: Optional[str] = None,
    ) -> _StageOutput:
        """Label and sample (training), pool, cooperate features (t > 0), run the stage's head."""
        key = _key(stream, stage)
        if self.training:
            with get_event_storage().name_scope(key):
                proposals = label_and_sample_at_stage(
                    self, proposals, targets, self.stage_matchers[stage]
                )
        boxes = [p.proposal_boxes for p in proposals]
        # Every stage's head sends gradient into the same FPN maps; as in Cascade R-CNN, scale
        # it by 1 / (number of stages) so the shared features do not get T + 1 times the step.
        x = self._stage_features(feats, boxes, stream, stage, other, 1.0 / (self.num_stages + 1))
        return self.box_predictors[key](x), proposals

    def _stage_features(
        self,
        feats: Dict[str, List[torch.Tensor]],
        boxes: List[Boxes],
        stream: str,
        stage: int,
        other: Optional[str],
        grad_scale: float = 1.0,
    ) -> torch.Tensor:
        """The box-head feature of a stage at ``boxes``: pool, cooperate (F^i + g_t(F^j) for
        t > 0 with feature cooperation), then the stage's box head.

        Returns:
            (R, D), R = boxes of all images in order.
        """
        if stage > 0 and f"s{stage}" in self.feature_messages:
            x, y = self.box_pooler.pool_many([feats[stream], feats[other]], boxes)
            x = _scale_gradient(x, grad_scale) + self.feature_messages[f"s{stage}"](
                _scale_gradient(y, grad_scale)
            )
        else:
            x = _scale_gradient(self.box_pooler(feats[stream], boxes), grad_scale)
        return self.box_heads[_key(stream, stage)](x)

    def detection_features(
        self, features: Dict[str, Dict[str, torch.Tensor]], boxes: List[Boxes]
    ) -> List[torch.Tensor]:
        """One feature space for every detection: the cooperated feature of the last test stage.

        Whatever stage and stream produced a detection, its box is pooled again from both
        streams' FPN maps and described by the last test stage t = T: F = F^i + g_T(F^j)
        through that stage's box head (the paper's "features after feature level cooperation";
        with T = 0, the first stream's stage-0 head). The actionness classifiers of TR see these
        features at training and at test time, so both come from this one function.

        Args:
            features: {stream: {level: (N, C, H_l, W_l)}}, the backbone's maps.
            boxes: N Boxes in the network's input resolution.

        Returns:
            N tensors (R_i, D).
        """
        feats = {s: [features[s][f] for f in self.box_in_features] for s in self.streams}
        if self.test_stages > 0:
            st = self.schedule[self.test_stages - 1]
            x = self._stage_features(feats, boxes, st.stream, st.stage, st.other)
        else:
            x = self._stage_features(feats, boxes, self.streams[0], 0, None)
        return list(x.split([len(b) for b in boxes]))

    def _detections(
        self, outputs: Dict[Tuple[str, int], _StageOutput], stream: str, stage: int
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """B_t^i per image: (boxes (R, 4) of the top foreground class, scores (R,)), detached.

        Boxes passed between stages carry no gradient, like RPN proposals. In training, the
        predictions made on the GT boxes that sampling added to a stage's proposals are not
        passed on (unless ``pass_gt_proposals``): no GT box exists at test time, and a near-GT
        box with a high score would win the next stage's NMS over every real box of its object,
        so the next stage would learn to refine boxes it never meets at test time.
        """
        predictions, proposals = outputs[(stream, stage)]
        predictor = self.box_predictors[_key(stream, stage)]
        boxes = predictor.predict_boxes(predictions, proposals)
        probs = predictor.predict_probs(predictions, proposals)
        dets = []
        for b, p, prop in zip(boxes, probs, proposals):
            scores, classes = p[:, :-1].max(dim=1)
            if b.shape[1] > 4:  # class-specific regression: the box of the top class
                b = b.view(len(b), -1, 4)[torch.arange(len(b), device=b.device), classes]
            finite = torch.isfinite(b).all(dim=1) & torch.isfinite(scores)
            if self.training and not self.pass_gt_proposals and prop.has("gt_boxes"):
                # add_ground_truth_to_proposals copies the GT boxes: equal to their match.
                is_gt = (prop.proposal_boxes.tensor == prop.gt_boxes.tensor).all(dim=1)
                finite &= ~is_gt
            b, scores = Boxes(b[finite].detach()), scores[finite].detach()
            b.clip(prop.image_size)
            keep = b.nonempty()
            dets.append((b.tensor[keep], scores[keep]))
        return dets

    def _cooperate(
        self,
        outputs: Dict[Tuple[str, int], _StageOutput],
        st: CooperationStage,
        detections: Dict[Tuple[str, int], List[Tuple[torch.Tensor, torch.Tensor]]],
    ) -> List[Instances]:
        """Proposal cooperation P_t^i = B^i U B^j for every image of the batch.

        ``detections`` caches :meth:`_detections` per (stream, stage) across the stages.
        """
        for source in ((st.stream, st.own_source), (st.other, st.other_source)):
            if source not in detections:
                detections[source] = self._detections(outputs, *source)
        own = detections[(st.stream, st.own_source)]
        other = detections[(st.other, st.other_source)]
        image_sizes = [p.image_size for p in outputs[(st.stream, st.own_source)][1]]
        results = []
        for own_i, other_i, image_size in zip(own, other, image_sizes):
            boxes = cooperate_proposals(
                own_i,
                other_i,
                score_thresh=self.coop_score_thresh,
                nms_own=self.coop_nms_own,
                nms_other=self.coop_nms_other,
                topk=self.coop_topk,
                use_other=self.proposal_cooperation,
            )
            inst = Instances(image_size)
            inst.proposal_boxes = Boxes(boxes)
            # Unused by the heads; detectron2's add_ground_truth_to_proposals needs the field.
            inst.objectness_logits = boxes.new_zeros(len(boxes))
            results.append(inst)
        return results

    def _losses(self, outputs: Dict[Tuple[str, int], _StageOutput]) -> Dict[str, torch.Tensor]:
        """Every stage's and stream's head losses, named "<loss>_s<t>_<stream>" (summed later)."""
        storage = get_event_storage()
        losses = {}
        for (stream, stage), (predictions, proposals) in outputs.items():
            with storage.name_scope(_key(stream, stage)):
                stage_losses = self.box_predictors[_key(stream, stage)].losses(
                    predictions, proposals
                )
            losses.update({f"{k}_s{stage}_{stream}": v for k, v in stage_losses.items()})
        return losses

    def _inference(self, outputs: Dict[Tuple[str, int], _StageOutput]) -> List[Instances]:
        """The union of the detections of stages 0..test_stages of both streams, per-class NMS."""
        per_image = None
        for (stream, stage), (predictions, proposals) in outputs.items():
            predictor = self.box_predictors[_key(stream, stage)]
            parts = zip(
                predictor.predict_boxes(predictions, proposals),
                predictor.predict_probs(predictions, proposals),
            )
            if per_image is None:
                per_image = [([], [], p.image_size) for p in proposals]
            for (boxes, scores, _), (b, p) in zip(per_image, parts):
                boxes.append(b)
                scores.append(p)
        results = []
        for boxes, scores, image_size in per_image:
            boxes, scores = torch.cat(boxes), torch.cat(scores)
            valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
            boxes, scores = boxes[valid], scores[valid]
            result = fast_rcnn_inference_topk(
                boxes,
                scores,
                image_size,
                self.test_score_thresh,
                self.test_nms_thresh,
                self.test_topk_per_image,
            )
            if self.test_box_voting > 0:
                clipped = Boxes(boxes.reshape(-1, 4))
                clipped.clip(image_size)
                result.pred_boxes = Boxes(vote_boxes(
                    result.pred_boxes.tensor, result.pred_classes, clipped.tensor.view(boxes.shape),
                    voting_weights(scores, self.test_box_voting_weight), self.test_box_voting,
                    self.test_score_thresh,
                ))
            results.append(result)
        return results
