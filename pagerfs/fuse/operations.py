"""The pyfuse3 operations: one-line handlers over pagerfs.fuse.core.FileSystem.

Every handler is wrapped by fuse_errors (the one errno table). Handlers run as
coroutines on the trio thread and never block it: a read whose pages the pager must
first supply waits as a trio task for the pager thread to hand the bytes back; what
may block — evicting pages, invalidating the kernel's page cache — goes to a worker
thread. See docs/CONCURRENCY.md.
"""

from __future__ import annotations

import errno
import logging
import threading
from typing import Callable

import pyfuse3
import trio

from pagerfs import zircon as zx
from pagerfs.fuse import xattrs
from pagerfs.fuse.core import FileSystem, st_mode
from pagerfs.fuse.errors import ReadOnly, fuse_errors

log = logging.getLogger("pagerfs.fuse")

# The image never changes under a mount: let the kernel keep names and attributes.
CACHE_TIMEOUT = 3600.0


def entry(inode) -> pyfuse3.EntryAttributes:
    attrs = pyfuse3.EntryAttributes()
    attrs.st_ino = inode.ino
    attrs.st_mode = st_mode(inode)
    attrs.st_nlink = inode.nlink
    attrs.st_uid = inode.uid
    attrs.st_gid = inode.gid
    attrs.st_size = inode.size
    attrs.st_blksize = 4096
    attrs.st_blocks = (inode.allocated + 511) // 512  # holes take no space
    attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = inode.mtime_ns
    attrs.entry_timeout = attrs.attr_timeout = CACHE_TIMEOUT
    return attrs


def _invalidate_inode(ino: int) -> None:
    try:
        pyfuse3.invalidate_inode(ino)
    except OSError as err:
        # ENOENT: the kernel holds nothing of this inode, so there is nothing to drop.
        if err.errno != errno.ENOENT:
            log.warning("invalidate_inode(%d): %s", ino, err)


class _Reply:
    """Carries a read's result from the pager thread that completes it to the waiting
    handler: one wake-up of the trio thread, no worker thread in between."""

    __slots__ = ("_token", "_thread", "_event", "_result")

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()
        self._event = trio.Event()
        self._result: tuple[int, bytes | None] = (zx.ZX_ERR_INTERNAL, None)

    def __call__(self, status: int, data: bytes | None) -> None:
        # Runs inside the pager's supply or FAIL: must not block or raise.
        self._result = (status, data)
        if threading.get_ident() == self._thread:
            # The handler's own thread served the request (UserPager.serve_here).
            self._event.set()
            return
        try:
            self._token.run_sync_soon(self._event.set)
        except trio.RunFinishedError:
            pass  # the mount is gone; nobody waits for this read any more

    async def wait(self) -> bytes:
        if not self._event.is_set():  # set already when the handler's thread served it
            await self._event.wait()
        status, data = self._result
        if status != zx.ZX_OK:
            raise zx.ZxError(status)
        return data


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, fs: FileSystem, invalidate: Callable[[int], None] = _invalidate_inode):
        super().__init__()
        self.fs = fs
        self.invalidate = invalidate

    @fuse_errors
    async def lookup(self, parent_inode, name, ctx=None):
        return entry(self.fs.lookup(parent_inode, name))

    @fuse_errors
    async def getattr(self, inode, ctx=None):
        return entry(self.fs.stat(inode))

    @fuse_errors
    async def readlink(self, inode, ctx=None):
        return self.fs.readlink(inode)

    @fuse_errors
    async def opendir(self, inode, ctx=None):
        return self.fs.opendir(inode)

    @fuse_errors
    async def readdir(self, fh, start_id, token):
        for index, (name, inode) in enumerate(self.fs.listdir(fh, start_id), start_id):
            if not pyfuse3.readdir_reply(token, name, entry(inode), index + 1):
                break

    @fuse_errors
    async def releasedir(self, fh):
        self.fs.releasedir(fh)

    @fuse_errors
    async def open(self, inode, flags, ctx=None):
        return pyfuse3.FileInfo(fh=self.fs.open(inode, flags), keep_cache=True)

    @fuse_errors
    async def read(self, fh, off, size):
        reply = _Reply()
        data = self.fs.start_read(fh, off, size, reply)
        return await reply.wait() if data is None else data

    @fuse_errors
    async def release(self, fh):
        self.fs.release(fh)

    @fuse_errors
    async def statfs(self, ctx=None):
        out = pyfuse3.StatvfsData()
        for key, value in self.fs.statfs().items():
            setattr(out, key, value)
        return out

    @fuse_errors
    async def getxattr(self, inode, name, ctx=None):
        return xattrs.get(self.fs, inode, name)

    @fuse_errors
    async def listxattr(self, inode, ctx=None):
        return []

    @fuse_errors
    async def setxattr(self, inode, name, value, ctx=None):
        changed = await trio.to_thread.run_sync(xattrs.set, self.fs, inode, name, value)
        await self._changed(inode, changed)

    @fuse_errors
    async def removexattr(self, inode, name, ctx=None):
        changed = await trio.to_thread.run_sync(xattrs.remove, self.fs, inode, name)
        await self._changed(inode, changed)

    async def _changed(self, inode: int, changed: bool) -> None:
        # invalidate_inode waits for locked pages, i.e. for READs in flight on this inode;
        # those need the trio thread to be answered, so it must not wait on the trio thread.
        if changed:
            await trio.to_thread.run_sync(self.invalidate, inode)

    # The image is read-only: every change is EROFS.
    @fuse_errors
    async def setattr(self, inode, attr, fields, fh, ctx=None):
        raise ReadOnly()

    @fuse_errors
    async def write(self, fh, off, buf):
        raise ReadOnly()

    @fuse_errors
    async def create(self, parent_inode, name, mode, flags, ctx=None):
        raise ReadOnly()

    @fuse_errors
    async def mknod(self, parent_inode, name, mode, rdev, ctx=None):
        raise ReadOnly()

    @fuse_errors
    async def mkdir(self, parent_inode, name, mode, ctx=None):
        raise ReadOnly()

    @fuse_errors
    async def symlink(self, parent_inode, name, target, ctx=None):
        raise ReadOnly()

    @fuse_errors
    async def link(self, inode, new_parent_inode, new_name, ctx=None):
        raise ReadOnly()

    @fuse_errors
    async def unlink(self, parent_inode, name, ctx=None):
        raise ReadOnly()

    @fuse_errors
    async def rmdir(self, parent_inode, name, ctx=None):
        raise ReadOnly()

    @fuse_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx=None):
        raise ReadOnly()
