"""Atomic file writes: a reader never sees a half-written file, a crash leaves the old one."""
import contextlib
import json
import os
import pickle
import tempfile
from typing import IO, Any, Iterator

__all__ = ["atomic_open", "atomic_save_json", "atomic_save_pickle", "give_default_permissions"]


def give_default_permissions(path: str) -> None:
    """mkstemp creates 0600 files; give ``path`` the permissions open() would (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; rename it onto ``path`` on success.

    The rename is atomic on POSIX file systems. On an exception the temporary file is
    removed and ``path`` is left untouched.

    Args:
        path: the destination file. Its folder is created if missing.
        mode: "wb" or "w".
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        give_default_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_save_json(obj: Any, path: str, **kwargs: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (kwargs go to ``json.dump``)."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, **kwargs)


def atomic_save_pickle(obj: Any, path: str, protocol: int = 2) -> None:
    """Pickle ``obj`` to ``path`` atomically. Protocol 2 matches the field's GT files."""
    with atomic_open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
