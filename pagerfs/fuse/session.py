"""pyfuse3's session loop on trio, without a trip through trio's scheduler per request.

pyfuse3.main() runs its request loop on whatever module `pyfuse3.trio` names (that is
how `pyfuse3.asyncio.enable()` swaps in asyncio). Its loop takes a `trio.Lock` so that
one task at a time waits on /dev/fuse, then `await trio.lowlevel.wait_readable(fd)`,
then reads and answers one request. Both awaits reschedule the task through trio's run
loop (a checkpoint, an epoll registration and an `epoll_wait`) even when a request is
already queued, and that was most of what a request cost: a no-op request took 52-68 µs
against libfuse's 21 (see docs/BENCHMARKS.md, "The session loop").

`enable()` hands pyfuse3 a stand-in for the few names its loop uses: a lock that takes
no checkpoint when it is free (it is free but when a second task is waiting to read),
and a `wait_readable` that first asks `poll()` whether a request is there and, if so,
returns at once. Every FAST_STREAK requests it waits through trio anyway: that is a
checkpoint, so tasks woken meanwhile (a READ whose pages a pager thread has just
supplied, the signal watcher) run within a bounded number of requests. Everything else
is trio's own.
"""

from __future__ import annotations

import select
import types

import trio

# Requests answered in a row without a checkpoint; then one wait goes through trio.
FAST_STREAK = 8


class Lock:
    """An async lock that, unlike trio.Lock, does not checkpoint when it is free."""

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters = trio.lowlevel.ParkingLot()

    async def __aenter__(self) -> None:
        while self._held:
            await self._waiters.park()
        self._held = True

    async def __aexit__(self, *exc) -> None:
        self._held = False
        self._waiters.unpark()


class _Waiter:
    """wait_readable for pyfuse3's one /dev/fuse descriptor."""

    def __init__(self) -> None:
        self._poll: select.poll | None = None
        self._fd = -1
        self._streak = 0

    async def wait_readable(self, fd: int) -> None:
        if fd != self._fd:
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)
            self._fd = fd
        if self._streak < FAST_STREAK and self._poll.poll(0):
            self._streak += 1
            return
        self._streak = 0
        await trio.lowlevel.wait_readable(fd)


def stand_in() -> types.SimpleNamespace:
    """What pyfuse3's session loop takes from the module it calls `trio`."""
    waiter = _Waiter()
    lowlevel = types.SimpleNamespace(
        wait_readable=waiter.wait_readable,
        current_task=trio.lowlevel.current_task,
        current_trio_token=trio.lowlevel.current_trio_token,
        notify_closing=trio.lowlevel.notify_closing,
    )
    return types.SimpleNamespace(Lock=Lock, lowlevel=lowlevel, from_thread=trio.from_thread,
                                 ClosedResourceError=trio.ClosedResourceError,
                                 open_nursery=trio.open_nursery)


def enable() -> None:
    """Run pyfuse3's next main() with the stand-in (one mount per process)."""
    import pyfuse3

    pyfuse3.trio = stand_in()
