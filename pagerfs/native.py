"""Importing pagerfs's native modules: one line, not a traceback, when one is missing or
was built from another version of its C source.

Each layer's C module (pagerfs/store/_codec.c, pagerfs/zircon/_gather.c) is its own
layer's; this module only knows how to load one. A checkout updated without a rebuild
would otherwise import an extension whose functions no longer match the Python that
calls them, and every read of a mount would fail with EIO. setup.py compiles the
SHA-256 of the source into the module as SOURCE_DIGEST; where the source sits beside
the package (a checkout, an editable install), it must match.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from types import ModuleType


def load(name: str, what: str, needs: str) -> ModuleType:
    """Import the native module `name` (say "pagerfs.store._codec"), or raise
    ImportError with one line naming `what` it is and the packages it `needs`."""
    rebuild = f"run tools/setup, or `pip install -e .` with {needs} installed"
    try:
        # By its full name: a relative import inside the package's own import would
        # blame a circular import instead of the missing module.
        module = importlib.import_module(name)
    except ImportError as err:
        raise ImportError(f"{what} {name} is not built ({err}); {rebuild}") from None
    built = module.__file__ or ""
    source = os.path.join(os.path.dirname(built), os.path.basename(built).split(".")[0] + ".c")
    if stale_build(module, source):
        raise ImportError(f"{what} {name} was built from another version of "
                          f"{name.replace('.', '/')}.c; {rebuild}")
    return module


def stale_build(module: ModuleType, source: str) -> bool:
    """Whether the module was built from a source other than `source` (False where the
    source is not there to compare, as in a wheel)."""
    try:
        with open(source, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return False
    return getattr(module, "SOURCE_DIGEST", None) != digest
