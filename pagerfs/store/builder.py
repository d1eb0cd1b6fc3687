"""Building an image from a directory tree (`pagerfs mkimage`).

The tree is scanned (sorted by name, breadth first, so inode numbers and the layout
depend only on the tree; one GIL-free `_codec.list_dir` call per directory) on a
thread of its own, and the files it finds are encoded while it goes on. File data is
cut into pieces that worker threads read and encode: a batch of small files is read in one call of the native
codec (`_codec.read_files`: every open, pread and close without the GIL), and each
block is encoded in one more (`_codec.encode_block`), which without the GIL hashes
its 4 KiB pages and compresses it with lz4. Each byte is hashed once (a tail whose
length another tail has, twice: once more to find duplicates), and no fs-verity
digest is computed: the reader derives it from the page hashes when asked. The
Python here only orders the work; a thread of its own writes the blocks. Threads,
not processes: the reads and the codec release the GIL, and with worker processes the
cost of pickling every compressed chunk back to the parent outweighed what the GIL
costs threads (see docs/BENCHMARKS.md). Results are consumed in submission order, so the image is the
same byte for byte whatever --jobs is.

Space is saved the way mksquashfs saves it: identical chunks are stored once (so
identical files and runs of zeros cost one block), and the short last chunk of every
file ("tail") is packed with others into shared fragment blocks, byte after byte;
a fragment's page hashes are those of its own pages, like any block's.
"""

from __future__ import annotations

# Every `pagerfs mkimage` starts by importing this: it keeps to modules that are cheap to
# import (concurrent.futures, through logging, dataclasses, through inspect, tempfile
# and typing cost 40 ms of a 100 ms start; the helpers below are what the builder used
# of them).
import errno
import gc
import hashlib
import os
import signal
import stat as statmod
import threading
from collections import Counter, deque, namedtuple
from _thread import allocate_lock
from queue import SimpleQueue

from pagerfs.store import format as fmt
from pagerfs.store.codec import native
from pagerfs.store.errors import BuildError, show

TYPE_CHECKING = False  # typing itself is not imported to run
if TYPE_CHECKING:
    from typing import Callable, Iterable

    Warn = Callable[[str], None]
    Advance = Callable[[int, int], None]  # bytes, files

PIECE = 4 << 20  # bytes of one file read and processed at once
BATCH_BYTES = 1 << 20  # small files go to a worker in batches of about this much...
BATCH_FILES = 64  # ...or this many, to keep per-task overhead small
WINDOW_BYTES = 64 << 20  # file bytes in flight at most, to bound memory
WRITES_IN_FLIGHT = 64  # stored blocks handed to the writing thread and not yet written
_SKIPPED = {statmod.S_IFCHR: "character device", statmod.S_IFBLK: "block device",
            statmod.S_IFIFO: "FIFO", statmod.S_IFSOCK: "socket"}


class _Loc:
    """Where a chunk's bytes are stored; a fragment's block is known once it is full."""

    __slots__ = ("block", "offset")

    def __init__(self, block: int, offset: int):
        self.block = block
        self.offset = offset  # bytes into the block


class _Holes:
    """A run of chunks that are all hole: nothing stored, one chunk map entry each."""

    __slots__ = ("count",)

    def __init__(self, count: int):
        self.count = count


# A file's lstat as `_codec.list_dir` gives it: (name, mode, ino, dev, nlink, uid, gid,
# size, blocks, mtime_ns, target), indexed by these; a tuple rather than a class, since
# building an object per file cost more than the lstat did.
_MODE, _INO, _DEV, _NLINK, _UID, _GID, _SIZE, _BLOCKS, _MTIME, _TARGET = range(1, 11)


class _Node:
    __slots__ = ("ino", "kind", "st", "path", "nlink", "entries", "target", "chunks")

    def __init__(self, ino: int, kind: int, st: tuple, path: bytes, nlink: int = 1):
        self.ino = ino
        self.kind = kind
        self.st = st  # its list_dir entry
        self.path = path
        self.nlink = nlink
        self.entries: list[tuple[bytes, int]] = []  # a directory's (name, ino)
        self.target = b""  # a symlink's
        self.chunks: list[_Loc | _Holes] = []  # a file's


BuildResult = namedtuple("BuildResult", "files inodes file_bytes image_bytes blocks")


