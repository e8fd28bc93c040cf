"""Import one of the repository's scripts (tools/, benchmarks/: files, not packages) as a module."""
import importlib.util
import os
from types import ModuleType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(relative_path: str) -> ModuleType:
    """The module of ``relative_path`` (from the repository root, e.g. "tools/seed_study.py"),
    executed afresh; its ``__name__`` is the file's name without ".py"."""
    name = os.path.splitext(os.path.basename(relative_path))[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
