"""The root VMAR and its mappings: a Mapping reads a VMO as a CPU would, page by page."""

from __future__ import annotations

import threading

from .constants import (
    PAGE_SHIFT,
    ZX_ERR_ACCESS_DENIED,
    ZX_ERR_INVALID_ARGS,
    ZX_ERR_NO_MEMORY,
    ZX_ERR_NOT_FOUND,
    ZX_ERR_OUT_OF_RANGE,
    ZX_OBJ_TYPE_VMAR,
    ZX_OK,
    ZX_VM_PERM_READ,
)
from .errors import PageFault, ZxError
from .handles import KObject, as_handle_value
from .vmo import MAX_BUFFER, Vmo, join


class Vmar(KObject):
    obj_type = ZX_OBJ_TYPE_VMAR
    __slots__ = ("_lock", "_next_base")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._next_base = 1 << 32  # addresses are only labels here

    def place(self, length: int) -> int:
        with self._lock:
            base = self._next_base
            self._next_base += length + (1 << PAGE_SHIFT)  # a guard page between
        return base


class Mapping:
    """A VMAR mapping of `length` bytes of `vmo` from `vmo_offset`.

    read(offset, n) touches the pages in order; an absent page of a pager VMO asks the
    pager for that one page (or joins a request that covers it). A fault that cannot be
    resolved raises PageFault(synth_code, offset of the faulting byte in the mapping).
    """

    __slots__ = ("vmo", "vmo_offset", "length", "base", "perms", "is_unmapped", "_lock")

    def __init__(self, vmo: Vmo, vmo_offset: int, length: int, base: int, perms: int) -> None:
        self.vmo = vmo
        self.vmo_offset = vmo_offset
        self.length = length
        self.base = base
        self.perms = perms
        self.is_unmapped = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "unmapped" if self.is_unmapped else f"{self.length:#x} bytes"
        return f"<Mapping at {self.base:#x} of vmo {self.vmo.koid}: {state}>"

    def read(self, offset: int, n: int) -> bytes:
        offset = _count(offset)
        n = _count(n)
        if self.is_unmapped or offset >= self.length:
            if n == 0 and not self.is_unmapped:
                return b""
            raise PageFault(ZX_ERR_NOT_FOUND, offset)
        if n > MAX_BUFFER:
            raise ZxError(ZX_ERR_NO_MEMORY)
        if not self.perms & ZX_VM_PERM_READ:
            raise PageFault(ZX_ERR_ACCESS_DENIED, offset)
        end = min(offset + n, self.length)
        vmo = self.vmo
        pos = self.vmo_offset + offset
        stop = self.vmo_offset + end
        size = vmo.size
        pieces: list = []
        if pos < size:
            pieces, reached, status = vmo.read_mapped(pos, min(stop, size), self)
            if status != ZX_OK:
                raise PageFault(status, reached - self.vmo_offset)
        if stop > size:
            raise PageFault(ZX_ERR_OUT_OF_RANGE, max(pos, size) - self.vmo_offset)
        if offset + n > self.length:
            raise PageFault(ZX_ERR_NOT_FOUND, self.length)
        return join(pieces) if pieces else b""

    def unmap(self) -> None:
        with self._lock:
            if self.is_unmapped:
                return
            self.is_unmapped = True
        self.vmo.unmapped()

    def __enter__(self) -> "Mapping":
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmap()


def _count(value: object) -> int:
    v = as_handle_value(value)
    if v is None or v < 0:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    return v
