"""Checkpoints that are written atomically and, when asked, must match the model exactly.

detectron2's checkpointer writes ``model_XXXX.pth`` and ``last_checkpoint`` in place, so a run
killed mid-write can leave a truncated file that ``--resume`` then trips on. Routing its writes
through :func:`pcsc_d2.utils.io.atomic_open` means a checkpoint file is either complete or absent.
"""
import logging
from typing import Any, Dict, Tuple

from detectron2.checkpoint import DetectionCheckpointer

from pcsc_d2.utils.io import atomic_open

__all__ = ["PCSCCheckpointer", "make_checkpointer_atomic"]

logger = logging.getLogger(__name__)


class _AtomicWritePathManager:
    """Delegates to a PathManager, but opens local files for writing with atomic_open."""

    def __init__(self, base: Any):
        self._base = base

    def open(self, path: str, mode: str = "r", **kwargs: Any):
        if mode in ("w", "wb") and "://" not in path:
            return atomic_open(path, mode)
        return self._base.open(path, mode, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def make_checkpointer_atomic(checkpointer: DetectionCheckpointer) -> DetectionCheckpointer:
    """Make an existing checkpointer write its files atomically (in place); returns it."""
    if not isinstance(checkpointer.path_manager, _AtomicWritePathManager):
        checkpointer.path_manager = _AtomicWritePathManager(checkpointer.path_manager)
    return checkpointer


class PCSCCheckpointer(DetectionCheckpointer):
    """A DetectionCheckpointer with atomic writes and an optional strict load.

    Args:
        model: the model.
        save_dir: where checkpoints are written.
        strict: refuse (ValueError naming the file and the keys) a checkpoint that lacks some of
            the model's parameters or holds them with other shapes: evaluating such a checkpoint
            would silently score a partly random model.
        allow_missing: with strict, parameter-name prefixes that may be missing (e.g. the
            actionness head, before it is trained).
        checkpointables: as for DetectionCheckpointer.
    """

    def __init__(
        self,
        model,
        save_dir: str = "",
        *,
        strict: bool = False,
        allow_missing: Tuple[str, ...] = (),
        **checkpointables,
    ):
        super().__init__(model, save_dir, **checkpointables)
        make_checkpointer_atomic(self)
        self.strict = strict
        self.allow_missing = tuple(allow_missing)
        self._current_file = ""

    def _load_file(self, filename: str) -> Dict[str, Any]:
        self._current_file = filename
        return super()._load_file(filename)

    def _load_model(self, checkpoint: Dict[str, Any]):
        incompatible = super()._load_model(checkpoint)
        if self.strict and incompatible is not None:
            problems = []
            missing = [
                k for k in incompatible.missing_keys if not k.startswith(self.allow_missing)
            ]
            if missing:
                problems.append(f"missing keys {sorted(missing)[:10]} ({len(missing)} in all)")
            if incompatible.incorrect_shapes:
                shapes = [
                    f"{k}: file {tuple(a)} vs model {tuple(b)}"
                    for k, a, b in incompatible.incorrect_shapes[:10]
                ]
                problems.append(f"shape mismatches {shapes}")
            if problems:
                raise ValueError(
                    f"Checkpoint {self._current_file} does not match the model built from the "
                    f"config: {'; '.join(problems)}. Was it trained with this config file?"
                )
        return incompatible
