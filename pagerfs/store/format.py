"""The on-disk layout of a pagerfs image (docs/FORMAT.md is the prose version).

    [header][data: stored blocks ...][inodes][dirents][chunk map][blocks][page hashes][strings]

Version 5 stores every metadata table lz4-compressed in independent pieces, keeps no
fs-verity digest in the inode (the reader computes it from the page hashes) and no
block digest, and gives every block, fragments too, the page hashes of its own 4 KiB
pages. Small files' tails are packed into fragments byte after byte; holes are
stored as nothing.

All integers are little endian. The header is written last, once every table's
offset, lengths and SHA-256 are known; its own SHA-256 closes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from hashlib import sha256

import lz4.block

MAGIC = b"PAGERFS\0"
VERSION = 5
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
# offset, stored length, uncompressed length, SHA-256 of the stored bytes
TABLE = struct.Struct("<QQQ32s")
TABLE_NAMES = ("inodes", "dirents", "chunkmap", "blocks", "pagehashes", "strings")
HEADER_SIZE = FIXED.size + len(TABLE_NAMES) * TABLE.size + 32

# kind, mode, uid, gid, nlink, mtime_ns, size, first, count.
# first/count: a directory's entries, a file's chunk-map entries, a symlink's
# target in the strings table (count = size).
INODE = struct.Struct("<BxxxIIIIqQQI")
DIRENT = struct.Struct("<QII")  # name offset in strings, name length, inode
# block, byte offset of this chunk's bytes in the block's uncompressed bytes. A chunk
# that is all hole has block HOLE, offset 0: nothing is stored for it.
CHUNKMAP = struct.Struct("<II")
HOLE = 0xFFFFFFFF
HOLE_ENTRY = CHUNKMAP.pack(HOLE, 0)
# offset in image, stored length, uncompressed length. A block's page hashes are
# pages_of(uncompressed length) entries of the page hash table; blocks' follow each
# other in block order, so the first of a block's is the sum of the ones before.
BLOCK = struct.Struct("<QII")
# SHA-256 of one 4 KiB page of a block's uncompressed bytes, its last page zero padded.
# For a full chunk, each is the fs-verity leaf hash of the file page it holds.
PAGE_HASH = 32
# Each table is stored as pieces of PIECE uncompressed bytes (the last one shorter),
# each compressed on its own: a u32 stored length, then the bytes, lz4 (a block, no
# frame) when shorter than the piece, raw when as long. A reader decompresses one piece
# at a time into at most PIECE bytes, so no length field can make it allocate more than
# what really decompresses; and lz4 expands at most LZ4_MAX_RATIO times.
PIECE = 64 * 1024
PIECE_HEAD = struct.Struct("<I")
LZ4_MAX_RATIO = 256

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
    stored: int  # bytes in the image
    length: int  # uncompressed
    sha256: bytes  # of the stored bytes


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
        TABLE.pack(h.tables[n].offset, h.tables[n].stored, h.tables[n].length, h.tables[n].sha256)
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


def pages_of(length: int) -> int:
    """Pages (and so page hashes) of `length` bytes: the last, short page counts."""
    return -(-length // PAGE)


def pack_table(raw: bytes) -> bytes:
    """A table as stored: its pieces, each lz4-compressed on its own (raw when that is
    no smaller)."""
    out = []
    for at in range(0, len(raw), PIECE):
        piece = raw[at : at + PIECE]
        packed = lz4.block.compress(piece, store_size=False)
        if len(packed) >= len(piece):
            packed = piece
        out.append(PIECE_HEAD.pack(len(packed)))
        out.append(packed)
    return b"".join(out)


def pack_tables(tables: dict[str, bytes], offset: int) -> tuple[bytes, dict[str, Table]]:
    """The tables as stored back to back from `offset` (the end of the data region), and
    their header entries."""
    parts, entries = [], {}
    for name in TABLE_NAMES:
        stored = pack_table(tables[name])
        entries[name] = Table(offset, len(stored), len(tables[name]), sha256(stored).digest())
        parts.append(stored)
        offset += len(stored)
    return b"".join(parts), entries


def unpack_table(stored: bytes, length: int) -> bytes:
    """The uncompressed table of `length` bytes from its stored pieces; HeaderError
    if they do not decode to exactly that (each piece to its PIECE bytes)."""
    if length > LZ4_MAX_RATIO * len(stored):
        raise HeaderError("uncompressed length impossible for its stored length")
    parts, at = [], 0
    for start in range(0, length, PIECE):
        want = min(PIECE, length - start)
        if at + PIECE_HEAD.size > len(stored):
            raise HeaderError("truncated piece")
        (n,) = PIECE_HEAD.unpack_from(stored, at)
        at += PIECE_HEAD.size
        if not 1 <= n <= want or at + n > len(stored):
            raise HeaderError("bad piece length")
        piece = stored[at : at + n]
        at += n
        if n < want:
            try:
                piece = lz4.block.decompress(piece, uncompressed_size=want)
            except lz4.block.LZ4BlockError:
                raise HeaderError("piece does not decompress") from None
            if len(piece) != want:
                raise HeaderError("piece decompresses to the wrong length")
        parts.append(piece)
    if at != len(stored):
        raise HeaderError("bytes after the last piece")
    return b"".join(parts)
