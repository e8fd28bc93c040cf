"""Typed errors for bad user inputs, and the one line a command-line tool prints for them.

Library code raises these with a message that starts with the file (or the config key) and says
what is wrong with it: ``"<file>: <problem>"``. Each is a ValueError, so callers that already
catch ValueError keep working; the not-found and corrupt-file errors are OSErrors too, like the
errors ``open()`` raises for the same situations.

Command-line tools catch :data:`INPUT_ERRORS` and print :func:`error_line` with exit status 2,
without a traceback.
"""
import os
import pickle
import sys
from typing import NoReturn

__all__ = [
    "CorruptFileError",
    "INPUT_ERRORS",
    "InputError",
    "MissingFileError",
    "error_line",
    "exit_with_error",
    "require_file",
]


class InputError(ValueError):
    """A file, config key or argument given by the user breaks what pcsc_d2 expects."""


class MissingFileError(FileNotFoundError, InputError):
    """An input file does not exist (or is a directory where a file is expected)."""


class CorruptFileError(OSError, InputError):
    """An input file exists but cannot be decoded: truncated, empty or of another format."""


# What a command-line tool reports as "error: ..." instead of a traceback. UnpicklingError
# covers pcsc_d2.utils.safe_pickle.UnsafePickleError, whose message names the file.
INPUT_ERRORS = (OSError, ValueError, pickle.UnpicklingError)


def require_file(path: str, what: str = "file") -> None:
    """Raise MissingFileError unless ``path`` is an existing regular file.

    Args:
        path: the file.
        what: what the file is, for the message (e.g. "GT file", "checkpoint").
    """
    if os.path.isdir(path):
        raise MissingFileError(f"{path}: is a directory, expected a {what}")
    if not os.path.exists(path):
        raise MissingFileError(f"{path}: {what} not found")


def error_line(error: BaseException) -> str:
    """One line for an input error: ``"<file>: <problem>"`` where the error names a file.

    OSErrors from ``open()`` carry the file apart from the message; they become
    ``"<file>: <strerror>"`` instead of ``"[Errno 2] No such file or directory: '<file>'"``.
    """
    if isinstance(error, OSError) and not isinstance(error, InputError) and error.filename:
        reason = (error.strerror or str(error)).lower()
        return f"{error.filename}: {reason}"
    return " ".join(str(error).split("\n"))


def exit_with_error(error: BaseException, status: int = 2) -> NoReturn:
    """Print ``error: <error_line>`` to stderr and exit with ``status`` (for command lines)."""
    print(f"error: {error_line(error)}", file=sys.stderr)
    sys.exit(status)