class _Task:
    """A call handed to _Threads: done(), result() and cancel(), as the builder used
    concurrent.futures.Future. Its lock is held until the call has run."""

    __slots__ = ("fn", "args", "lock", "value", "error", "cancelled")

    def __init__(self, fn, args):
        self.fn, self.args = fn, args
        self.lock = allocate_lock()
        self.lock.acquire()
        self.value = self.error = None
        self.cancelled = False

    def run(self) -> None:
        if not self.cancelled:
            try:
                self.value = self.fn(*self.args)
            except BaseException as err:  # delivered by result(), as a pool would
                self.error = err
        self.fn = self.args = None
        self.lock.release()

    def cancel(self) -> None:
        """Not to run, if it has not started (a build that failed leaves its queue)."""
        self.cancelled = True

    def done(self) -> bool:
        return not self.lock.locked()

    def result(self):
        with self.lock:  # taken once the call has run, and given back at once
            pass
        if self.error is not None:
            raise self.error
        return self.value


class _Threads:
    """A pool of `n` threads running _Tasks in the order submitted; 0 threads: each
    runs at once in the caller (--jobs 1). Leaving it (`with`) waits for every task
    submitted, unless cancelled (Ctrl-C: the batches already running, a few MB)."""

    def __init__(self, n: int):
        self.queue: SimpleQueue[_Task | None] = SimpleQueue()
        self.threads = [threading.Thread(target=self._work, name=f"mkimage-{i}") for i in range(n)]
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        while (task := self.queue.get()) is not None:
            task.run()

    def submit(self, fn, *args) -> _Task:
        task = _Task(fn, args)
        if self.threads:
            self.queue.put(task)
        else:
            task.run()
        return task

    def __enter__(self) -> "_Threads":
        return self

    def __exit__(self, *exc) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()


def _root(source: bytes) -> tuple:
    """The source directory's lstat, as a list_dir entry; BuildError if it is none."""
    try:
        st = os.stat(source)
    except OSError as err:
        raise BuildError(f"{show(source)}: {err.strerror}") from None
    if not statmod.S_ISDIR(st.st_mode):
        raise BuildError(f"{show(source)}: not a directory")
    return (b"", st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
            st.st_blocks, st.st_mtime_ns, None)


def scan(source: bytes, warn: Warn, exclude: dict[tuple[int, int], bool] | None = None,
         found: Callable[[_Node], None] = lambda node: None,
         stopped: Callable[[], bool] = lambda: False) -> list[_Node]:
    """The tree under `source` as nodes in inode order (root = 1); `found(node)` is
    called with each regular file as it is found (in the same order).

    `exclude`: (device, inode) of files to leave out (the image being rebuilt, if it is
    in the tree, with a warning when True; the temporary file of this build, without).
    `stopped()`, asked once per directory: whether to give up (the build failed).
    """
    st = _root(source)
    exclude = exclude or {}
    root = _Node(1, fmt.KIND_DIR, st, source, nlink=2)
    nodes = [root]
    hardlinks: dict[tuple[int, int], _Node] = {}
    queue = deque([root])
    while queue and not stopped():
        d = queue.popleft()
        # One GIL-free call per directory: its entries sorted, lstat'ed, links read.
        try:
            entries = native.list_dir(d.path)
        except OSError as err:
            raise BuildError(f"{show(err.filename)}: {err.strerror}") from None
        prefix = d.path if d.path.endswith(b"/") else d.path + b"/"
        for entry in entries:
            name = entry[0]
            path = prefix + name
            kind = statmod.S_IFMT(entry[_MODE])
            if (entry[_DEV], entry[_INO]) in exclude:
                if exclude[entry[_DEV], entry[_INO]]:
                    warn(f"skipping {show(path)}: the image being built")
                continue
            if kind == statmod.S_IFDIR:
                node = _Node(len(nodes) + 1, fmt.KIND_DIR, entry, path, 2)
                d.nlink += 1
                queue.append(node)
            elif kind == statmod.S_IFREG or kind == statmod.S_IFLNK:
                if entry[_NLINK] > 1:
                    key = (entry[_DEV], entry[_INO])
                    node = hardlinks.get(key)
                    if node is not None:
                        node.nlink += 1
                        d.entries.append((name, node.ino))
                        continue
                if kind == statmod.S_IFREG:
                    node = _Node(len(nodes) + 1, fmt.KIND_FILE, entry, path)
                    found(node)
                else:
                    node = _Node(len(nodes) + 1, fmt.KIND_SYMLINK, entry, path)
                    node.target = entry[_TARGET]
                if entry[_NLINK] > 1:
                    hardlinks[key] = node
            else:
                warn(f"skipping {show(path)}: {_SKIPPED.get(kind, 'special file')}")
                continue
            nodes.append(node)
            d.entries.append((name, node.ino))
    return nodes


