"""The compressed, verified image that every pagerfs file's pages come from.

See docs/ARCHITECTURE.md for the reader interface and docs/FORMAT.md for the format.
This package imports nothing else of pagerfs.

Its names are imported when first used (PEP 562): `pagerfs mkimage` needs the builder
only, and the reader, the scrub and their imports were a third of its start.
"""

from __future__ import annotations

import importlib
import sys
import types

_WHERE = {
    "BuildResult": "builder", "build_image": "builder",
    "BuildError": "errors", "FormatError": "errors", "IntegrityError": "errors",
    "StoreError": "errors", "StoreIOError": "errors",
    "DEFAULT_CHUNK_SIZE": "format", "PAGE": "format",
    "ChunkPages": "reader", "Image": "reader", "ImageInfo": "reader", "Inode": "reader",
    "Kind": "reader",
    "Damage": "scrub", "ScrubReport": "scrub", "corrupt": "scrub", "scrub": "scrub",
    "fsverity_digest": "verity",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


class _Package(types.ModuleType):
    """`scrub` names a function of this package and its submodule: importing the
    submodule (which sets the package's attribute of that name to it) must not take
    the name from the function, whoever imports it first."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and name in _WHERE:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
