"""THE errno table: every error a handler can meet becomes an errno here, and only here.

Only pyfuse3.FUSEError may leave a handler (anything else kills the mount with
ENOTCONN), so every handler goes through `fuse_errors`, which maps domain errors by
this table and logs anything unexpected as a bug before answering EIO.
"""

from __future__ import annotations

import errno
import functools
import logging

import pyfuse3

from pagerfs import zircon as zx
from pagerfs.pager.faults import FaultRuleError
from pagerfs.store import FormatError, IntegrityError, StoreIOError

log = logging.getLogger("pagerfs.fuse")


class ReadOnly(Exception):
    """Any attempt to change the image."""


class NotSupported(Exception):
    """A control attribute asked of an object it does not apply to."""


class NoAttribute(Exception):
    """An extended attribute the object does not have."""


# Through the Linux page cache every failed page reads as EIO, whatever the pager's
# status was (fdio would map BAD_STATE to EPIPE; Linux has no such channel for pages).
ZX_ERRNO = {
    zx.ZX_ERR_IO: errno.EIO,
    zx.ZX_ERR_IO_DATA_INTEGRITY: errno.EIO,
    zx.ZX_ERR_BAD_STATE: errno.EIO,
    zx.ZX_ERR_OUT_OF_RANGE: errno.EINVAL,
    zx.ZX_ERR_NO_MEMORY: errno.ENOMEM,
}

# Checked in order with isinstance, so subclasses come before their bases.
ERRNO_TABLE: list[tuple[type[BaseException], int]] = [
    (IntegrityError, errno.EIO),
    (StoreIOError, errno.EIO),
    (FormatError, errno.EIO),
    (FaultRuleError, errno.EINVAL),
    (ReadOnly, errno.EROFS),
    (NotSupported, errno.ENOTSUP),
    (NoAttribute, errno.ENODATA),
    (FileNotFoundError, errno.ENOENT),
    (NotADirectoryError, errno.ENOTDIR),
    (IsADirectoryError, errno.EISDIR),
    (PermissionError, errno.EACCES),
]


def errno_for(err: BaseException) -> int | None:
    """The errno for a known error, or None for a bug."""
    if isinstance(err, pyfuse3.FUSEError):
        return err.errno
    if isinstance(err, zx.ZxError):
        return ZX_ERRNO.get(err.status, errno.EIO)
    for kind, number in ERRNO_TABLE:
        if isinstance(err, kind):
            return number
    if isinstance(err, OSError) and err.errno:
        return err.errno
    return None


def fuse_errors(handler):
    """Wrap an async handler so that only FUSEError ever leaves it."""

    @functools.wraps(handler)
    async def wrapper(*args, **kwargs):
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as err:
            number = errno_for(err)
            if number is None:
                log.exception("bug in %s handler; answering EIO", handler.__name__)
                number = errno.EIO
            raise pyfuse3.FUSEError(number) from None

    return wrapper
