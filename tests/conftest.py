"""Fixtures shared by the kernel model's and the pager's tests."""

from __future__ import annotations

import threading

import pytest

from pagerfs.zircon import vmo as vmo_module

JOIN_TIMEOUT = 30.0  # seconds; only reached when the code under test hangs


class HeldAfterWake:
    """Stops a thread right after a page request it was blocked on has completed and
    released it, before it has taken the VMO lock again to copy its pages: the moment
    in which those pages are present but pinned for it. Only threads that call
    hold_me() are stopped, each at its first such wake-up, until let_go()."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.woken = threading.Event()
        self._go = threading.Event()
        self._threads: set[int] = set()
        real = vmo_module._allocate_lock
        monkeypatch.setattr(vmo_module, "_allocate_lock", lambda: (
            _HeldParking(real(), self) if threading.get_ident() in self._threads else real()))

    def hold_me(self) -> None:
        self._threads.add(threading.get_ident())

    def let_go(self) -> None:
        self._go.set()

    def _woken(self) -> None:
        self._threads.discard(threading.get_ident())
        self.woken.set()
        assert self._go.wait(JOIN_TIMEOUT)


class _HeldParking:
    """A blocked reader's parking lock: taken once as it is made, a second time to wait
    (vmo.PagerVmo.fetch); the second acquire stops after it returns."""

    def __init__(self, lock, owner: HeldAfterWake) -> None:
        self._lock = lock
        self._owner = owner
        self._acquired = 0

    def acquire(self, *args):
        got = self._lock.acquire(*args)
        self._acquired += 1
        if self._acquired == 2:
            self._owner._woken()
        return got

    def release(self) -> None:
        self._lock.release()


@pytest.fixture
def held_after_wake(monkeypatch) -> HeldAfterWake:
    return HeldAfterWake(monkeypatch)
