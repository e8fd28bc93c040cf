"""Checkpoints that are written atomically, kept in bounded number, and checked when loaded.

detectron2's checkpointer writes ``model_XXXX.pth`` and ``last_checkpoint`` in place, so a run
killed mid-write can leave a truncated file that ``--resume`` then trips on. Routing its writes
through :func:`pcsc_d2.utils.io.atomic_open` means a checkpoint file is either complete or absent;
a save killed midway leaves a hidden temporary, which the next run removes
(:class:`PCSCPeriodicCheckpointer`). That hook also keeps only the newest periodic checkpoints
(``SOLVER.CHECKPOINT_MAX_KEEP``) besides ``model_final.pth``.
"""
import fnmatch
import logging
import os
import pickle
import re
import zipfile
from typing import Any, Dict, List, Optional, Tuple

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import HookBase, hooks

from pcsc_d2.utils.errors import CorruptFileError, InputError, require_file
from pcsc_d2.utils.io import atomic_open

__all__ = [
    "PCSCCheckpointer",
    "PCSCPeriodicCheckpointer",
    "check_checkpoint_file",
    "make_checkpointer_atomic",
    "prune_checkpoints",
    "remove_stale_temporaries",
    "use_pcsc_checkpoint_hook",
]

logger = logging.getLogger(__name__)

# What atomic_open leaves when the process is killed inside a save: ".<name>.<random>.tmp".
_STALE_PATTERNS = (".*.pth.*.tmp", ".last_checkpoint.*.tmp")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive


def check_checkpoint_file(path: str, what: str = "checkpoint") -> None:
    """Raise a typed error naming ``path`` unless it is a readable, complete-looking checkpoint.

    Cheap: reads the first bytes and, for torch's zip format, the zip index at the file's end
    (which a truncated copy lacks). Other formats (detectron2's ``.pkl``) are only opened.

    Raises:
        MissingFileError: missing, or a directory. CorruptFileError: empty or truncated.
        InputError: not readable (permissions).
    """
    require_file(path, what)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise InputError(f"{path}: cannot read the {what} ({e.strerror})") from e
    if not head:
        raise CorruptFileError(f"{path}: empty file, expected a {what}")
    if head == _ZIP_MAGIC:
        try:
            zipfile.ZipFile(path).close()
        except zipfile.BadZipFile as e:
            raise CorruptFileError(
                f"{path}: truncated or damaged {what} (torch zip file without a readable index: "
                f"{e}); copy or save it again"
            ) from e


def remove_stale_temporaries(save_dir: str) -> List[str]:
    """Delete the hidden temporaries that checkpoint saves killed midway left in ``save_dir``.

    Returns:
        the removed paths.
    """
    if not save_dir or not os.path.isdir(save_dir):
        return []
    removed = []
    for name in sorted(os.listdir(save_dir)):
        if any(fnmatch.fnmatch(name, p) for p in _STALE_PATTERNS):
            path = os.path.join(save_dir, name)
            os.remove(path)
            removed.append(path)
    if removed:
        logger.warning(
            "Removed %d temporary file(s) left by an interrupted checkpoint save: %s",
            len(removed), ", ".join(os.path.basename(p) for p in removed),
        )
    return removed


def prune_checkpoints(save_dir: str, max_to_keep: int, file_prefix: str = "model") -> List[str]:
    """Keep the newest ``max_to_keep`` periodic checkpoints ``<prefix>_<7 digits>.pth`` of a folder.

    Those of earlier (resumed) runs count too; ``<prefix>_final.pth`` and any other file are
    never touched, nor the checkpoint ``last_checkpoint`` names.

    Returns:
        the removed paths.
    """
    pattern = re.compile(re.escape(file_prefix) + r"_(\d{7})\.pth")
    periodic = sorted(
        (int(m.group(1)), name)
        for name in os.listdir(save_dir)
        if (m := pattern.fullmatch(name))
    )
    last = ""
    with_tag = os.path.join(save_dir, "last_checkpoint")
    if os.path.isfile(with_tag):
        with open(with_tag) as f:
            last = f.read().strip()
    removed = []
    for _, name in periodic[: max(len(periodic) - max_to_keep, 0)]:
        if name != last:
            os.remove(os.path.join(save_dir, name))
            removed.append(os.path.join(save_dir, name))
    if removed:
        logger.info("Removed old checkpoints (keeping the last %d): %s", max_to_keep,
                    ", ".join(os.path.basename(p) for p in removed))
    return removed


class PCSCPeriodicCheckpointer(hooks.PeriodicCheckpointer):
    """detectron2's periodic checkpoint hook, which also cleans up after itself.

    Before training it removes the temporaries of saves killed midway; after each periodic save
    it keeps the newest ``max_to_keep`` periodic checkpoints of the folder (see
    :func:`prune_checkpoints`). ``model_final.pth`` is always kept.
    """

    def __init__(
        self,
        checkpointer: DetectionCheckpointer,
        period: int,
        max_iter: Optional[int] = None,
        max_to_keep: int = 0,
        file_prefix: str = "model",
    ):
        """
        Args:
            checkpointer, period, max_iter, file_prefix: as for detectron2's hook.
            max_to_keep: periodic checkpoints to keep; 0 keeps them all.
        """
        # fvcore's own max_to_keep forgets the files of earlier runs: this hook prunes instead.
        super().__init__(checkpointer, period, max_iter=max_iter, file_prefix=file_prefix)
        self.keep = int(max_to_keep)

    def before_train(self) -> None:
        super().before_train()
        if self.checkpointer.save_to_disk:
            remove_stale_temporaries(self.checkpointer.save_dir)

    def step(self, iteration: int, **kwargs: Any) -> None:
        super().step(iteration, **kwargs)
        saved = (int(iteration) + 1) % self.period == 0
        if saved and self.keep > 0 and self.checkpointer.save_to_disk:
            prune_checkpoints(self.checkpointer.save_dir, self.keep, self.file_prefix)


def use_pcsc_checkpoint_hook(hook_list: List[HookBase], max_to_keep: int) -> List[HookBase]:
    """Replace detectron2's PeriodicCheckpointer in ``hook_list`` by PCSCPeriodicCheckpointer.

    Args:
        hook_list: what ``DefaultTrainer.build_hooks`` returns.
        max_to_keep: ``SOLVER.CHECKPOINT_MAX_KEEP`` (0 keeps every periodic checkpoint).
    """
    out = []
    for h in hook_list:
        if type(h) is hooks.PeriodicCheckpointer:
            h = PCSCPeriodicCheckpointer(
                h.checkpointer, h.period, h.max_iter, max_to_keep, h.file_prefix
            )
        out.append(h)
    return out


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

    def load(self, path: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        """detectron2's load, with a missing, empty or truncated local file as a typed error.

        Raises:
            MissingFileError, CorruptFileError: naming the file (instead of an AssertionError
                or torch's zip error).
        """
        if path and "://" not in path:
            check_checkpoint_file(path.split("?")[0])
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        self._current_file = filename
        try:
            return super()._load_file(filename)
        # torch.load and pickle fail on a damaged file with RuntimeError, EOFError,
        # UnpicklingError...: say which file it was.
        except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as e:
            if isinstance(e, InputError):
                raise
            raise CorruptFileError(
                f"{filename}: cannot load the checkpoint ({type(e).__name__}: {e})"
            ) from e

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
