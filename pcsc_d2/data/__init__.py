"""Data layer: GT files, dataset registration, the two-stream clip mapper, optical flow, dataset
preparation from videos and the synthetic dataset. Importing this registers the predefined
datasets and every dataset folder under $DETECTRON2_DATASETS (lazily: no GT file is read)."""
from .annotations import SafeUnpickler, UnsafePickleError, load_annotations, save_annotations
from .builtin import configure_pcsc_datasets, discover_datasets, register_pcsc_datasets
from .datasets import (
    class_flip_pairs,
    class_flip_permutation,
    clip_frame_indices,
    get_split_annotations,
    load_action_dataset,
    register_action_dataset,
)
from .mapper import PCSCClipMapper

register_pcsc_datasets()

__all__ = [
    "PCSCClipMapper",
    "SafeUnpickler",
    "UnsafePickleError",
    "class_flip_pairs",
    "class_flip_permutation",
    "clip_frame_indices",
    "configure_pcsc_datasets",
    "discover_datasets",
    "get_split_annotations",
    "load_action_dataset",
    "load_annotations",
    "register_action_dataset",
    "register_pcsc_datasets",
    "save_annotations",
]
