"""The two-stream I3D-FPN backbone of PCSC with image-level message passing Flow -> RGB."""
import logging
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from ..roi_heads.cooperation import STREAMS, CrossStreamMessage
from .i3d import I3D, weights_channels_last

logger = logging.getLogger(__name__)

__all__ = ["PCSCTwoStreamBackbone", "build_pcsc_two_stream_backbone"]

TEMPORAL_POOLS = ("mean", "center")


class _GivenFeatures(Backbone):
    """A parameter-free "bottom-up" that returns the feature dict it is given.

    detectron2's FPN runs its bottom-up network itself; PCSC must first collapse time and pass
    messages between the two streams' bottom-up maps, so each stream's FPN gets the finished
    C_l maps through this stand-in and keeps all of its own logic (laterals, top-down, P6).
    """

    def __init__(self, shapes: Dict[str, ShapeSpec]):
        super().__init__()
        self._out_features = list(shapes)
        self._out_feature_channels = {k: v.channels for k, v in shapes.items()}
        self._out_feature_strides = {k: v.stride for k, v in shapes.items()}

    def forward(self, x: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return x


class PCSCTwoStreamBackbone(Backbone):
    """One I3D per stream, time collapsed per level, message passing Flow -> RGB, FPN per stream.

    Parameter names are fixed by the project's contract: ``bottom_up.rgb.<i3d names>`` and
    ``bottom_up.flow.<i3d names>``.
    """

    @configurable
    def __init__(
        self,
        *,
        bottom_up: Dict[str, Backbone],
        in_features: List[str],
        out_channels: int,
        norm: str = "",
        fuse_type: str = "sum",
        message_passing: bool = True,
        message_reduction: int = 4,
        temporal_pool: str = "mean",
        key_frame_streams: Sequence[str] = (),
    ):
        """
        Args:
            bottom_up: {stream: 3D backbone}; each maps (N, 3, T, H, W) to {name: (N, C, T', H',
                W')} and has ``output_shape()``. Streams are a non-empty subset of STREAMS.
            in_features: the bottom-up maps C2..C5 given to the FPN, finest first.
            out_channels: FPN channels.
            norm: FPN normalization.
            fuse_type: FPN top-down fusion, "sum" or "avg".
            message_passing: add f_l(C_l^flow) to C_l^rgb (only when both streams exist).
            message_reduction: channel reduction inside f_l.
            temporal_pool: how each C_l becomes a 2D map of the key frame: "mean" over its time
                steps (the paper's), or "center", the time step of the key frame.
            key_frame_streams: streams that see only the key frame (the (K // 2)-th of the
                clip), through a still I3D (``I3D(still=True)``: I3D on a still video of that
                frame): the actor where it is at the key frame, not smeared over its positions
                in the clip. Their bottom-up networks must be built still.
        """
        super().__init__()
        streams = [s for s in STREAMS if s in bottom_up]
        if not streams or len(streams) != len(bottom_up):
            raise ValueError(
                f"streams must be a non-empty subset of {STREAMS}, got {list(bottom_up)}"
            )
        self.streams = streams
        self.bottom_up = nn.ModuleDict({s: bottom_up[s] for s in streams})
        self.in_features = list(in_features)
        if temporal_pool not in TEMPORAL_POOLS:
            raise ValueError(
                f"MODEL.PCSC.TEMPORAL_POOL must be one of {TEMPORAL_POOLS}, got {temporal_pool!r}"
            )
        self.temporal_pool = temporal_pool
        unknown = [k for k in key_frame_streams if k not in streams]
        if unknown:
            raise ValueError(
                f"MODEL.PCSC.KEY_FRAME_STREAMS {list(key_frame_streams)} names streams the model "
                f"does not have; its streams are {streams}"
            )
        self.key_frame_streams = list(key_frame_streams)
        for k in self.key_frame_streams:
            if not getattr(bottom_up[k], "still", False):
                raise ValueError(f"the '{k}' stream sees the key frame only: build its I3D still")
        shapes = bottom_up[streams[0]].output_shape()
        missing = [f for f in self.in_features if f not in shapes]
        if missing:
            raise ValueError(f"MODEL.FPN.IN_FEATURES {missing} are not outputs of the I3D backbone")
        in_shapes = {f: shapes[f] for f in self.in_features}

        # f_l per level; only meaningful when there is a flow stream to send and an RGB one to
        # receive.
        self.message_passing = message_passing and len(streams) == 2
        if self.message_passing:
            self.messages = nn.ModuleDict(
                {f: CrossStreamMessage(in_shapes[f].channels, message_reduction) for f in in_shapes}
            )
        self.fpn = nn.ModuleDict(
            {
                s: FPN(
                    bottom_up=_GivenFeatures(in_shapes),
                    in_features=self.in_features,
                    out_channels=out_channels,
                    norm=norm,
                    top_block=LastLevelMaxPool(),
                    fuse_type=fuse_type,
                )
                for s in streams
            }
        )
        fpn = self.fpn[streams[0]]
        self._out_features = fpn._out_features
        self._out_feature_channels = fpn._out_feature_channels
        self._out_feature_strides = fpn._out_feature_strides
        self._size_divisibility = fpn.size_divisibility

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        streams = list(cfg.MODEL.PCSC.STREAMS)
        unknown = [s for s in streams if s not in STREAMS]
        if unknown or not streams:
            raise ValueError(
                f"MODEL.PCSC.STREAMS must be a non-empty subset of {STREAMS}: {streams}"
            )
        bottom_up = {
            s: I3D(
                out_features=list(cfg.MODEL.I3D.OUT_FEATURES),
                freeze_at=cfg.MODEL.I3D.FREEZE_AT,
                norm=cfg.MODEL.I3D.NORM,
                still=s in cfg.MODEL.PCSC.KEY_FRAME_STREAMS,
                channels_last=weights_channels_last(cfg.MODEL.DEVICE),
            )
            for s in streams
        }
        return {
            "bottom_up": bottom_up,
            "in_features": cfg.MODEL.FPN.IN_FEATURES,
            "out_channels": cfg.MODEL.FPN.OUT_CHANNELS,
            "norm": cfg.MODEL.FPN.NORM,
            "fuse_type": cfg.MODEL.FPN.FUSE_TYPE,
            "message_passing": cfg.MODEL.PCSC.MESSAGE_PASSING,
            "message_reduction": cfg.MODEL.PCSC.MESSAGE_REDUCTION,
            "temporal_pool": cfg.MODEL.PCSC.TEMPORAL_POOL,
            "key_frame_streams": list(cfg.MODEL.PCSC.KEY_FRAME_STREAMS),
        }

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def bottom_up_features(
        self, clips: Dict[str, torch.Tensor]
    ) -> Dict[str, Dict[str, torch.Tensor]]:
        """C_l per stream, time collapsed, after message passing.

        Args:
            clips: {stream: (N, 3, T, H, W) normalised clip}.

        Returns:
            {stream: {name: (N, C_l, H / s_l, W / s_l)}}.
        """
        feats = {}
        for s in self.streams:
            if s not in clips:
                raise KeyError(f"the backbone needs a '{s}' clip, got {list(clips)}")
            clip = clips[s]
            if s in self.key_frame_streams:  # its I3D is still: it sees the key frame alone
                key = clip.shape[2] // 2
                clip = clip[:, :, key : key + 1]
            num_frames = clip.shape[2]
            out = self.bottom_up[s](clip)
            feats[s] = {f: self._to_key_frame(out[f], num_frames) for f in self.in_features}
        if self.message_passing:
            feats["rgb"] = {
                f: x + self.messages[f](feats["flow"][f]) for f, x in feats["rgb"].items()
            }
        return feats

    def _to_key_frame(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(N, C, T', H, W) -> (N, C, H, W) for the key frame, the (K // 2)-th of K frames.

        "mean" averages the T' steps (all the temporal context I3D gathered, but a moving actor
        is smeared over its positions in the clip); "center" takes the step whose receptive
        field is centred nearest the key frame (step (K // 2) // (K / T')).
        """
        if self.temporal_pool == "mean":
            return x.mean(dim=2)
        stride = max(num_frames // x.shape[2], 1)
        return x[:, :, min((num_frames // 2) // stride, x.shape[2] - 1)].contiguous()

    def forward(self, clips: Dict[str, torch.Tensor]) -> Dict[str, Dict[str, torch.Tensor]]:
        """
        Args:
            clips: {stream: (N, 3, T, H, W) normalised clip}, H and W divisible by
                ``size_divisibility``.

        Returns:
            {stream: {"p2".."p6": (N, out_channels, H / s, W / s)}}.
        """
        feats = self.bottom_up_features(clips)
        return {s: self.fpn[s](feats[s]) for s in self.streams}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """The per-level shapes, identical for every stream."""
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_pcsc_two_stream_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> Backbone:
    """Build :class:`PCSCTwoStreamBackbone` from MODEL.PCSC.*, MODEL.I3D.* and MODEL.FPN.*."""
    return PCSCTwoStreamBackbone(cfg, input_shape)
