"""The zx_* syscalls: arguments are checked in the contract's order, then the objects act.

Every argument is checked before it is used, so a bad value is a ZxError with the
status the contract gives, never a Python exception from deeper down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from operator import index

from . import handles, scanner
from .constants import (
    INT32_MAX,
    INT32_MIN,
    INT64_MIN,
    PAGE_SHIFT,
    PAGE_SIZE,
    U32_LIMIT,
    U64_LIMIT,
    ZX_DEFAULT_PAGER_RIGHTS,
    ZX_DEFAULT_PORT_RIGHTS,
    ZX_DEFAULT_VMAR_RIGHTS,
    ZX_DEFAULT_VMO_RIGHTS,
    ZX_ERR_BAD_STATE,
    ZX_ERR_INVALID_ARGS,
    ZX_ERR_IO,
    ZX_ERR_IO_DATA_INTEGRITY,
    ZX_ERR_NO_MEMORY,
    ZX_ERR_NOT_SUPPORTED,
    ZX_ERR_OUT_OF_RANGE,
    ZX_INFO_HANDLE_BASIC,
    ZX_INFO_VMO,
    ZX_INFO_VMO_PAGER_BACKED,
    ZX_INFO_VMO_RESIZABLE,
    ZX_INFO_VMO_TYPE_PAGED,
    ZX_INFO_VMO_V1,
    ZX_INFO_VMO_VIA_HANDLE,
    ZX_PAGER_OP_FAIL,
    ZX_RIGHT_ATTACH_VMO,
    ZX_RIGHT_MANAGE_VMO,
    ZX_RIGHT_MAP,
    ZX_RIGHT_READ,
    ZX_RIGHT_WRITE,
    ZX_TIME_INFINITE,
    ZX_VM_PERM_EXECUTE,
    ZX_VM_PERM_READ,
    ZX_VM_PERM_WRITE,
    ZX_VM_SPECIFIC,
    ZX_VMO_OP_COMMIT,
    ZX_VMO_OP_DECOMMIT,
    ZX_VMO_RESIZABLE,
)
from .errors import ZxError
from .handles import lookup
from .info import HandleBasicInfo, VmoInfo
from .pager import Pager
from .port import Port, PortPacket
from .ranges import as_view
from .vmar import Mapping, Vmar
from .vmo import MAX_BUFFER, PagerVmo, Vmo

_MASK = PAGE_SIZE - 1
_FAIL_CODES = frozenset((ZX_ERR_IO, ZX_ERR_IO_DATA_INTEGRITY, ZX_ERR_BAD_STATE))
_INT64_LIMIT = 1 << 63




# --- argument conversion ----------------------------------------------------------
def _int(value: object) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, (float, str, bytes)):
        return None
    try:
        return index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _u64(value: object) -> int:
    """A C uint64_t argument: anything else is INVALID_ARGS."""
    if type(value) is int and 0 <= value < U64_LIMIT:
        return value
    v = _int(value)
    if v is None or not 0 <= v < U64_LIMIT:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    return v


def _u32(value: object) -> int:
    v = _int(value)
    if v is None or not 0 <= v < U32_LIMIT:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    return v


def _aligned(*values: object) -> tuple[int, ...]:
    out = []
    for value in values:
        v = _u64(value)
        if v & _MASK:
            raise ZxError(ZX_ERR_INVALID_ARGS)
        out.append(v)
    return tuple(out)


def _rounded_size(size: object) -> int:
    s = _u64(size)
    rounded = (s + _MASK) & ~_MASK
    if rounded >= U64_LIMIT:
        raise ZxError(ZX_ERR_OUT_OF_RANGE)
    return rounded


def _in_range(offset: int, length: int, size: int) -> None:
    if offset + length > size:
        raise ZxError(ZX_ERR_OUT_OF_RANGE)


def _create_options(options: object) -> int:
    v = _int(options)
    if v is None or v not in (0, ZX_VMO_RESIZABLE):
        raise ZxError(ZX_ERR_INVALID_ARGS)
    return v


# --- objects ------------------------------------------------------------------------
def zx_pager_create(options: int) -> int:
    if _int(options) != 0:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    return handles.make_handle(Pager(), ZX_DEFAULT_PAGER_RIGHTS)


def zx_port_create(options: int) -> int:
    if _int(options) != 0:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    return handles.make_handle(Port(), ZX_DEFAULT_PORT_RIGHTS)


def zx_vmo_create(size: int, options: int) -> int:
    opts = _create_options(options)
    rounded = _rounded_size(size)
    return handles.make_handle(Vmo(rounded, opts), ZX_DEFAULT_VMO_RIGHTS)


def zx_pager_create_vmo(pager: int, options: int, port: int, key: int, size: int) -> int:
    pager_obj = lookup(pager, Pager, ZX_RIGHT_ATTACH_VMO)
    port_obj = lookup(port, Port, ZX_RIGHT_WRITE)
    opts = _create_options(options)
    key_value = _u64(key)
    rounded = _rounded_size(size)
    vmo = PagerVmo(rounded, opts, pager_obj, port_obj, key_value)
    value = handles.make_handle(vmo, ZX_DEFAULT_VMO_RIGHTS)
    if not pager_obj.attach(vmo):
        # The pager was closed while we were creating: its source is already gone.
        vmo.detach(send_complete=False)
    return value


# --- the pager's syscalls -----------------------------------------------------------
def _pager_vmo(pager: int, pager_vmo: int, pager_rights: int) -> PagerVmo:
    pager_obj = lookup(pager, Pager, pager_rights)
    vmo = lookup(pager_vmo, Vmo, ZX_RIGHT_WRITE)
    if not isinstance(vmo, PagerVmo) or vmo.pager is not pager_obj:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    return vmo


def zx_pager_supply_pages(
    pager: int, pager_vmo: int, offset: int, length: int, aux_vmo: int, aux_offset: int
) -> None:
    off, size, aux_off = _aligned(offset, length, aux_offset)
    vmo = _pager_vmo(pager, pager_vmo, ZX_RIGHT_MANAGE_VMO)
    aux = lookup(aux_vmo, Vmo, ZX_RIGHT_READ | ZX_RIGHT_WRITE)
    if isinstance(aux, PagerVmo):
        raise ZxError(ZX_ERR_NOT_SUPPORTED)
    _in_range(aux_off, size, aux.size)
    _in_range(off, size, vmo.size)
    if vmo.detached:
        raise ZxError(ZX_ERR_BAD_STATE)
    if size == 0:
        return
    first = off >> PAGE_SHIFT
    aux_first = aux_off >> PAGE_SHIFT
    npages = size >> PAGE_SHIFT
    taken = aux.take_pages(aux_first, aux_first + npages)
    vmo.supply(first, first + npages, taken, first - aux_first)


def zx_pager_op_range(
    pager: int, op: int, pager_vmo: int, offset: int, length: int, data: int
) -> None:
    off, size = _aligned(offset, length)
    vmo = _pager_vmo(pager, pager_vmo, ZX_RIGHT_MANAGE_VMO)
    if _int(op) != ZX_PAGER_OP_FAIL:
        raise ZxError(ZX_ERR_NOT_SUPPORTED)
    raw = _int(data)
    if raw is None or not INT64_MIN <= raw < U64_LIMIT:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    signed = raw - U64_LIMIT if raw >= _INT64_LIMIT else raw
    if not INT32_MIN <= signed <= INT32_MAX or signed not in _FAIL_CODES:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    _in_range(off, size, vmo.size)
    vmo.fail(off >> PAGE_SHIFT, (off + size) >> PAGE_SHIFT, signed)


def zx_pager_detach_vmo(pager: int, pager_vmo: int) -> None:
    vmo = _pager_vmo(pager, pager_vmo, ZX_RIGHT_ATTACH_VMO | ZX_RIGHT_MANAGE_VMO)
    vmo.detach(send_complete=True)


# --- ports and time -------------------------------------------------------------------
def zx_port_wait(port: int, deadline: int) -> PortPacket:
    port_obj = lookup(port, Port, ZX_RIGHT_READ)
    when = _int(deadline)
    if when is None or not INT64_MIN <= when < _INT64_LIMIT:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    return port_obj.wait(when)


def zx_clock_get_monotonic() -> int:
    return time.monotonic_ns()


def zx_deadline_after(nanoseconds: int) -> int:
    ns = _int(nanoseconds)
    if ns is None or not INT64_MIN <= ns < _INT64_LIMIT:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    return min(time.monotonic_ns() + ns, ZX_TIME_INFINITE)


# --- VMOs -------------------------------------------------------------------------------
def _read_range(vmo: int, offset: int, length: int) -> tuple[Vmo, int, int]:
    """zx_vmo_read's checks, in its order: the VMO, the range, then the buffer."""
    obj = lookup(vmo, Vmo, ZX_RIGHT_READ)
    off = _u64(offset)
    n = _u64(length)
    _in_range(off, n, obj.size)
    if n > MAX_BUFFER:
        raise ZxError(ZX_ERR_NO_MEMORY)
    return obj, off, off + n


