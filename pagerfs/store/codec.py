"""The block codec the store reads and builds with: pagerfs.store._codec, in C.

There is no fallback: a pagerfs whose extension is not built would run several times
slower without saying so, so importing the store without it fails with one line that
says how to build it; one built from an older _codec.c fails the same way. (pagerfs.store._codec_py, the same functions in Python, is the
tests' oracle, not a substitute.)
"""

from __future__ import annotations

from pagerfs.native import load

native = load("pagerfs.store._codec", "the native codec",
              "gcc, python3-dev, liblz4-dev and libssl-dev")

__all__ = ["native"]
