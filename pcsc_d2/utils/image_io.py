"""Reading frame images (JPEG, PNG) so that a missing, truncated or undecodable file is an error.

libjpeg decodes a truncated JPEG, such as a frame of a partly extracted folder, to a partly grey
image: it only prints "Premature end of JPEG file", without the file's name, and the run goes on.
A complete JPEG ends with its end-of-image marker and a complete PNG with its IEND chunk, so the
file's bytes are read once, their end checked, and the same bytes decoded.
"""
import cv2
import numpy as np

from .errors import CorruptFileError, MissingFileError

__all__ = ["read_image"]

_JPEG_START = b"\xff\xd8\xff"
# The end-of-image marker. In the entropy-coded data a 0xFF byte is always followed by 0x00 or
# a restart marker, so these two bytes cannot end a truncated file by chance.
_JPEG_END = b"\xff\xd9"
_PNG_START = b"\x89PNG\r\n\x1a\n"
# The IEND chunk: type and its fixed CRC.
_PNG_END = b"IEND\xaeB`\x82"


def _truncation(data: bytes) -> str:
    """Why ``data`` is an incomplete JPEG or PNG, or "" when it looks complete."""
    if data.startswith(_JPEG_START):
        # Some writers pad a file with zero bytes after the marker; that is no truncation.
        if not data.rstrip(b"\x00").endswith(_JPEG_END):
            return "truncated JPEG (no end-of-image marker FF D9 at its end)"
    elif data.startswith(_PNG_START):
        if not data.endswith(_PNG_END):
            return "truncated PNG (no IEND chunk at its end)"
    return ""


def read_image(path: str, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Read an image file as OpenCV does (BGR uint8 for the default ``flags``), strictly.

    Args:
        path: a JPEG, PNG or any other format OpenCV decodes.
        flags: ``cv2.IMREAD_*`` flags for ``cv2.imdecode``.

    Returns:
        the decoded image, e.g. (H, W, 3) uint8 BGR.

    Raises:
        MissingFileError: ``path`` does not exist or is a directory.
        CorruptFileError: the file is empty, a truncated JPEG/PNG, or not an image OpenCV
            decodes. The message names the file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, NotADirectoryError) as e:
        raise MissingFileError(f"{path}: frame not found") from e
    except IsADirectoryError as e:
        raise MissingFileError(f"{path}: is a directory, expected an image file") from e
    if not data:
        raise CorruptFileError(f"{path}: empty file, expected an image")
    problem = _truncation(data)
    if problem:
        raise CorruptFileError(f"{path}: {problem}; re-extract this frame")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if img is None:
        raise CorruptFileError(f"{path}: cannot decode the frame (not an image OpenCV reads)")
    return img