def zx_vmo_read(vmo: int, offset: int, length: int) -> bytes:
    obj, off, end = _read_range(vmo, offset, length)
    if off == end:
        return b""
    try:
        return obj.read(off, end)
    except MemoryError:
        # No buffer that large: what Zircon says when it cannot allocate.
        raise ZxError(ZX_ERR_NO_MEMORY) from None


def vmo_read_async(vmo: int, offset: int, length: int,
                   done: Callable[[int, bytes | None], None]) -> bytes | None:
    """Extension, not a Zircon syscall: zx_vmo_read for a caller that must not block.

    The same checks, errors and page requests as zx_vmo_read. If every page is present
    the bytes are returned at once. Otherwise returns None, and once the read ends
    `done(status, data)` is called exactly once — (ZX_OK, bytes) or (status, None) —
    from the thread whose zx_pager_supply_pages, ZX_PAGER_OP_FAIL or detach ended it,
    after that thread let go of every kernel lock. `done` must not block or raise: it
    runs inside that syscall. It models the kernel resuming a faulting thread without
    a host thread parked for each waiting reader.
    """
    obj, off, end = _read_range(vmo, offset, length)
    if off == end:
        return b""
    try:
        return obj.read_async(off, end, done)
    except MemoryError:
        raise ZxError(ZX_ERR_NO_MEMORY) from None


