"""pcsc_d2: Progressive Cross-stream Cooperation (PCSC, CVPR 2019) for Detectron2.

Importing this package registers, inside Detectron2, the I3D backbones, the two-stream
meta-architecture, the cross-stream cascade RoI heads and the datasets (lazily: nothing is
read until a dataset is used).
"""
try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "pcsc_d2 needs detectron2, which has no release on PyPI under its name. "
        "Run `bash tools/setup_env.sh` (or `make setup`) from the pcsc_d2 checkout: it "
        "installs the `sal-detectron2==0.7.2` wheel as described in README.md. A detectron2 "
        "you built yourself works too."
    ) from e

from . import data, modeling  # noqa: F401  (registration happens on import)
from .config import add_pcsc_config
from .data import PCSCClipMapper, load_annotations
from .evaluation import PCSCEvaluator
from .modeling import PCSCCascadeROIHeads, PCSCTwoStreamRCNN

__all__ = [
    "add_pcsc_config",
    "load_annotations",
    "PCSCCascadeROIHeads",
    "PCSCClipMapper",
    "PCSCEvaluator",
    "PCSCTwoStreamRCNN",
]
__version__ = "0.1.0"
