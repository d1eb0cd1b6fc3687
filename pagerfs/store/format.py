"""The on-disk layout of a pagerfs image (docs/FORMAT.md is the prose version).

    [header][data: stored blocks ...][inodes][dirents][chunk map][blocks][page hashes][strings]

Version 4 packs small files' tails into fragments byte after byte (a chunk's page
hashes are its own, found through its chunk map entry), and stores holes as nothing.

All integers are little endian. The header is written last, once every table's
offset, length and SHA-256 is known; its own SHA-256 closes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from hashlib import sha256

MAGIC = b"PAGERFS\0"
VERSION = 4
PAGE = 4096
MIN_CHUNK_SHIFT = 12  # one page
MAX_CHUNK_SHIFT = 22  # 4 MiB: keeps every allocation of a reader small
DEFAULT_CHUNK_SIZE = 128 * 1024

KIND_DIR = 1
KIND_FILE = 2
KIND_SYMLINK = 3

# magic, version, header size, chunk shift, flags, image size, inode count,
# block count, data offset, data end, total file bytes
FIXED = struct.Struct("<8sIIIIQQQQQQ")
TABLE = struct.Struct("<QQ32s")  # offset, length, sha256 of the table's bytes
TABLE_NAMES = ("inodes", "dirents", "chunkmap", "blocks", "pagehashes", "strings")
HEADER_SIZE = FIXED.size + len(TABLE_NAMES) * TABLE.size + 32

# kind, mode, uid, gid, nlink, mtime_ns, size, first, count, fs-verity digest.
# first/count: a directory's entries, a file's chunk-map entries, a symlink's
# target in the strings table (count = size).
INODE = struct.Struct("<BxxxIIIIqQQI32s")
DIRENT = struct.Struct("<QII")  # name offset in strings, name length, inode
# block, byte offset of this chunk's bytes in the block, index in the page hash table
# of the chunk's first page hash (its ceil(length / PAGE) hashes follow). A chunk that
# is all hole has block HOLE, offset 0, index 0: nothing is stored for it.
CHUNKMAP = struct.Struct("<III")
HOLE = 0xFFFFFFFF
HOLE_ENTRY = CHUNKMAP.pack(HOLE, 0, 0)
# offset in image, stored length, uncompressed length, index of the block's first page
# hash in the page hash table (the block's hashes run up to the next block's first),
# block digest: SHA-256 of the block's uncompressed bytes followed by its page hashes
# (see block_digest)
BLOCK = struct.Struct("<QIIQ32s")
# SHA-256 of one 4 KiB page of a chunk, the last page zero padded: the fs-verity leaf
# hash of the file page it holds
PAGE_HASH = 32

RECORD_SIZES = {
    "inodes": INODE.size,
    "dirents": DIRENT.size,
    "chunkmap": CHUNKMAP.size,
    "blocks": BLOCK.size,
    "pagehashes": PAGE_HASH,
    "strings": 1,
}


@dataclass(frozen=True, slots=True)
class Table:
    offset: int
    length: int
    sha256: bytes


@dataclass(frozen=True, slots=True)
class Header:
    version: int
    chunk_shift: int
    flags: int
    image_size: int
    inode_count: int
    block_count: int
    data_offset: int
    data_end: int
    file_bytes: int
    tables: dict[str, Table]

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_shift


def pack_header(h: Header) -> bytes:
    body = FIXED.pack(
        MAGIC, h.version, HEADER_SIZE, h.chunk_shift, h.flags, h.image_size,
        h.inode_count, h.block_count, h.data_offset, h.data_end, h.file_bytes,
    ) + b"".join(
        TABLE.pack(h.tables[n].offset, h.tables[n].length, h.tables[n].sha256)
        for n in TABLE_NAMES
    )
    return body + sha256(body).digest()


class HeaderError(ValueError):
    pass


def unpack_header(raw: bytes) -> Header:
    """Parse and check the header's own integrity; raises HeaderError with a reason."""
    if len(raw) < FIXED.size or raw[:8] != MAGIC:
        raise HeaderError("not a pagerfs image (bad magic)")
    (_, version, header_size, chunk_shift, flags, image_size, inode_count, block_count,
     data_offset, data_end, file_bytes) = FIXED.unpack_from(raw)
    if version != VERSION:
        raise HeaderError(f"image format version {version}; rebuild it with this pagerfs")
    if header_size != HEADER_SIZE:
        raise HeaderError(f"bad header size {header_size}")
    if len(raw) < HEADER_SIZE:
        raise HeaderError("truncated header")
    body = raw[: HEADER_SIZE - 32]
    if sha256(body).digest() != raw[HEADER_SIZE - 32 : HEADER_SIZE]:
        raise HeaderError("header checksum mismatch")
    tables = {}
    for i, name in enumerate(TABLE_NAMES):
        tables[name] = Table(*TABLE.unpack_from(raw, FIXED.size + i * TABLE.size))
    return Header(version, chunk_shift, flags, image_size, inode_count, block_count,
                  data_offset, data_end, file_bytes, tables)


def block_digest(data: bytes | memoryview, page_hashes: bytes | memoryview) -> bytes:
    """A block's digest: one SHA-256 over its uncompressed bytes followed by its page hashes.

    One hash call verifies a whole block (its pages need not be hashed one by one), and
    covering the page hashes too binds them to the bytes: a block digest that matches
    means the block's page hashes are the ones it was built with, so a reader that
    checks only the digest and one that checks page hashes cannot disagree unless a
    forger rewrote the digest as well. (The page hashes are 1/128 of the block: up to a
    128 KiB block that is under the 2 KiB below which hashlib hashes without releasing
    the GIL, so the second update costs no second GIL hand-off.)
    """
    h = sha256(data)
    h.update(page_hashes)
    return h.digest()


def pages_of(length: int) -> int:
    """Pages (and so page hashes) of `length` bytes: the last, short page counts."""
    return -(-length // PAGE)
