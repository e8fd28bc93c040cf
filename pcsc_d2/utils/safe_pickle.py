"""Unpickling files of numpy arrays without letting them run code.

Loading a pickle can call any function the file names. The field's GT files and the I3D
checkpoint only need numpy's array builders, so :class:`SafeUnpickler` admits exactly those.
"""
import pickle
from typing import Any

__all__ = ["SafeUnpickler", "UnsafePickleError"]

# (module, name) pairs numpy uses to pickle arrays, dtypes and scalars, in numpy 1.x and 2.x
# spellings. Nothing here can call arbitrary code.
_ALLOWED_GLOBALS = {
    (prefix + module, name)
    for prefix in ("numpy.core.", "numpy._core.")
    for module, name in (
        ("multiarray", "_reconstruct"),
        ("multiarray", "scalar"),
        ("numeric", "_frombuffer"),
    )
} | {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(text, "latin1").
    ("_codecs", "encode"),
}


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle names a global that is not on the allow-list (a ValueError like every other
    bad-input error of pcsc_d2, see pcsc_d2.utils.errors)."""


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that only builds numpy arrays/dtypes and builtin containers.

    Any other global (a function, a class, ``os.system``...) raises UnsafePickleError *before*
    it is looked up, so nothing in the file runs.
    """

    def __init__(self, file, *, filename: str = "<stream>", **kwargs: Any):
        super().__init__(file, **kwargs)
        self._filename = filename

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._filename}: refusing to unpickle global '{module}.{name}': only numpy arrays "
            "and builtin containers are allowed"
        )
