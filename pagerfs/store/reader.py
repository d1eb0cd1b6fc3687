"""Reading an image: open and validate all metadata once, then serve verified chunks.

Everything but file data is loaded and checked at open (it is small, and bounded by
the image size, which every table length is checked against before it is read). After
that a chunk is one call of the native codec (pagerfs/store/_codec.c), which holds no
GIL while it reads the stored block, decompresses it and verifies the block's pages
that the caller asks for against their page hashes: all of them for a whole full chunk
(the sequential case, still one call), one for a random 4 KiB read. Two pager threads
thus decode two chunks at once, and this module only looks up where a chunk is and
names the pages. A file's fs-verity digest is computed from its page hashes when it
is first asked for.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import os
import stat as statmod
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from pagerfs.store import format as fmt
from pagerfs.store import verity
from pagerfs.store.codec import native
from pagerfs.store.errors import FormatError, IntegrityError, StoreIOError, show

Tamper = Callable[[bytes], bytes]

_MODE_OF_KIND = {fmt.KIND_DIR: statmod.S_IFDIR, fmt.KIND_FILE: statmod.S_IFREG,
                 fmt.KIND_SYMLINK: statmod.S_IFLNK}
_SYMLINK_MAX = 4095  # PATH_MAX - 1, as Linux allows


class Kind(enum.StrEnum):
    DIR = "dir"
    FILE = "file"
    SYMLINK = "symlink"


_KIND = {fmt.KIND_DIR: Kind.DIR, fmt.KIND_FILE: Kind.FILE, fmt.KIND_SYMLINK: Kind.SYMLINK}


@dataclass(frozen=True, slots=True)
class Inode:
    ino: int
    kind: Kind
    mode: int  # full st_mode, file type bits included
    uid: int
    gid: int
    mtime_ns: int
    size: int
    nlink: int
    allocated: int = 0  # bytes of data stored (a file's size less its holes): st_blocks


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What `statfs` and `ls`-like output need about the image as a whole."""

    image_bytes: int  # size of the image file
    stored_bytes: int  # compressed file data in it
    file_bytes: int  # uncompressed bytes of all regular files (hard links once)
    inode_count: int
    block_count: int
    chunk_size: int
    version: int


@dataclass(frozen=True, slots=True)
class ChunkPages:
    """One chunk's bytes, of which only some pages were verified (Image.read_chunk_pages).

    `data` is the chunk's whole uncompressed bytes (as read_chunk returns them) and
    data[0] is file page `first_page`. Only the pages of `verified` were checked against
    their hashes, and those in `bad` failed: a caller may use the bytes of the pages of
    `verified` not in `bad`, and nothing else of `data` (unverified bytes may be damaged).
    """

    data: bytes
    first_page: int
    verified: range  # file pages checked
    bad: frozenset[int]  # file pages of `verified` whose hash did not match

    def good(self) -> list[int]:
        """The verified pages that passed, in order."""
        return [p for p in self.verified if p not in self.bad]

    def page(self, page: int) -> bytes:
        """The bytes of one good page (short at EOF); ValueError for any other page."""
        if page not in self.verified or page in self.bad:
            raise ValueError(f"page {page} was not verified good")
        start = (page - self.first_page) * fmt.PAGE
        return self.data[start : start + fmt.PAGE]


class _BlockFailure(Exception):
    """A stored block could not be supplied; the caller names the file and pages."""

    def __init__(self, error: type, reason: str):
        super().__init__(reason)
        self.error = error
        self.reason = reason


def _not_found(ino: int) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, f"no inode {ino} in the image")


FRAGMENT_CACHE = 8  # decompressed fragment blocks kept per open image (1 MiB at 128 KiB)


