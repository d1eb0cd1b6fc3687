"""The block codec the store reads and builds with: pagerfs.store._codec, in C.

There is no fallback: a pagerfs whose extension is not built would run several times
slower without saying so, so importing the store without it fails with one line that
says how to build it. (pagerfs.store._codec_py, the same functions in Python, is the
tests' oracle, not a substitute.)
"""

from __future__ import annotations

import importlib

try:
    # By its full name: `from pagerfs.store import _codec` inside the package's own
    # import would blame a circular import instead of the missing module.
    native = importlib.import_module("pagerfs.store._codec")
except ImportError as err:
    raise ImportError(
        f"the native codec pagerfs.store._codec is not built ({err}); run tools/setup, or "
        "`pip install -e .` with gcc, python3-dev, liblz4-dev and libssl-dev installed"
    ) from None

__all__ = ["native"]
