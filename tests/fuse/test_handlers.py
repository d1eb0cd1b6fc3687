"""The adapter's handlers called directly (no mount), and the one errno table."""

import errno
import logging
import os
import stat

import pyfuse3
import pytest

from pagerfs import zircon as zx
from pagerfs.fuse.core import FileSystem
from pagerfs.fuse.errors import ReadOnly, errno_for, fuse_errors
from pagerfs.fuse.operations import Operations
from pagerfs.pager.faults import FaultRuleError
from pagerfs.pager.user_pager import UserPager
from pagerfs.store import Image, IntegrityError, StoreIOError


@pytest.fixture
def ops(image):
    img = Image.open(image)
    pager = UserPager(img, threads=2)
    invalidated = []
    ops = Operations(FileSystem(img, pager, os.path.getsize(image)), invalidate=invalidated.append)
    ops.invalidated = invalidated
    yield ops
    pager.stop()
    img.close()


async def code(coro):
    with pytest.raises(pyfuse3.FUSEError) as info:
        await coro
    return info.value.errno


@pytest.mark.parametrize("err,number", [
    (zx.ZxError(zx.ZX_ERR_IO), errno.EIO),
    (zx.ZxError(zx.ZX_ERR_IO_DATA_INTEGRITY), errno.EIO),
    (zx.ZxError(zx.ZX_ERR_BAD_STATE), errno.EIO),
    (IntegrityError(b"f", 0, 1, "x"), errno.EIO),
    (StoreIOError(b"f", 0, 1, "x"), errno.EIO),
    (FaultRuleError("x"), errno.EINVAL),
    (ReadOnly(), errno.EROFS),
    (FileNotFoundError(), errno.ENOENT),
    (NotADirectoryError(), errno.ENOTDIR),
    (OSError(errno.EMFILE, "x"), errno.EMFILE),
    (KeyError(3), None),
    (RuntimeError("bug"), None),
])
def test_errno_table(err, number):
    assert errno_for(err) == number


async def test_a_bug_in_a_handler_is_logged_and_answered_eio(caplog):
    @fuse_errors
    async def handler():
        raise ZeroDivisionError("oops")

    with caplog.at_level(logging.ERROR, logger="pagerfs.fuse"):
        assert await code(handler()) == errno.EIO
    assert "oops" in caplog.text


async def test_lookup_getattr_readlink(ops, tree):
    attrs = await ops.lookup(pyfuse3.ROOT_INODE, b"hello.txt")
    st = os.stat(tree / "hello.txt")
    assert (attrs.st_size, attrs.st_mode, attrs.st_mtime_ns) == (st.st_size, st.st_mode, st.st_mtime_ns)
    assert (await ops.getattr(attrs.st_ino)).st_ino == attrs.st_ino
    link = await ops.lookup(pyfuse3.ROOT_INODE, b"link")
    assert stat.S_ISLNK(link.st_mode)
    assert await ops.readlink(link.st_ino) == b"hello.txt"
    assert await code(ops.lookup(pyfuse3.ROOT_INODE, b"missing")) == errno.ENOENT
    assert await code(ops.opendir(attrs.st_ino)) == errno.ENOTDIR


async def test_open_read_release_through_the_vmo(ops, tree):
    ino = (await ops.lookup(pyfuse3.ROOT_INODE, b"odd-size.bin")).st_ino
    data = (tree / "odd-size.bin").read_bytes()
    fh = (await ops.open(ino, os.O_RDONLY)).fh
    assert await ops.read(fh, 0, len(data) + 9999) == data  # clamped at EOF, never short
    assert await ops.read(fh, len(data), 4096) == b""
    # The pager may still hold the VMO (serving, reading ahead); let it finish first.
    assert ops.fs.pager.wait_idle(30)
    assert ops.fs.pager.committed_pages(ino) == -(-len(data) // 4096)
    await ops.release(fh)
    assert ops.fs.pager.committed_pages(ino) == 0
    assert await code(ops.open(ino, os.O_RDWR)) == errno.EROFS
    assert await code(ops.read(12345, 0, 10)) == errno.EIO  # unknown handle: a bug, not a crash


async def test_fault_xattrs_invalidate_and_fail_reads(ops, tree):
    ino = (await ops.lookup(pyfuse3.ROOT_INODE, b"big.bin")).st_ino
    fh = (await ops.open(ino, os.O_RDONLY)).fh
    try:
        assert await code(ops.setxattr(ino, b"user.pagerfs.fault", b"pages=1 error=bogus")) == errno.EINVAL
        assert ops.invalidated == []
        await ops.setxattr(ino, b"user.pagerfs.fault", b"pages=1 error=IO_DATA_INTEGRITY")
        assert ops.invalidated == [ino]
        assert await ops.getxattr(ino, b"user.pagerfs.faults") == b"pages=1 error=IO_DATA_INTEGRITY\n"
        assert await code(ops.read(fh, 4096, 4096)) == errno.EIO
        assert await ops.read(fh, 8192, 4096) == (tree / "big.bin").read_bytes()[8192:12288]
        await ops.removexattr(ino, b"user.pagerfs.fault")
        assert ops.invalidated == [ino, ino]
        assert await ops.read(fh, 4096, 4096) == (tree / "big.bin").read_bytes()[4096:8192]
        assert await code(ops.removexattr(ino, b"user.pagerfs.fault")) == errno.ENODATA
    finally:
        await ops.release(fh)


async def test_writes_are_erofs(ops):
    root = pyfuse3.ROOT_INODE
    assert await code(ops.mkdir(root, b"d", 0o755)) == errno.EROFS
    assert await code(ops.create(root, b"f", 0o644, os.O_WRONLY)) == errno.EROFS
    assert await code(ops.unlink(root, b"hello.txt")) == errno.EROFS
    assert await code(ops.setxattr(root, b"user.x", b"1")) == errno.EROFS
    assert await code(ops.getxattr(root, b"user.x")) == errno.ENODATA


async def test_readdir_of_a_wide_directory_in_many_calls_fetches_each_entry_about_once(tmp_path):
    """readdir resumes at an index, one reply buffer at a time: listing n entries in
    n / k calls must fetch O(n) entries from the store, not O(n) per call."""
    from pagerfs.store import build_image

    (tmp_path / "src" / "wide").mkdir(parents=True)
    for i in range(500):
        (tmp_path / "src" / "wide" / f"e{i:04d}").write_bytes(b"")
    build_image(tmp_path / "src", tmp_path / "w.img")
    img = Image.open(tmp_path / "w.img")
    fetched = []
    real = img.listdir
    img.listdir = lambda ino, start=0, stop=None: fetched.append(len(r := real(ino, start, stop))) or r
    fs = FileSystem(img, pager=None)
    wide = img.resolve("wide")
    names, start, calls = [], 0, 0
    while True:  # as the kernel does: a call takes 7 entries, the next starts after them
        calls += 1
        got = [name for _, (name, _) in zip(range(7), fs.listdir(wide, start))]
        if not got:
            break
        names += got
        start += len(got)
    assert names == [f"e{i:04d}".encode() for i in range(500)]
    assert sum(fetched) <= 500 + calls * 32
    img.close()