class Image:
    """An open pagerfs image. Use Image.open(path)."""

    root = 1

    def __init__(self, fd: int, path: str, header: fmt.Header, tables: dict[str, bytes],
                 fragment_cache: int = FRAGMENT_CACHE, codec: ModuleType = native):
        self._fd = fd
        # A read of a few pages of a chunk (a random read: the pager asks for the whole
        # chunk when a request continues a stream) goes through a second open file of
        # the image with the host's read-ahead off (POSIX_FADV_RANDOM, which is per
        # open file): the stored block is all it needs from the disk, while sequential
        # reads keep the host's read-ahead on the first. docs/BENCHMARKS.md has the
        # figures ("The image's host read-ahead"). Opened last, once the tables are
        # known good (a failing open closes only `fd`).
        self._random_fd = fd
        self._codec = codec
        # Small files share fragment blocks; reading N of them would read and
        # decompress the same block N times. The cache holds decompressed, unverified
        # blocks: every read still verifies the pages it returns against their hashes,
        # and a read with `tamper` never uses the cache, so injected or at-rest damage
        # is seen by every read of the damaged pages.
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_size = fragment_cache
        self._cache_lock = threading.Lock()
        self._path = path
        self._header = header
        self.chunk_size = header.chunk_size
        self._pages_per_chunk = self.chunk_size // fmt.PAGE
        self._inodes = list(fmt.INODE.iter_unpack(tables["inodes"]))
        self._digests: dict[int, bytes] = {}  # ino -> fs-verity digest, once computed
        # Raw, unpacked on use: a 1 TiB sparse file has 8 million entries, all holes.
        self._chunkmap = tables["chunkmap"]
        self._chunks = len(self._chunkmap) // fmt.CHUNKMAP.size
        self._blocks = list(fmt.BLOCK.iter_unpack(tables["blocks"]))
        self._block_hash: list[int] = []  # block -> index of its first page hash
        self._allocated: dict[int, int] = {}  # ino -> bytes of data, for files with holes
        self._page_hashes = tables["pagehashes"]
        self._strings = tables["strings"]
        self._children: dict[int, dict[bytes, int]] = {}
        self._parent: list[int] = []
        self._name: list[bytes] = []
        self._dirents = list(fmt.DIRENT.iter_unpack(tables["dirents"]))
        self._validate(self._dirents)
        self._random_fd = _random_reader(fd)

    # ---- opening and validation -------------------------------------------------

    @classmethod
    def open(cls, path: str | bytes | os.PathLike, fragment_cache: int = FRAGMENT_CACHE,
             codec: ModuleType = native) -> "Image":
        """`codec` is the block codec (the native one; the tests pass its Python oracle)."""
        name = show(os.fspath(path))
        try:
            # O_NONBLOCK: a FIFO given as the image must not block the open.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            raise FormatError(f"{name}: {err.strerror}") from None
        try:
            header, tables = _read_metadata(fd, name)
            try:
                return cls(fd, name, header, tables, fragment_cache, codec)
            except (ValueError, IndexError, OverflowError) as err:
                # A crafted image whose checksums match but whose tables do not make
                # sense: whatever tripped, it is the image's fault, not ours.
                raise FormatError(f"{name}: inconsistent metadata ({err})") from None
        except BaseException:
            os.close(fd)
            raise

    def _bad(self, what: str) -> FormatError:
        return FormatError(f"{self._path}: corrupt metadata: {what}")

    def _validate(self, dirents: list[tuple[int, int, int]]) -> None:
        h = self._header
        n = len(self._inodes)
        if n != h.inode_count or n < 1:
            raise self._bad("inode count")
        if len(self._blocks) != h.block_count:
            raise self._bad("block count")
        cs = self.chunk_size
        first_hash = 0
        for off, slen, ulen in self._blocks:
            if not (h.data_offset <= off and off + slen <= h.data_end
                    and 1 <= ulen <= cs and 1 <= slen <= ulen):
                raise self._bad(f"block at {off} out of bounds")
            # A block's page hashes are one per page of its bytes, after the previous
            # block's: so no two overlap, and the table holds exactly all of them.
            self._block_hash.append(first_hash)
            first_hash += fmt.pages_of(ulen)
        if first_hash != len(self._page_hashes) // fmt.PAGE_HASH:
            raise self._bad("page hash count does not match the blocks")
        nblocks = len(self._blocks)
        nstrings = len(self._strings)
        for i, (kind, mode, _uid, _gid, _nl, _mt, size, first, count) in enumerate(self._inodes):
            if kind not in _MODE_OF_KIND or statmod.S_IFMT(mode) != _MODE_OF_KIND[kind]:
                raise self._bad(f"inode {i + 1}: bad kind or mode")
            if kind == fmt.KIND_DIR:
                if first + count > len(dirents):
                    raise self._bad(f"inode {i + 1}: entries out of bounds")
            elif kind == fmt.KIND_FILE:
                if count != -(-size // cs) or first + count > self._chunks:
                    raise self._bad(f"inode {i + 1}: chunk map out of bounds")
                self._check_chunks(i + 1, size, first, count, nblocks)
            else:
                target = self._strings[first : first + count]
                if not (1 <= size <= _SYMLINK_MAX and count == size == len(target)
                        and b"\0" not in target):
                    raise self._bad(f"inode {i + 1}: bad symlink target")
        if self._inodes[0][0] != fmt.KIND_DIR:
            raise self._bad("root is not a directory")
        self._walk_tree(dirents, nstrings)

    def _check_chunks(self, ino: int, size: int, first: int, count: int, nblocks: int) -> None:
        """Every chunk map entry of the file inside its block and its block's page
        hashes; a run of holes is skipped at the speed of a memory compare."""
        cs, cm, esize = self.chunk_size, self._chunkmap, fmt.CHUNKMAP.size
        holes = 0
        j = 0
        while j < count:
            block, boff = fmt.CHUNKMAP.unpack_from(cm, (first + j) * esize)
            if block == fmt.HOLE:
                run = self._hole_run(first + j, count - j)
                if not run:
                    raise self._bad(f"inode {ino}: chunk {j} out of bounds")
                holes += min((j + run) * cs, size) - j * cs
                j += run
                continue
            length = min(cs, size - j * cs)
            if block >= nblocks or boff + length > self._blocks[block][2]:
                raise self._bad(f"inode {ino}: chunk {j} out of bounds")
            j += 1
        if holes:
            self._allocated[ino] = size - holes

    def _hole_run(self, entry: int, limit: int) -> int:
        """How many of the `limit` entries from `entry` on are holes, found by comparing
        ever longer spans at once."""
        cm, esize = self._chunkmap, fmt.CHUNKMAP.size
        n, step = 0, 1
        while n < limit:
            k = min(step, limit - n)
            at = (entry + n) * esize
            if cm[at : at + k * esize] != fmt.HOLE_ENTRY * k:
                if k == 1:
                    return n
                step = 1  # the run ends within these k: go on one by one, then faster
                continue
            n += k
            step *= 2
        return n

    def _walk_tree(self, dirents: list[tuple[int, int, int]], nstrings: int) -> None:
        """Check the tree is a tree: every inode reachable, directories linked once."""
        n = len(self._inodes)
        parent = [0] * (n + 1)
        name = [b""] * (n + 1)
        links = [0] * (n + 1)
        subdirs = [0] * (n + 1)
        parent[1] = 1
        queue = deque([1])
        while queue:
            d = queue.popleft()
            _, _, _, _, _, _, _, first, count = self._inodes[d - 1]
            children: dict[bytes, int] = {}
            prev = b""
            for noff, nlen, child in dirents[first : first + count]:
                nm = self._strings[noff : noff + nlen]
                if len(nm) != nlen or noff + nlen > nstrings:
                    raise self._bad(f"entry name of directory {d} out of bounds")
                if not nm or b"/" in nm or b"\0" in nm or nm in (b".", b".."):
                    raise self._bad(f"invalid name {nm!r} in {show(self._join(parent, name, d))}")
                if nm <= prev:
                    raise self._bad(f"entries of directory {d} not sorted")
                prev = nm
                if not 2 <= child <= n:
                    raise self._bad(f"entry {nm!r} names inode {child}")
                if self._inodes[child - 1][0] == fmt.KIND_DIR:
                    if parent[child]:
                        raise self._bad(f"directory inode {child} linked twice")
                    subdirs[d] += 1
                    queue.append(child)
                if not parent[child]:
                    parent[child] = d
                    name[child] = nm
                links[child] += 1
                children[nm] = child
            self._children[d] = children
        for ino in range(1, n + 1):
            kind, nlink = self._inodes[ino - 1][0], self._inodes[ino - 1][4]
            if not parent[ino]:
                raise self._bad(f"inode {ino} is not reachable from the root")
            expected = 2 + subdirs[ino] if kind == fmt.KIND_DIR else links[ino]
            if nlink != expected:
                raise self._bad(f"inode {ino}: link count {nlink}, expected {expected}")
        self._parent = parent
        self._name = name

    @staticmethod
    def _join(parent: list[int], name: list[bytes], ino: int) -> bytes:
        parts = []
        while ino != 1:
            parts.append(name[ino])
            ino = parent[ino]
        return b"/" + b"/".join(reversed(parts))

    # ---- the tree ---------------------------------------------------------------

    def _record(self, ino: int) -> tuple:
        if not 1 <= ino <= len(self._inodes):
            raise _not_found(ino)
        return self._inodes[ino - 1]

    def stat(self, ino: int) -> Inode:
        kind, mode, uid, gid, nlink, mtime_ns, size, _, _ = self._record(ino)
        return Inode(ino, _KIND[kind], mode, uid, gid, mtime_ns, size, nlink,
                     self._allocated.get(ino, size))

    def lookup(self, parent_ino: int, name: bytes) -> int | None:
        self._record(parent_ino)
        children = self._children.get(parent_ino)
        return None if children is None else children.get(name)

    def listdir(self, ino: int, start: int = 0, stop: int | None = None) -> list[tuple[bytes, int]]:
        """Entries [start, stop) of the directory, sorted by name: a slice of the dirent
        table, so a caller that lists a big directory a few entries at a time (readdir)
        pays for the entries it gets, not for the whole directory each time."""
        kind, _, _, _, _, _, _, first, count = self._record(ino)
        if kind != fmt.KIND_DIR:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", show(self.path_of(ino)))
        lo = min(max(start, 0), count)
        hi = count if stop is None else min(max(stop, lo), count)
        strings = self._strings
        return [(strings[off : off + n], child)
                for off, n, child in self._dirents[first + lo : first + hi]]

    def readlink(self, ino: int) -> bytes:
        kind, _, _, _, _, _, _, first, count = self._record(ino)
        if kind != fmt.KIND_SYMLINK:
            raise OSError(errno.EINVAL, "not a symbolic link", show(self.path_of(ino)))
        return self._strings[first : first + count]

    def resolve(self, path: bytes | str) -> int:
        """The inode at `path` (relative to the root); symlinks are not followed."""
        raw = os.fsencode(path)
        ino = 1
        for part in raw.split(b"/"):
            if part in (b"", b"."):
                continue
            if ino not in self._children:
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", show(raw))
            if part == b"..":
                ino = self._parent[ino]
                continue
            child = self._children[ino].get(part)
            if child is None:
                raise FileNotFoundError(errno.ENOENT, "no such file or directory in the image", show(raw))
            ino = child
        return ino

    def path_of(self, ino: int) -> bytes:
        self._record(ino)
        return self._join(self._parent, self._name, ino)

    def fsverity_digest(self, ino: int) -> bytes:
        """What `fsverity digest` prints for the file, computed from its page hashes the
        first time it is asked for (then kept). A full chunk's block page hashes are
        the file's leaves; a tail packed into a fragment is read (verified against its
        fragment's pages, so IntegrityError if it is damaged) and its own pages hashed,
        the last one zero padded; a hole's leaves are the zero page's."""
        digest = self._digests.get(ino)
        if digest is not None:
            return digest
        if self._record(ino)[0] != fmt.KIND_FILE:
            raise OSError(errno.EINVAL, "not a regular file", show(self.path_of(ino)))
        size, first, count = self._file(ino)
        runs: list[verity.Run] = []
        j = 0
        while j < count:
            block, offset, _, length = self._chunk_entry(ino, j)
            if block == fmt.HOLE:
                run = self._hole_run(first + j, count - j)
                end = min((j + run) * self.chunk_size, size)
                runs.append((verity.ZERO_PAGE_HASH, fmt.pages_of(end - j * self.chunk_size)))
                j += run
                continue
            if not self._shares_block(block, offset, length):
                base = self._block_hash[block] * fmt.PAGE_HASH
                runs.append(self._page_hashes[base : base + fmt.pages_of(length) * fmt.PAGE_HASH])
            else:
                runs.append(self._codec.hash_pages(self.read_chunk(ino, j)))
            j += 1
        if all(isinstance(run, bytes) for run in runs):
            digest = verity.digest_from_level0(b"".join(runs), size)
        else:  # zero subtrees hashed once per level, not once per page
            digest = verity.digest_from_runs(runs, size)
        self._digests[ino] = digest
        return digest

    def info(self) -> ImageInfo:
        h = self._header
        return ImageInfo(h.image_size, h.data_end - h.data_offset, h.file_bytes,
                         h.inode_count, h.block_count, self.chunk_size, h.version)

    @property
    def inode_count(self) -> int:
        return len(self._inodes)

    # ---- file data --------------------------------------------------------------

    def _file(self, ino: int) -> tuple[int, int, int]:
        kind, _, _, _, _, _, size, first, count = self._record(ino)
        if kind != fmt.KIND_FILE:
            raise IsADirectoryError(errno.EISDIR, "not a regular file", show(self.path_of(ino)))
        return size, first, count

    def chunk_range(self, ino: int, first_page: int, npages: int) -> range:
        size, _, count = self._file(ino)
        ppc = self._pages_per_chunk
        end = min(-(-(first_page + npages) // ppc), count)
        return range(min(first_page // ppc, end), end)

    def chunk_pages(self, ino: int, index: int) -> tuple[int, int]:
        size, _, count = self._file(ino)
        if not 0 <= index < count:
            raise IndexError(f"chunk {index} of a file with {count} chunks")
        ppc = self._pages_per_chunk
        first = index * ppc
        return first, min(ppc, -(-size // fmt.PAGE) - first)

    def read_chunk(self, ino: int, index: int, tamper: Tamper | None = None) -> bytes:
        """The chunk's uncompressed bytes, every page verified.

        IntegrityError names the pages that failed (`pages`; `first_page`..`last_page`
        span them), or all the chunk's pages when it did not decompress; StoreIOError
        all the chunk's pages.
        """
        cp = self._read(ino, index, tamper, 0, 1 << 62)
        if cp.bad:
            raise IntegrityError(self.path_of(ino), min(cp.bad), max(cp.bad),
                                 "checksum mismatch", pages=cp.bad)
        return cp.data

    def read_chunk_pages(self, ino: int, index: int, first_page: int, npages: int,
                         tamper: Tamper | None = None) -> ChunkPages:
        """Chunk `index` of the file, verifying only file pages [first_page,
        first_page + npages) clipped to the chunk; see ChunkPages for what may be used.

        A failed page hash is reported in the result, not raised. A chunk that does not
        decompress (to the right length) raises IntegrityError, an unreadable image
        StoreIOError, both naming all the chunk's pages: nothing of it is usable.
        """
        if first_page < 0 or npages < 0:
            raise ValueError(f"bad page range {first_page}+{npages}")
        return self._read(ino, index, tamper, first_page, npages)

    def read_pages(self, ino: int, first_page: int, npages: int) -> bytes:
        chunks = self.chunk_range(ino, first_page, npages)
        if not chunks:
            return b""
        parts = []
        for i in chunks:
            cp = self._read(ino, i, None, first_page, npages)
            if cp.bad:
                raise IntegrityError(self.path_of(ino), min(cp.bad), max(cp.bad),
                                     "checksum mismatch", pages=cp.bad)
            parts.append(cp.data)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        skip = first_page * fmt.PAGE - chunks.start * self.chunk_size
        return data[skip : skip + npages * fmt.PAGE]  # no copy when it is all of data

    def _read(self, ino: int, index: int, tamper: Tamper | None, first_page: int,
              npages: int) -> ChunkPages:
        size, first, count = self._file(ino)
        if not 0 <= index < count:
            raise IndexError(f"chunk {index} of a file with {count} chunks")
        block, offset = fmt.CHUNKMAP.unpack_from(self._chunkmap, (first + index) * fmt.CHUNKMAP.size)
        length = min(self.chunk_size, size - index * self.chunk_size)
        chunk_first = index * self._pages_per_chunk
        chunk_end = chunk_first + fmt.pages_of(length)
        lo = max(first_page, chunk_first)
        hi = max(lo, min(first_page + npages, chunk_end))
        if block == fmt.HOLE:
            return self._hole(ino, length, chunk_first, lo, hi, tamper)
        shared = self._shares_block(block, offset, length)
        cached = shared and tamper is None and self._cache_size
        check = self._check_of(block, offset, length, lo - chunk_first, hi - lo)
        data = None
        if cached:
            with self._cache_lock:
                data = self._cache.get(block)
                if data is not None:
                    self._cache.move_to_end(block)
        try:
            if data is not None:
                bad = self._codec.check_pages(data, *check[:2])
            else:
                part = hi - lo < chunk_end - chunk_first
                data, bad = self._load_block(block, check[:2], tamper,
                                             self._random_fd if part else self._fd)
                if cached:
                    with self._cache_lock:
                        self._cache[block] = data
                        if len(self._cache) > self._cache_size:
                            self._cache.popitem(last=False)
        except _BlockFailure as fail:
            raise fail.error(self.path_of(ino), chunk_first, chunk_end - 1,
                             fail.reason) from None
        return ChunkPages(data[offset : offset + length] if shared else data, chunk_first,
                          range(lo, hi), _chunk_pages_of(bad, check[2], offset, length,
                                                         lo - chunk_first, hi - lo, chunk_first))

    def _hole(self, ino: int, length: int, chunk_first: int, lo: int, hi: int,
              tamper: Tamper | None) -> ChunkPages:
        """A chunk that is all hole: zeros, with nothing stored to read or verify. With a
        tamper hook (fault injection) it is checked as if stored raw, so that damage
        to it is found by the same page hashes (the zero page's) as any other."""
        data = bytes(length)
        if tamper is None:
            return ChunkPages(data, chunk_first, range(lo, hi), frozenset())
        got = tamper(data)
        if len(got) != length:
            raise IntegrityError(self.path_of(ino), chunk_first, chunk_first + fmt.pages_of(length) - 1,
                                 "wrong uncompressed length")
        start = (lo - chunk_first) * fmt.PAGE
        regions = [(start, min((hi - lo) * fmt.PAGE, length - start))] if hi > lo else []
        bad = self._codec.check_pages(got, verity.ZERO_PAGE_HASH * (hi - lo), regions)
        return ChunkPages(got, chunk_first, range(lo, hi), frozenset(lo + i for i in bad))

    def _check_of(self, block: int, offset: int, length: int, first: int,
                  n: int) -> tuple[bytes, list | None, int]:
        """(page hashes, regions, a) that verify pages [first, first + n) of the chunk of
        `length` bytes at `offset` in the block: the block's pages a, a + 1, ... that
        those bytes lie in, against the block's own page hashes (the codec reports bad
        pages counted from a). For a full chunk they are the chunk's pages; a tail
        packed into a fragment may start and end inside a fragment page, and a page of
        it may span two of them: both are checked. All of a block's pages (a whole full
        chunk, the sequential case) are one region-less call."""
        if n <= 0:
            return b"", [], 0
        ulen = self._blocks[block][2]
        start = offset + first * fmt.PAGE
        end = offset + min((first + n) * fmt.PAGE, length)
        a, b = start // fmt.PAGE, -(-end // fmt.PAGE)
        base = self._block_hash[block]
        want = self._page_hashes[(base + a) * fmt.PAGE_HASH : (base + b) * fmt.PAGE_HASH]
        if a == 0 and b == fmt.pages_of(ulen):
            return want, None, 0
        return want, [(a * fmt.PAGE, min(b * fmt.PAGE, ulen) - a * fmt.PAGE)], a

    def _load_block(self, block: int, check: tuple, tamper: Tamper | None,
                    fd: int) -> tuple[bytes, list[int]]:
        """The block's uncompressed bytes and the bad pages of `check` (_check_of): one
        GIL-free call of the codec, or with `tamper` a pread, the tamper hook, and one;
        read from `fd` (one of the image's open files)."""
        offset, stored, length = self._blocks[block]
        codec = self._codec
        try:
            if tamper is None:
                return codec.read_block(fd, offset, stored, length, *check)
            data = os.pread(fd, stored, offset)
            if len(data) != stored:
                raise codec.ShortReadError("short read: the image was truncated")
            return codec.decode_block(tamper(data), length, stored < length, *check)
        except OSError as err:
            raise _BlockFailure(StoreIOError, f"read failed: {err.strerror}") from None
        except codec.ShortReadError as err:
            raise _BlockFailure(StoreIOError, str(err)) from None
        except codec.DecodeError as err:
            raise _BlockFailure(IntegrityError, str(err)) from None

    def _shares_block(self, block: int, offset: int, length: int) -> bool:
        """Whether the chunk of `length` bytes at `offset` is only part of its block (a
        tail in a fragment), not the whole block (a full chunk, stored alone)."""
        return offset != 0 or length != self._blocks[block][2]

    def block_span(self, ino: int, index: int) -> tuple[int, int, int]:
        """(offset, length) of chunk `index`'s bytes in its block's uncompressed bytes,
        and the block's length: where a tamper hook must damage the stored bytes to hit
        given pages of the chunk (a tail is part of a shared fragment). A hole is
        tampered with as if stored alone: (0, length, length)."""
        block, offset, _, length = self._chunk_entry(ino, index)
        if block == fmt.HOLE:
            return 0, length, length
        return offset, length, self._blocks[block][2]

    def prefetch(self, ino: int, index: int) -> None:
        """A hint that a few pages of chunk `index` of the file are about to be read
        (read_chunk_pages): the host starts reading the chunk's stored block from the
        disk now (POSIX_FADV_WILLNEED on the open file such reads use) and this
        returns without waiting, so the caller's own work until it reads overlaps the
        disk's. Nothing is read into memory here, nothing verified, nothing raised: a
        hole, a block already in the host's page cache or a hint the host refuses
        cost a syscall at most."""
        block = self._chunk_entry(ino, index)[0]
        if block == fmt.HOLE:
            return
        offset, stored, _ = self._blocks[block]
        try:
            os.posix_fadvise(self._random_fd, offset, stored, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass

    def is_hole(self, ino: int, index: int) -> bool:
        """Whether chunk `index` of the file is all hole (zeros, nothing stored)."""
        return self._chunk_entry(ino, index)[0] == fmt.HOLE

    def _chunk_entry(self, ino: int, index: int) -> tuple[int, int, int, int]:
        """(block, offset, first page, length) of chunk `index` of the file."""
        size, first, count = self._file(ino)
        if not 0 <= index < count:
            raise IndexError(f"chunk {index} of a file with {count} chunks")
        block, offset = fmt.CHUNKMAP.unpack_from(self._chunkmap, (first + index) * fmt.CHUNKMAP.size)
        return (block, offset, index * self._pages_per_chunk,
                min(self.chunk_size, size - index * self.chunk_size))

    def _check_block(self, block: int, chunks: list[tuple[int, int]],
                     ) -> list[tuple[int, type, frozenset[int]]]:
        """For the scrub: [(ino, error, bad file pages)] of the `chunks` (ino, index)
        stored in the block; empty when every page of the block matches its hash (one
        codec call). A block that cannot be read or decoded damages every page of
        every chunk in it; one that decodes, the pages of each chunk that lie in a
        failed page of the block."""
        ulen = self._blocks[block][2]
        try:
            _, bad = self._load_block(block, self._check_of(block, 0, ulen, 0, fmt.pages_of(ulen))[:2],
                                      None, self._fd)
        except _BlockFailure as fail:
            return [(ino, fail.error, frozenset(range(*self._pages_of_chunk(ino, index))))
                    for ino, index in chunks]
        if not bad:
            return []
        damaged = []
        for ino, index in chunks:
            _, offset, first, length = self._chunk_entry(ino, index)
            pages = _chunk_pages_of(bad, 0, offset, length, 0, fmt.pages_of(length), first)
            if pages:
                damaged.append((ino, IntegrityError, pages))
        return damaged

    def _pages_of_chunk(self, ino: int, index: int) -> tuple[int, int]:
        first, n = self.chunk_pages(ino, index)
        return first, first + n

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        random_fd, self._random_fd = self._random_fd, -1
        if random_fd not in (fd, -1):
            os.close(random_fd)
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _chunk_pages_of(bad: list[int], a: int, offset: int, length: int, first: int, n: int,
                    chunk_first: int) -> frozenset[int]:
    """The file pages of a chunk (`length` bytes at `offset` in its block, its page 0
    file page `chunk_first`) among its pages [first, first + n) that lie in the block
    pages a + i for i in `bad`: a block page fails every chunk page it holds bytes of."""
    if not bad:
        return frozenset()
    out = set()
    for i in bad:
        q = (a + i) * fmt.PAGE - offset  # the bad block page's bytes, in the chunk
        lo = max(q, 0) // fmt.PAGE
        hi = (min(q + fmt.PAGE, length) - 1) // fmt.PAGE
        out.update(range(max(lo, first), min(hi, first + n - 1) + 1))
    return frozenset(chunk_first + k for k in out)


def _random_reader(fd: int) -> int:
    """A second open file of the image open as `fd`, with the host's read-ahead off;
    `fd` itself where that cannot be had (no /proc, or not a regular file)."""
    try:
        if not statmod.S_ISREG(os.fstat(fd).st_mode):
            return fd
        random_fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return fd
    try:
        os.posix_fadvise(random_fd, 0, 0, os.POSIX_FADV_RANDOM)
    except OSError:
        pass  # read-ahead stays on: slower, not wrong
    return random_fd


def _pread_exact(fd: int, n: int, offset: int, name: str) -> bytes:
    try:
        data = os.pread(fd, n, offset)
    except OSError as err:
        raise FormatError(f"{name}: cannot read: {err.strerror}") from None
    if len(data) != n:
        raise FormatError(f"{name}: truncated image")
    return data


def _read_metadata(fd: int, name: str) -> tuple[fmt.Header, dict[str, bytes]]:
    st = os.fstat(fd)
    if not statmod.S_ISREG(st.st_mode):
        raise FormatError(f"{name}: not a regular file")
    size = st.st_size
    if size == 0:
        raise FormatError(f"{name}: empty file, not a pagerfs image")
    try:
        h = fmt.unpack_header(_pread_exact(fd, min(size, fmt.HEADER_SIZE), 0, name))
    except fmt.HeaderError as err:
        raise FormatError(f"{name}: {err}") from None
    if h.image_size != size:
        what = "truncated" if size < h.image_size else "has trailing bytes"
        raise FormatError(f"{name}: image {what} ({size} bytes, header says {h.image_size})")
    if not fmt.MIN_CHUNK_SHIFT <= h.chunk_shift <= fmt.MAX_CHUNK_SHIFT:
        raise FormatError(f"{name}: unsupported chunk size 2^{h.chunk_shift}")
    if h.flags:
        raise FormatError(f"{name}: unsupported feature flags {h.flags:#x}")
    if not fmt.HEADER_SIZE == h.data_offset <= h.data_end <= size:
        raise FormatError(f"{name}: corrupt header: data region out of bounds")
    tables = {}
    for tname in fmt.TABLE_NAMES:
        t = h.tables[tname]
        # Checked against the file size before anything is allocated for it; the
        # uncompressed length is bounded by what lz4 can expand the stored bytes to
        # (unpack_table), and grows only as pieces really decompress.
        if (t.offset < h.data_end or t.offset + t.stored > size
                or t.length % fmt.RECORD_SIZES[tname]):
            raise FormatError(f"{name}: corrupt header: {tname} table out of bounds")
        stored = _pread_exact(fd, t.stored, t.offset, name)
        if hashlib.sha256(stored).digest() != t.sha256:
            raise FormatError(f"{name}: corrupt metadata: {tname} table checksum mismatch")
        try:
            tables[tname] = fmt.unpack_table(stored, t.length)
        except fmt.HeaderError as err:
            raise FormatError(f"{name}: corrupt metadata: {tname} table: {err}") from None
    return h, tables
