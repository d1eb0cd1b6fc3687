"""The filesystem without the protocol: plain methods over the image and the pager.

pagerfs.fuse.operations turns these into pyfuse3 handlers; tests call them directly.
Errors are raised as domain exceptions and mapped to errno in pagerfs.fuse.errors.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import stat as statmod
import threading
from collections.abc import Callable

from pagerfs import zircon as zx
from pagerfs.fuse.errors import ReadOnly
from pagerfs.pager.user_pager import UserPager

PAGE = zx.PAGE_SIZE
# Entries fetched per store call while listing: about what one 4 KiB readdir reply holds.
LISTDIR_BATCH = 32

# Some stores may keep only permission bits in mode; kind then gives the file type.
_KIND_TYPE = {"file": statmod.S_IFREG, "reg": statmod.S_IFREG, "regular": statmod.S_IFREG,
              "dir": statmod.S_IFDIR, "directory": statmod.S_IFDIR,
              "symlink": statmod.S_IFLNK, "link": statmod.S_IFLNK}


def st_mode(inode) -> int:
    mode = inode.mode
    if statmod.S_IFMT(mode) == 0:
        mode |= _KIND_TYPE.get(str(inode.kind).lower().rsplit(".", 1)[-1], statmod.S_IFREG)
    return mode


@dataclasses.dataclass(frozen=True)
class OpenFile:
    ino: int
    vmo: int
    size: int


class FileSystem:
    """One mounted image: lookups from the store, file data only through VMOs."""

    def __init__(self, image, pager: UserPager, image_bytes: int = 0):
        self.image = image
        self.pager = pager
        self.image_bytes = image_bytes
        self._handles: dict[int, OpenFile] = {}
        self._fh = itertools.count(1)
        self._lock = threading.Lock()
        self._open_dirs = 0

    # -- names and attributes ----------------------------------------------------------

    def stat(self, ino: int):
        return self.image.stat(ino)

    def lookup(self, parent: int, name: bytes):
        if name == b".":
            return self.image.stat(parent)
        ino = self.image.lookup(parent, name)
        if ino is None:
            raise FileNotFoundError(name)
        return self.image.stat(ino)

    def opendir(self, ino: int) -> int:
        if not statmod.S_ISDIR(st_mode(self.image.stat(ino))):
            raise NotADirectoryError(ino)
        with self._lock:
            self._open_dirs += 1
        return ino

    def releasedir(self, fh: int) -> None:
        with self._lock:
            self._open_dirs -= 1

    def listdir(self, ino: int, start: int = 0):
        """(name, Inode) of the entries from index `start` on, fetched from the store a
        few at a time as consumed: a readdir call fills one reply buffer (a few dozen
        entries) and stops, so listing a big directory in many calls costs O(n) in all,
        not O(n) per call."""
        if not statmod.S_ISDIR(st_mode(self.image.stat(ino))):
            raise NotADirectoryError(ino)
        stat = self.image.stat
        while True:
            batch = self.image.listdir(ino, start, start + LISTDIR_BATCH)
            for name, child in batch:
                yield name, stat(child)
            if len(batch) < LISTDIR_BATCH:
                return
            start += LISTDIR_BATCH

    def readlink(self, ino: int) -> bytes:
        return self.image.readlink(ino)

    def is_regular(self, ino: int) -> bool:
        return statmod.S_ISREG(st_mode(self.image.stat(ino)))

    # -- data -------------------------------------------------------------------------

    def open(self, ino: int, flags: int) -> int:
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise ReadOnly()
        inode = self.image.stat(ino)
        if not statmod.S_ISREG(st_mode(inode)):
            raise IsADirectoryError(ino)
        size = inode.size
        vmo = self.pager.open(ino, size)
        with self._lock:
            fh = next(self._fh)
            self._handles[fh] = OpenFile(ino, vmo, size)
        return fh

    def start_read(self, fh: int, offset: int, size: int,
                   done: Callable[[int, bytes | None], None]) -> bytes | None:
        """Never blocks: the bytes if the pager has them all, else None, and later
        done(status, bytes or None) from a pager thread (see zircon.vmo_read_async).

        Gives the full length asked for, clamped only at EOF: the kernel would take a
        short reply for end-of-file.
        """
        f = self._handles[fh]
        length = min(size, f.size - offset)
        if length <= 0:
            return b""
        trace = self.pager.trace
        if trace.enabled:
            # The kernel's own request: unlike the pager's packets, which miss pages
            # supplied with their chunk, READs show every page-cache miss.
            trace.event("read", ino=f.ino, offset=offset, length=length,
                        path=os.fsdecode(self.image.path_of(f.ino)))
        # A random miss is served here, without two thread hand-offs; done may have
        # been called by the time this returns (see UserPager.read).
        return self.pager.read(f.ino, f.vmo, offset, length, done)

    def release(self, fh: int) -> None:
        with self._lock:
            f = self._handles.pop(fh)
        self.pager.close(f.ino)

    def open_handles(self) -> int:
        """Files and directories the kernel holds open here. Each keeps the mount busy
        until its RELEASE is answered, which the kernel sends after close() returned:
        `pagerfs umount` waits for this to reach 0."""
        with self._lock:
            return len(self._handles) + self._open_dirs

    def ino_of(self, fh: int) -> int:
        return self._handles[fh].ino

    def statfs(self) -> dict:
        blocks = (self.image_bytes + PAGE - 1) // PAGE
        # inode_count is the store's extra, beyond the documented reader interface.
        files = getattr(self.image, "inode_count", 0)
        return {"f_bsize": PAGE, "f_frsize": PAGE, "f_blocks": blocks, "f_bfree": 0,
                "f_bavail": 0, "f_files": files if isinstance(files, int) else 0,
                "f_ffree": 0, "f_favail": 0, "f_namemax": 255}
