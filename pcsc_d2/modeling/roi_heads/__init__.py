from .cooperation import (
    CooperationStage,
    CrossStreamMessage,
    cooperate_proposals,
    cooperation_schedule,
)
from .pcsc_cascade import PCSCCascadeROIHeads

__all__ = [
    "CooperationStage",
    "CrossStreamMessage",
    "PCSCCascadeROIHeads",
    "cooperate_proposals",
    "cooperation_schedule",
]