def port_hold_wakeups(port: int):
    """Extension, not a Zircon syscall: a context manager in which the packets that the
    calling thread's own syscalls queue on the port wake no thread waiting in
    zx_port_wait until it leaves; then each one still queued wakes a waiter, as it would
    have at once. Packets other threads queue meanwhile wake waiters as usual.

    For a reader that serves its own page request: it reads (raising the request),
    takes the packet back with zx_port_wait(port, 0), and leaves; a pager thread woken
    for a packet already gone would only contend for the CPU. Needs ZX_RIGHT_READ (the
    right to wait on the port). Does not nest.
    """
    return lookup(port, Port, ZX_RIGHT_READ).hold_wakeups()


def zx_vmo_write(vmo: int, data: bytes, offset: int) -> None:
    obj = lookup(vmo, Vmo, ZX_RIGHT_WRITE)
    off = _u64(offset)
    try:
        view = as_view(data)
    except (TypeError, ValueError):
        raise ZxError(ZX_ERR_INVALID_ARGS) from None
    n = view.nbytes
    _in_range(off, n, obj.size)
    if n:
        obj.write(off, view)


def zx_vmo_op_range(vmo: int, op: int, offset: int, length: int) -> None:
    obj = lookup(vmo, Vmo)
    code = _int(op)
    if code == ZX_VMO_OP_COMMIT:
        lookup(vmo, Vmo, ZX_RIGHT_WRITE)
        off, n = _u64(offset), _u64(length)
        _in_range(off, n, obj.size)
        if n:
            obj.commit(off, off + n)
    elif code == ZX_VMO_OP_DECOMMIT:
        lookup(vmo, Vmo, ZX_RIGHT_WRITE)
        off, n = _u64(offset), _u64(length)
        if obj.pager_backed:
            raise ZxError(ZX_ERR_NOT_SUPPORTED)
        _in_range(off, n, obj.size)
        if n:
            obj.decommit(off, off + n)
    else:
        raise ZxError(ZX_ERR_INVALID_ARGS)


def zx_vmo_get_size(vmo: int) -> int:
    return lookup(vmo, Vmo).size


# --- handles --------------------------------------------------------------------------
def zx_handle_duplicate(handle: int, rights: int) -> int:
    return handles.duplicate(handle, rights)


def zx_handle_replace(handle: int, rights: int) -> int:
    return handles.replace(handle, rights)


