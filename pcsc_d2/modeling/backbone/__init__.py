from .grid import PCSCAnchorGenerator, fpn_grid_offsets
from .i3d import I3D, build_pcsc_i3d_backbone
from .two_stream_fpn import PCSCTwoStreamBackbone, build_pcsc_two_stream_backbone

__all__ = [
    "I3D",
    "PCSCAnchorGenerator",
    "PCSCTwoStreamBackbone",
    "build_pcsc_i3d_backbone",
    "build_pcsc_two_stream_backbone",
    "fpn_grid_offsets",
]
