"""The store's block codec in Python: the tests' oracle for pagerfs.store._codec.

Same functions, arguments, results and exceptions as the C module (see the docstrings
there, `help(pagerfs.store._codec)`), written plainly with hashlib and python-lz4, two
implementations the C code shares nothing with but the algorithms. The store never
uses this module: the tests run both on the same input, damaged input above all, and
assert the results are equal byte for byte.
"""

from __future__ import annotations

import os
import stat
from hashlib import sha256

import lz4.block

PAGE = 4096
HASH = 32
LZ4_VERSION = lz4.library_version_number()
_ZERO = bytes(PAGE)


class ShortReadError(Exception):
    """The image file ended before the stored block did."""


class DecodeError(Exception):
    """The stored block does not decode to its uncompressed length."""


def _pages_of(n: int) -> int:
    return -(-n // PAGE)


def hash_pages(buf, offset: int = 0, length: int | None = None) -> bytes:
    mv = memoryview(buf).cast("B")
    if length is None:
        length = len(mv) - offset
    if offset < 0 or length < 0 or offset + length > len(mv):
        raise ValueError(f"bytes {offset}+{length} are not inside a buffer of {len(mv)}")
    out = []
    for at in range(offset, offset + length, PAGE):
        page = bytes(mv[at : min(at + PAGE, offset + length)])
        out.append(sha256(page + _ZERO[len(page) :]).digest())
    return b"".join(out)


def encode_block(data) -> tuple[bytes, bytes]:
    if not 1 <= len(data) <= 0x7E000000:
        raise ValueError(f"cannot store a block of {len(data)} bytes")
    packed = lz4.block.compress(data, store_size=False)
    if len(packed) >= len(data):
        packed = data if type(data) is bytes else bytes(data)
    return packed, hash_pages(data)


def encode_blocks(data, size: int) -> list[tuple[bytes, bytes]]:
    if not 1 <= size <= 0x7E000000:
        raise ValueError(f"cannot store blocks of {size} bytes")
    mv = memoryview(data).cast("B")
    return [encode_block(bytes(mv[o : o + size])) for o in range(0, len(mv), size)]


def _plan(length: int, hashes, regions) -> list[tuple[int, int]]:
    """The (offset, length) regions to verify, after the C module's argument checks."""
    plan = [(0, length)] if regions is None else [(int(o), int(n)) for o, n in regions]
    for o, n in plan:
        if o < 0 or n < 0 or o + n > length:
            raise ValueError(f"region ({o}, {n}) is not inside a block of {length} bytes")
    npages = sum(_pages_of(n) for _, n in plan)
    if len(hashes) != npages * HASH:
        raise ValueError(f"{len(hashes)} bytes of page hashes for {npages} pages")
    return plan


def _check(data: bytes, hashes: bytes, plan: list[tuple[int, int]]) -> list[int]:
    hashes = bytes(hashes)
    got = b"".join(hash_pages(data, o, n) for o, n in plan)
    npages = len(got) // HASH
    return [i for i in range(npages) if got[i * HASH : (i + 1) * HASH] != hashes[i * HASH : (i + 1) * HASH]]


def check_pages(data, hashes, regions=None) -> list[int]:
    data = bytes(data)
    return _check(data, hashes, _plan(len(data), hashes, regions))


def _decode(stored: bytes, raw_len: int, compressed: bool) -> bytes:
    if not compressed:
        if len(stored) != raw_len:
            raise DecodeError("wrong uncompressed length")
        return stored
    try:
        data = lz4.block.decompress(stored, uncompressed_size=raw_len)
    except lz4.block.LZ4BlockError:
        raise DecodeError("lz4 decompression failed") from None
    if len(data) != raw_len:
        raise DecodeError("lz4 decompression failed")
    return data


def decode_block(stored, raw_len: int, compressed, hashes, regions=None):
    stored = bytes(stored)
    if not 1 <= raw_len <= 0x7E000000 or len(stored) > 0x7E000000:
        raise ValueError(f"a block of {raw_len} bytes cannot be stored in {len(stored)}")
    plan = _plan(raw_len, hashes, regions)
    data = _decode(stored, raw_len, bool(compressed))
    return data, _check(data, hashes, plan)


def read_block(fd: int, offset: int, stored_len: int, raw_len: int, hashes, regions=None):
    if not (1 <= raw_len <= 0x7E000000 and 1 <= stored_len <= raw_len):
        raise ValueError(f"a block of {raw_len} bytes cannot be stored in {stored_len}")
    if offset < 0:
        raise ValueError("negative offset")
    plan = _plan(raw_len, hashes, regions)
    parts, got = [], 0
    while got < stored_len:
        part = os.pread(fd, stored_len - got, offset + got)
        if not part:
            raise ShortReadError("short read: the image was truncated")
        parts.append(part)
        got += len(part)
    data = _decode(b"".join(parts), raw_len, stored_len < raw_len)
    return data, _check(data, hashes, plan)


def read_files(paths, starts, lengths, keyed=None) -> list:
    if not len(paths) == len(starts) == len(lengths) == len(lengths if keyed is None else keyed):
        raise ValueError("paths, starts, lengths and keyed differ in length")
    out = []
    for path, start, length in zip(paths, starts, lengths):
        if start < 0 or length < 0:
            raise ValueError("negative start or length")
        parts, got = [], 0
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                while got < length:
                    part = os.pread(fd, length - got, start + got)
                    if not part:
                        break
                    parts.append(part)
                    got += len(part)
            finally:
                os.close(fd)
        except OSError as err:
            raise OSError(err.errno, err.strerror, path) from None
        out.append(b"".join(parts))
    if keyed is None:
        return out
    return [(data, sha256(data).digest() if want else b"") for data, want in zip(out, keyed)]


def list_dir(path) -> list[tuple]:
    path = os.fsencode(path)
    if b"\0" in path:
        raise ValueError("a path is bytes without NUL")
    try:
        with os.scandir(path) as it:
            names = sorted(e.name for e in it)
    except OSError as err:
        raise OSError(err.errno, err.strerror, path) from None
    out = []
    for name in names:
        full = os.path.join(path, name)
        try:
            st = os.lstat(full)
            target = os.readlink(full) if stat.S_ISLNK(st.st_mode) else None
        except OSError as err:
            raise OSError(err.errno, err.strerror, full) from None
        out.append((name, st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid,
                    st.st_size if target is None else len(target), st.st_blocks, st.st_mtime_ns,
                    target))
    return out
