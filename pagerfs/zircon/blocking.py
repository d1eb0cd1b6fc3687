"""Which threads are blocked in the kernel on a page request (Zircon's
ZX_THREAD_STATE_BLOCKED_PAGER): waiting for a pager to supply it, or (scanner_evict)
for the readers it woke to collect its pages; so that a test can wait for "blocked" as
an event."""

from __future__ import annotations

import threading
import time

_blocked: dict[int, object] = {}
_cond = threading.Condition()
_watchers = 0


def enter(on: object) -> None:
    """The calling thread starts waiting on a page request `on`."""
    _blocked[threading.get_ident()] = on
    if _watchers:
        with _cond:
            _cond.notify_all()


def leave() -> None:
    _blocked.pop(threading.get_ident(), None)


def is_blocked(ident: int) -> bool:
    return ident in _blocked


def wait_until_blocked(ident: int, timeout: float | None = None) -> bool:
    """Wait until thread `ident` blocks on a page request; False on timeout."""
    global _watchers
    limit = None if timeout is None else time.monotonic() + timeout
    with _cond:
        _watchers += 1
        try:
            while ident not in _blocked:
                left = None if limit is None else limit - time.monotonic()
                if left is not None and left <= 0:
                    return False
                # enter() sets its entry before it reads _watchers, and we count
                # ourselves in before we look, so its notify cannot be missed.
                _cond.wait(left)
            return True
        finally:
            _watchers -= 1
