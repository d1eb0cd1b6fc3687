"""The store's exceptions: what a reader of the image can be told went wrong."""

from __future__ import annotations

import os


def show(path: bytes | str) -> str:
    """A path for a message; non-UTF-8 bytes survive as surrogate escapes."""
    return os.fsdecode(path) if isinstance(path, bytes) else path


class FormatError(Exception):
    """The image cannot be used at all: foreign, truncated, or its metadata is corrupt."""


class BuildError(Exception):
    """mkimage could not build an image from the source tree."""


class StoreError(Exception):
    """Pages of one file could not be supplied; names the file and the pages.

    `first_page`..`last_page` (inclusive file pages) span the failed pages; `pages` is
    exactly those that failed (all of the span unless told otherwise): a checksum
    mismatch of one page need not fail its neighbours.
    """

    code = "IO"

    def __init__(self, path: bytes, first_page: int, last_page: int, reason: str,
                 pages: frozenset[int] | None = None):
        self.path = path
        self.first_page = first_page
        self.last_page = last_page
        self.reason = reason
        self.pages = frozenset(range(first_page, last_page + 1)) if pages is None else pages
        super().__init__(
            f"{show(path)}: pages {first_page}-{last_page}: {self.code} ({reason})"
        )


class IntegrityError(StoreError):
    """The stored chunk failed its checksum or did not decompress."""

    code = "IO_DATA_INTEGRITY"


class StoreIOError(StoreError):
    """The image file could not be read."""

    code = "IO"