def zx_handle_close(handle: int) -> None:
    handles.close(handle)


def zx_object_get_info(handle: int, topic: int) -> VmoInfo | HandleBasicInfo:
    obj, rights = handles.lookup_any(handle)
    kind = _int(topic)
    if kind in (ZX_INFO_VMO, ZX_INFO_VMO_V1):
        # The seed's Zircon asks no right for this topic (newer kernels want INSPECT).
        vmo = lookup(handle, Vmo)
        flags = ZX_INFO_VMO_TYPE_PAGED | ZX_INFO_VMO_VIA_HANDLE
        if vmo.resizable:
            flags |= ZX_INFO_VMO_RESIZABLE
        if vmo.pager_backed:
            flags |= ZX_INFO_VMO_PAGER_BACKED
        return VmoInfo(
            koid=vmo.koid,
            name="",
            size_bytes=vmo.size,
            parent_koid=0,
            num_children=0,
            num_mappings=vmo.mappings,
            share_count=1,
            flags=flags,
            committed_bytes=vmo.committed_bytes(),
            handle_rights=rights,
            cache_policy=0,
        )
    if kind == ZX_INFO_HANDLE_BASIC:
        return HandleBasicInfo(koid=obj.koid, rights=rights, type=obj.obj_type, related_koid=0)
    raise ZxError(ZX_ERR_NOT_SUPPORTED)


# --- VMARs ----------------------------------------------------------------------------
_root_vmar_lock = threading.Lock()
_root_vmar = Vmar()
_root_vmar_handle = 0
_MAP_OPTIONS = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE | ZX_VM_PERM_EXECUTE | ZX_VM_SPECIFIC


def zx_vmar_root_self() -> int:
    """The root VMAR's handle (a new one if someone closed the old)."""
    global _root_vmar_handle
    with _root_vmar_lock:
        try:
            handles.lookup(_root_vmar_handle, Vmar)
        except ZxError:
            _root_vmar_handle = handles.make_handle(_root_vmar, ZX_DEFAULT_VMAR_RIGHTS)
        return _root_vmar_handle


def zx_vmar_map(
    vmar: int, options: int, vmar_offset: int, vmo: int, vmo_offset: int, length: int
) -> Mapping:
    vmar_obj = lookup(vmar, Vmar)
    opts = _u32(options)
    if opts & ~_MAP_OPTIONS:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    need = ZX_RIGHT_MAP
    if opts & ZX_VM_PERM_READ:
        need |= ZX_RIGHT_READ
    if opts & ZX_VM_PERM_WRITE:
        need |= ZX_RIGHT_WRITE
    vmo_obj = lookup(vmo, Vmo, need)
    lookup(vmar, Vmar, need & (ZX_RIGHT_READ | ZX_RIGHT_WRITE))
    where = _u64(vmar_offset)
    if where and not opts & ZX_VM_SPECIFIC:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    (voff,) = _aligned(vmo_offset)
    n = _u64(length)
    if n == 0:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    n = (n + _MASK) & ~_MASK
    if voff + n >= U64_LIMIT:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    base = where if opts & ZX_VM_SPECIFIC else vmar_obj.place(n)
    with vmo_obj.lock:
        vmo_obj.mappings += 1
    return Mapping(vmo_obj, voff, n, base, opts)


# --- the page scanner -------------------------------------------------------------------
def scanner_evict(vmo: int, offset: int, length: int) -> int:
    """Evict the present pages of [offset, offset + length); returns pages evicted.

    Pages that readers were woken for but have not collected yet (pinned) are evicted
    once those readers have collected them: this waits for that (see PagerVmo.evict)."""
    off, size = _aligned(offset, length)
    obj = lookup(vmo, Vmo)
    if not isinstance(obj, PagerVmo):
        raise ZxError(ZX_ERR_NOT_SUPPORTED)
    _in_range(off, size, obj.size)
    if size == 0:
        return 0
    return obj.evict(off >> PAGE_SHIFT, (off + size) >> PAGE_SHIFT)


def scanner_set_limit(max_bytes: int | None) -> None:
    """Budget committed pager-backed pages kernel-wide (None: no budget)."""
    if max_bytes is None:
        scanner.set_limit(None)
        return
    scanner.set_limit(_u64(max_bytes))


def scanner_committed_bytes() -> int:
    return scanner.committed_bytes()
