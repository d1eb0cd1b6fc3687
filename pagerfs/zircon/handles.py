"""Kernel objects and the process's handle table.

One table for the whole (simulated) process. Handle values are never reused, so a
closed handle stays BAD_HANDLE forever. The table lock is a leaf: nothing else is taken
while it is held, and an object's on_zero_handles() runs after it is released.
"""

from __future__ import annotations

import itertools
import threading
from operator import index
from typing import TypeVar

from .constants import (
    ZX_ERR_ACCESS_DENIED,
    ZX_ERR_BAD_HANDLE,
    ZX_ERR_INVALID_ARGS,
    ZX_ERR_WRONG_TYPE,
    ZX_HANDLE_INVALID_VALUE,
    ZX_RIGHT_DUPLICATE,
    ZX_RIGHT_SAME_RIGHTS,
    U32_LIMIT,
)
from .errors import ZxError

_koids = itertools.count(1024)


def new_koid() -> int:
    return next(_koids)


class KObject:
    """A kernel object: a koid and a count of the handles that refer to it."""

    obj_type = 0
    __slots__ = ("koid", "handle_count", "__weakref__")

    def __init__(self) -> None:
        self.koid = new_koid()
        self.handle_count = 0

    def on_zero_handles(self) -> None:
        """Called once, outside the table lock, when the last handle is closed."""


T = TypeVar("T", bound=KObject)

_table: dict[int, tuple[KObject, int]] = {}
_table_lock = threading.Lock()
# Zircon's handle values have their two low bits set; keeping that shape catches code
# that treats a handle as a small index.
_values = itertools.count(0x1000)


def _new_value() -> int:
    return (next(_values) << 2) | 3


def as_handle_value(handle: object) -> int | None:
    if type(handle) is int:
        return handle
    if isinstance(handle, float) or isinstance(handle, (bytes, str)):
        return None
    try:
        return index(handle)  # type: ignore[arg-type]
    except TypeError:
        return None


def make_handle(obj: KObject, rights: int) -> int:
    value = _new_value()
    with _table_lock:
        _table[value] = (obj, rights)
        obj.handle_count += 1
    return value


def lookup(handle: object, cls: type[T], rights: int = 0) -> T:
    """The object behind a live handle of type cls that has the given rights."""
    entry = _table.get(handle) if type(handle) is int else _lookup_slow(handle)
    if entry is None:
        raise ZxError(ZX_ERR_BAD_HANDLE)
    obj, have = entry
    if not isinstance(obj, cls):
        raise ZxError(ZX_ERR_WRONG_TYPE)
    if have & rights != rights:
        raise ZxError(ZX_ERR_ACCESS_DENIED)
    return obj


def lookup_any(handle: object) -> tuple[KObject, int]:
    entry = _table.get(handle) if type(handle) is int else _lookup_slow(handle)
    if entry is None:
        raise ZxError(ZX_ERR_BAD_HANDLE)
    return entry


def _lookup_slow(handle: object) -> tuple[KObject, int] | None:
    value = as_handle_value(handle)
    return None if value is None else _table.get(value)


def _check_rights_arg(rights: object) -> int:
    value = as_handle_value(rights)
    if value is None or not 0 <= value < U32_LIMIT:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    return value


def duplicate(handle: object, rights: object) -> int:
    obj, have = lookup_any(handle)
    if not have & ZX_RIGHT_DUPLICATE:
        raise ZxError(ZX_ERR_ACCESS_DENIED)
    want = _check_rights_arg(rights)
    if want == ZX_RIGHT_SAME_RIGHTS:
        want = have
    elif want & have != want:
        raise ZxError(ZX_ERR_INVALID_ARGS)
    value = _new_value()
    with _table_lock:
        if _table.get(as_handle_value(handle)) is None:  # closed meanwhile
            raise ZxError(ZX_ERR_BAD_HANDLE)
        _table[value] = (obj, want)
        obj.handle_count += 1
    return value


def replace(handle: object, rights: object) -> int:
    """Zircon's replace: the old handle is gone afterwards, even when it fails."""
    value = as_handle_value(handle)
    if value is None:
        raise ZxError(ZX_ERR_BAD_HANDLE)
    want_arg = as_handle_value(rights)
    new_value = _new_value()
    with _table_lock:
        entry = _table.pop(value, None)
        if entry is None:
            raise ZxError(ZX_ERR_BAD_HANDLE)
        obj, have = entry
        want = want_arg
        ok = want is not None and 0 <= want < U32_LIMIT
        if ok and want == ZX_RIGHT_SAME_RIGHTS:
            want = have
        ok = ok and (want & have == want)  # type: ignore[operator]
        if ok:
            _table[new_value] = (obj, want)  # type: ignore[assignment]
        else:
            obj.handle_count -= 1
            last = obj.handle_count == 0
    if not ok:
        if last:
            obj.on_zero_handles()
        raise ZxError(ZX_ERR_INVALID_ARGS)
    return new_value


def close(handle: object) -> None:
    value = as_handle_value(handle)
    if value == ZX_HANDLE_INVALID_VALUE:
        return
    if value is None:
        raise ZxError(ZX_ERR_BAD_HANDLE)
    with _table_lock:
        entry = _table.pop(value, None)
        if entry is None:
            raise ZxError(ZX_ERR_BAD_HANDLE)
        obj = entry[0]
        obj.handle_count -= 1
        last = obj.handle_count == 0
    if last:
        obj.on_zero_handles()
