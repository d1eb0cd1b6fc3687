"""The compressed, verified image that every pagerfs file's pages come from.

See docs/ARCHITECTURE.md for the reader interface and docs/FORMAT.md for the format.
This package imports nothing else of pagerfs.
"""

from pagerfs.store.builder import BuildResult, build_image
from pagerfs.store.errors import BuildError, FormatError, IntegrityError, StoreError, StoreIOError
from pagerfs.store.format import DEFAULT_CHUNK_SIZE, PAGE
from pagerfs.store.reader import ChunkPages, Image, ImageInfo, Inode, Kind
from pagerfs.store.scrub import Damage, ScrubReport, corrupt, scrub
from pagerfs.store.verity import fsverity_digest

__all__ = [
    "BuildError", "BuildResult", "ChunkPages", "DEFAULT_CHUNK_SIZE", "Damage", "FormatError", "Image",
    "ImageInfo", "Inode", "IntegrityError", "Kind", "PAGE", "ScrubReport", "StoreError",
    "StoreIOError", "build_image", "corrupt", "fsverity_digest", "scrub",
]
