"""Small utilities shared by the package."""
from .io import atomic_open, atomic_save_json, atomic_save_pickle

__all__ = ["atomic_open", "atomic_save_json", "atomic_save_pickle"]