# A full chunk, encoded. key: SHA-256 of its page hashes, which identifies it (for
# deduplication); hashes: its page hashes; stored: lz4 block, or the raw bytes when that
# is no smaller; length: its bytes.
_Chunk = namedtuple("_Chunk", "key hashes stored length")
# What a worker makes of a piece of a file. chunks: its full chunks; tail: the file's
# short last chunk, if this piece holds it; tail_key: identifies the tail's contents,
# for deduplication (b"": unique); holes: a piece that is a run of hole chunks: how many
# (nothing else is set).
_Piece = namedtuple("_Piece", "chunks tail tail_key holes", defaults=(0,))


def _data_runs(path: bytes, size: int, cs: int) -> list[tuple[bool, int, int]]:
    """(hole, first chunk, chunks) runs covering the file's chunks, found with
    SEEK_DATA / SEEK_HOLE: a chunk is a hole when no byte of it is data. A file system
    that cannot tell (or a file that is not sparse) gives one data run."""
    nchunks = -(-size // cs)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise BuildError(f"{show(path)}: {err.strerror}") from None
    runs: list[tuple[bool, int, int]] = []
    try:
        c = 0
        while c < nchunks:
            try:
                data = os.lseek(fd, c * cs, os.SEEK_DATA)
            except OSError as err:
                if err.errno != errno.ENXIO:  # ENXIO: no data after this
                    runs.append((False, c, nchunks - c))
                    break
                data = size
            holes = (nchunks if data >= size else data // cs) - c
            if holes > 0:
                runs.append((True, c, holes))
                c += holes
            if c >= nchunks:
                break
            end = os.lseek(fd, data, os.SEEK_HOLE)
            n = max(min(-(-end // cs), nchunks) - c, 1)
            runs.append((False, c, n))
            c += n
    except OSError as err:
        raise BuildError(f"{show(path)}: {err.strerror}") from None
    finally:
        os.close(fd)
    return runs


def _encode_piece(data: bytes, length: int, cs: int, last: bool, hole: bool,
                  dedup: bool) -> _Piece:
    """The piece's chunks, encoded, and its tail. `dedup`: whether another file's tail
    has this one's length (only then can the two be equal, so only then is the tail
    hashed to find out)."""
    if hole:  # nothing was read: the reader makes its zeros
        return _Piece([], b"", b"", -(-length // cs))
    mv = memoryview(data)
    whole = length - length % cs if last else length
    # All the piece's full chunks in one codec call (one GIL hand-off), each hashed page
    # by page and compressed while it is still in cache. A full chunk has no zero padding, so its page hashes identify it.
    chunks = [_Chunk(hashlib.sha256(leaves).digest(), leaves, stored, cs)
              for stored, leaves in (native.encode_blocks(mv[:whole], cs) if whole else ())]
    tail = data if whole == 0 else bytes(mv[whole:])  # a small file is all tail: no copy
    return _Piece(chunks, tail, hashlib.sha256(tail).digest() if tail and dedup else b"")


def _read_batch(items: list[tuple[bytes, int, int, int, bool, bool, bool]]) -> list:
    """The pieces (path, start, length, chunk size, last, hole, dedup), read in one call of
    the codec that holds no GIL for all the batch's opens, reads and closes (a batch is
    up to 64 small files), then encoded: a _Piece each, but a file smaller than a chunk
    (most of a tree) is all tail, and is only (tail, tail_key), its key hashed in that
    same call (the Python per small file was a fifth of a tree's build, holding the GIL)."""
    reads = [item for item in items if not item[5]]
    try:
        got = iter(native.read_files([r[0] for r in reads], [r[1] for r in reads],
                                     [r[2] for r in reads],
                                     [r[6] and r[1] == 0 and r[2] < r[3] for r in reads]))
    except OSError as err:
        raise BuildError(f"{show(err.filename)}: {err.strerror}") from None
    pieces = []
    for path, start, length, cs, last, hole, dedup in items:
        if hole:
            pieces.append(_encode_piece(b"", length, cs, last, hole, dedup))
            continue
        data, key = next(got)
        if len(data) < length:
            raise BuildError(f"{show(path)}: file shrank while the image was being built")
        if start == 0 and length < cs:  # the whole file, short of a chunk: its last piece
            pieces.append((data, key))
        else:
            pieces.append(_encode_piece(data, length, cs, last, hole, dedup))
    return pieces


class _Writer:
    """Assigns block numbers and image offsets in block order; the writing thread
    `pwrite`s each block there, so that this (the main) thread, which also orders every
    file's results, is not held up by the copies into the page cache."""

    def __init__(self, fd: int, pool: _Threads, writes: _Threads, cs: int):
        self.fd = fd
        self.pool = pool
        self.writes = writes
        self.written: deque[_Task] = deque()
        self.cs = cs
        self.offset = fmt.HEADER_SIZE
        self.blocks: list[tuple[int, int, int]] = []  # offset, stored, length
        self.page_hashes: list[bytes] = []  # per block
        self.pending: deque[tuple[int, _Task | tuple]] = deque()
        self.by_key: dict[bytes, int] = {}
        self.tails: dict[bytes, _Loc] = {}
        self.fragment: list[bytes] = []  # its tails, joined by the fragment thread
        self.fragment_bytes = 0
        self.fragment_locs: list[_Loc] = []
        self.count = 0

    def chunk(self, chunk: _Chunk) -> _Loc:
        block = self.by_key.get(chunk.key)
        if block is None:
            block = self.by_key[chunk.key] = self._new_block(
                (chunk.stored, chunk.length, chunk.hashes))
        return _Loc(block, 0)

    def tail(self, data: bytes, key: bytes) -> _Loc:
        loc = self.tails.get(key) if key else None
        if loc is not None:
            return loc
        # Tails are packed byte after byte, with no padding; the fragment's page
        # hashes are its own pages', so a tail is checked by the one or more fragment
        # pages it lies in.
        if self.fragment_bytes + len(data) > self.cs:
            self.close_fragment()
        loc = _Loc(-1, self.fragment_bytes)
        if key:
            self.tails[key] = loc
        self.fragment.append(data)
        self.fragment_bytes += len(data)
        self.fragment_locs.append(loc)
        return loc

    def close_fragment(self) -> None:
        if not self.fragment:
            return
        block = self._new_block(self.pool.submit(_compress_fragment, self.fragment))
        for loc in self.fragment_locs:
            loc.block = block
        self.fragment = []
        self.fragment_bytes = 0
        self.fragment_locs = []

    def _new_block(self, item: _Task | tuple) -> int:
        block = self.count
        self.count += 1
        self.pending.append((block, item))
        self.drain(wait=False)
        return block

    def drain(self, wait: bool) -> None:
        while self.pending:
            block, item = self.pending[0]
            if isinstance(item, _Task):
                if not wait and not item.done():
                    return
                item = item.result()
            self.pending.popleft()
            stored, length, hashes = item
            self.written.append(self.writes.submit(_pwrite_all, self.fd, stored, self.offset))
            self.blocks.append((self.offset, len(stored), length))
            self.page_hashes.append(hashes)
            self.offset += len(stored)
            # A failed write raises here (OSError), at the latest when the writing
            # thread falls this far behind.
            while self.written and (self.written[0].done()
                                    or len(self.written) > WRITES_IN_FLIGHT):
                self.written.popleft().result()

    def finish(self) -> None:
        """Write the last fragment and every block still pending; wait for the writes."""
        self.close_fragment()
        self.drain(wait=True)
        while self.written:
            self.written.popleft().result()


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _compress_fragment(tails: list[bytes]) -> tuple[bytes, int, bytes]:
    # On the fragment thread, not in the thread that orders the results.
    data = b"".join(tails)
    stored, hashes = native.encode_block(data)
    return stored, len(data), hashes


def _pieces(node: _Node, cs: int) -> list[tuple[int, int, bool, bool]]:
    """(start, length, last, hole) of each piece of the file, in order: its data cut
    into pieces, each run of hole chunks one piece that is never read. Only a file with
    fewer blocks allocated than its size needs is looked at for holes."""
    size = node.st[_SIZE]
    piece = max(PIECE, cs)
    sparse = node.st[_BLOCKS] * 512 < size
    if not sparse and 0 < size <= piece:
        return [(0, size, True, False)]  # most files of a tree: one piece, no holes
    runs = _data_runs(node.path, size, cs) if sparse else [(False, 0, -(-size // cs))]
    out = []
    for hole, first, count in runs:
        start, end = first * cs, min((first + count) * cs, size)
        if hole:
            out.append((start, end - start, end >= size, True))
            continue
        for at in range(start, end, piece):
            length = min(piece, end - at)
            out.append((at, length, at + length >= size, False))
    return out


class _Progress:
    """The caller's start() and advance(), from the thread that consumes the results:
    start() once the scan knows the totals, then the work done before that at once."""

    def __init__(self, start: Callable[[int, int], None], advance: Advance, scan: "_Scan"):
        self.start, self._advance, self.scan = start, advance, scan
        self.started = False
        self.pending = [0, 0]

    def begin(self) -> None:
        self.start(self.scan.file_bytes, self.scan.nfiles)
        self.started = True
        if self.pending != [0, 0]:
            self._advance(*self.pending)

    def advance(self, nbytes: int, nfiles: int) -> None:
        if not self.started and self.scan.done.is_set():
            self.begin()
        if self.started:
            self._advance(nbytes, nfiles)
        else:
            self.pending[0] += nbytes
            self.pending[1] += nfiles


class _Scan:
    """The tree, scanned on a thread of its own while the workers already read and
    encode the files found so far (the scan of a 60,000-file tree is 0.3 s of Python the
    second core would otherwise spend idle). The image does not depend on how far ahead
    it is: files are consumed in inode order, and only the tails' hashing for
    deduplication (see `shared`) is decided with what it knows."""

    def __init__(self, source: bytes, warn: Warn, exclude: dict[tuple[int, int], bool], cs: int):
        self.files: SimpleQueue[_Node | None] = SimpleQueue()
        self.done = threading.Event()  # set once nodes, shared_tails and totals are
        self.failed = False  # the build gave up: stop scanning
        self.nodes: list[_Node] = []
        self.shared_tails: dict[int, bool] = {}
        self.file_bytes = self.nfiles = 0
        self.args = source, warn, exclude, cs

    def run(self) -> None:
        source, warn, exclude, cs = self.args
        try:
            nodes = scan(source, warn, exclude, self.files.put, lambda: self.failed)
            files = [n for n in nodes if n.kind == fmt.KIND_FILE]
            # Tails can be equal only if their lengths are: the many of a unique length
            # (most bytes of a real tree's tails) need no hash to look for duplicates.
            lengths = Counter(node.st[_SIZE] % cs for node in files)
            self.shared_tails = {n: count > 1 for n, count in lengths.items()}
            self.file_bytes = sum(n.st[_SIZE] for n in files)
            self.nfiles = len(files)
            self.nodes = nodes
            self.done.set()
        finally:
            self.files.put(None)

    def shared(self, size: int, cs: int) -> bool:
        """Whether the tail of a file of `size` bytes must be hashed to find equal ones:
        until the scan is done, any tail may have a twin still to be found, so all are.
        Two equal tails are thus always both hashed, whenever each was encoded."""
        return self.shared_tails[size % cs] if self.done.is_set() else True

    def found(self, running: _Task):
        """The regular files in inode order, as the scan finds them; at the end, the
        scan's error if it failed."""
        while (node := self.files.get()) is not None:
            yield node
        running.result()


def _batches(files: Iterable[_Node], cs: int, shared: Callable[[int, int], bool],
             progress: _Progress):
    """(node, length, last) of each piece, and the batch of pieces for one worker task."""
    batch, nodes, nbytes = [], [], 0
    for node in files:
        size = node.st[_SIZE]
        if not size:
            progress.advance(0, 1)
            continue
        for start, length, last, hole in _pieces(node, cs):
            batch.append((node.path, start, length, cs, last, hole,
                          last and shared(size, cs)))
            nodes.append((node, length, last))
            nbytes += 0 if hole else length
            if nbytes >= BATCH_BYTES or len(batch) >= BATCH_FILES:
                yield nodes, batch, nbytes
                batch, nodes, nbytes = [], [], 0
    if batch:
        yield nodes, batch, nbytes


def _write_data(fd: int, files: Iterable[_Node], cs: int, jobs: int,
                shared: Callable[[int, int], bool], progress: _Progress,
                checkpoint: Callable[[], None]) -> _Writer:
    # Fragments are compressed in threads of their own (one per job: in a tree of
    # small files most bytes are tails) so that the workers' batches, queued first, do
    # not hold them up; blocks are written by another thread.
    with (_Threads(jobs if jobs > 1 else 0) as pool, _Threads(jobs) as fragments,
          _Threads(1) as writes):
        writer = _Writer(fd, fragments, writes, cs)
        window: deque[tuple[list, int, _Task]] = deque()
        inflight = 0

        def consume() -> None:
            nonlocal inflight
            checkpoint()
            nodes, nbytes, fut = window.popleft()
            inflight -= nbytes
            for (node, length, last), piece in zip(nodes, fut.result()):
                if type(piece) is tuple:  # a small file's (tail, tail_key); _Piece is a subclass
                    node.chunks.append(writer.tail(*piece))
                    progress.advance(length, 1)
                    continue
                for chunk in piece.chunks:
                    node.chunks.append(writer.chunk(chunk))
                if piece.tail:
                    node.chunks.append(writer.tail(piece.tail, piece.tail_key))
                if piece.holes:
                    node.chunks.append(_Holes(piece.holes))
                progress.advance(length, 1 if last else 0)

        try:
            for nodes, batch, nbytes in _batches(files, cs, shared, progress):
                while window and (inflight >= WINDOW_BYTES or len(window) >= 8 * jobs):
                    consume()
                window.append((nodes, nbytes, pool.submit(_read_batch, batch)))
                inflight += nbytes
            while window:
                consume()
            writer.finish()
        except BaseException:
            for *_, fut in window:
                fut.cancel()
            raise
        return writer


def _tables(nodes: list[_Node], writer: _Writer) -> dict[str, bytes]:
    # One pass over every node, serial at the end of the build: kept to plain loops
    # over bound methods (0.2 -> 0.1 s for the real tree's 69,000 nodes).
    inodes, dirents, strings = [], [], bytearray()
    chunkmap: list[bytes] = []
    nchunks = 0
    inode, dirent, chunk = fmt.INODE.pack, fmt.DIRENT.pack, fmt.CHUNKMAP.pack
    hole, file_, directory = fmt.HOLE_ENTRY, fmt.KIND_FILE, fmt.KIND_DIR
    add_inode, add_dirent, add_chunk = inodes.append, dirents.append, chunkmap.append
    for node in nodes:
        st, kind = node.st, node.kind
        if kind == file_:
            first = nchunks
            for loc in node.chunks:
                if type(loc) is _Loc:
                    add_chunk(chunk(loc.block, loc.offset))
                    nchunks += 1
                else:
                    add_chunk(hole * loc.count)
                    nchunks += loc.count
            count, size = nchunks - first, st[_SIZE]
        elif kind == directory:
            first, count, size = len(dirents), len(node.entries), 0
            for name, ino in node.entries:  # in name order: the scan's, list_dir's
                add_dirent(dirent(len(strings), len(name), ino))
                strings += name
        else:
            first, count, size = len(strings), len(node.target), len(node.target)
            strings += node.target
        add_inode(inode(kind, st[_MODE], st[_UID], st[_GID], node.nlink, st[_MTIME], size, first,
                        count))
    return {
        "inodes": b"".join(inodes),
        "dirents": b"".join(dirents),
        "chunkmap": b"".join(chunkmap),
        "blocks": b"".join(fmt.BLOCK.pack(*block) for block in writer.blocks),
        "pagehashes": b"".join(writer.page_hashes),
        "strings": bytes(strings),
    }


def _temp_beside(dest: bytes) -> tuple[int, bytes]:
    folder = os.path.dirname(dest) or b"."
    if not os.path.isdir(folder):
        raise BuildError(f"{show(dest)}: folder {show(folder)} does not exist")
    # What tempfile.mkstemp does (a new name, O_EXCL, mode 0600), without its import.
    prefix = os.path.join(folder, b"." + os.path.basename(dest) + b".")
    while True:
        tmp = prefix + os.urandom(6).hex().encode() + b".tmp"
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), tmp
        except FileExistsError:
            continue
        except OSError as err:
            raise BuildError(f"{show(dest)}: cannot write: {err.strerror}") from None


def build_image(source: str | bytes, dest: str | bytes, *, chunk_size: int = fmt.DEFAULT_CHUNK_SIZE,
                jobs: int | None = None, warn: Warn = lambda msg: None,
                start: Callable[[int, int], None] = lambda nbytes, nfiles: None,
                advance: Advance = lambda nbytes, nfiles: None) -> BuildResult:
    """Build an image of `source` at `dest`, atomically: on failure nothing is at dest.

    `start(total_bytes, total_files)` is called once the tree is scanned, then
    `advance(bytes, files)` as data is processed (for a progress bar).
    """
    if chunk_size & (chunk_size - 1) or not (
            1 << fmt.MIN_CHUNK_SHIFT <= chunk_size <= 1 << fmt.MAX_CHUNK_SHIFT):
        raise BuildError(f"chunk size must be a power of two from 4 KiB to 4 MiB, not {chunk_size}")
    source, dest = os.fsencode(source), os.fsencode(dest)
    jobs = jobs or os.cpu_count() or 1
    # The build makes a few objects per file and no cycles; the collector's passes over
    # them (they only grow) cost a third of the scan of a 60,000-file tree.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _build(source, dest, chunk_size, jobs, warn, start, advance)
    finally:
        if collecting:
            gc.enable()


def _build(source: bytes, dest: bytes, chunk_size: int, jobs: int, warn: Warn,
           start: Callable[[int, int], None], advance: Advance) -> BuildResult:
    try:
        old = os.stat(dest)
        exclude = {(old.st_dev, old.st_ino): True}
    except OSError:
        exclude = {}
    _root(source)  # a source that is no directory fails before anything is written
    # Ctrl-C or SIGTERM (made KeyboardInterrupt by the CLI) must not land between the
    # temporary file's creation and the `try` that removes it, nor inside the thread
    # pools' locks, where a KeyboardInterrupt can leave a lock taken that a worker then
    # waits on forever: hold them off while the threads run (the threads, started from
    # this thread, inherit the mask) and let them in only at the checkpoints.
    stop = {signal.SIGINT, signal.SIGTERM}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, stop)

    def checkpoint() -> None:
        if signal.sigpending() & stop:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # its handler raises here
            signal.pthread_sigmask(signal.SIG_BLOCK, stop)

    try:
        fd, tmp = _temp_beside(dest)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    try:
        try:
            try:
                ours = os.fstat(fd)
                exclude[ours.st_dev, ours.st_ino] = False  # it may be in the tree
                scan = _Scan(source, warn, exclude, chunk_size)
                progress = _Progress(start, advance, scan)
                with _Threads(1) as scanning:
                    running = scanning.submit(scan.run)
                    try:
                        writer = _write_data(fd, scan.found(running), chunk_size, jobs,
                                             scan.shared, progress, checkpoint)
                    except BaseException:
                        scan.failed = True
                        raise
                if not progress.started:
                    progress.begin()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            nodes, file_bytes = scan.nodes, scan.file_bytes
            data_end = writer.offset
            stored, entries = fmt.pack_tables(_tables(nodes, writer), data_end)
            _pwrite_all(fd, stored, data_end)
            offset = data_end + len(stored)
            header = fmt.Header(fmt.VERSION, chunk_size.bit_length() - 1, 0, offset, len(nodes),
                                len(writer.blocks), fmt.HEADER_SIZE, data_end, file_bytes, entries)
            _pwrite_all(fd, fmt.pack_header(header), 0)  # last: it closes the image
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except OSError as err:
        _unlink(tmp)
        raise BuildError(f"{show(dest)}: cannot write: {err.strerror}") from None
    except BaseException:
        _unlink(tmp)
        raise
    return BuildResult(scan.nfiles, len(nodes), file_bytes, offset, len(writer.blocks))


def _unlink(path: bytes) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
