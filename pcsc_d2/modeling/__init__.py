"""PCSC's model: the two-stream I3D-FPN backbone, the meta-architecture, the cross-stream cascade
RoI heads and the actionness classifiers. Importing this package registers them in detectron2's
registries (BACKBONE, META_ARCH, ROI_HEADS)."""
from .actionness import PCSCActionnessHead
from .backbone import PCSCTwoStreamBackbone, build_pcsc_two_stream_backbone
from .meta_arch import PCSCTwoStreamRCNN
from .roi_heads import PCSCCascadeROIHeads

__all__ = [
    "PCSCActionnessHead",
    "PCSCCascadeROIHeads",
    "PCSCTwoStreamBackbone",
    "PCSCTwoStreamRCNN",
    "build_pcsc_two_stream_backbone",
]
