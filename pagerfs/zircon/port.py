"""Ports and the packets the kernel queues on them."""

from __future__ import annotations

import threading
import time
from _thread import get_ident
from collections import OrderedDict
from dataclasses import dataclass

from .constants import (
    ZX_ERR_TIMED_OUT,
    ZX_OBJ_TYPE_PORT,
    ZX_OK,
    ZX_PKT_TYPE_PAGE_REQUEST,
    ZX_TIME_INFINITE,
)
from .errors import ZxError
from .handles import KObject


@dataclass(frozen=True, slots=True)
class PageRequest:
    """zx_packet_page_request_t: what the pager is asked to do, in bytes."""

    command: int
    flags: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class PortPacket:
    """zx_port_packet_t of type ZX_PKT_TYPE_PAGE_REQUEST."""

    key: int
    type: int
    status: int
    page_request: PageRequest


def page_request_packet(key: int, command: int, offset: int, length: int) -> PortPacket:
    return PortPacket(key, ZX_PKT_TYPE_PAGE_REQUEST, ZX_OK, PageRequest(command, 0, offset, length))


class Port(KObject):
    """A FIFO of packets. Packets can be withdrawn until they are dequeued.

    The port lock is taken after a VMO lock (a VMO queues and withdraws packets while
    holding its own), never before one.
    """

    obj_type = ZX_OBJ_TYPE_PORT
    __slots__ = ("_lock", "_cond", "_queue", "_seq", "_waiters", "_holding")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: OrderedDict[int, PortPacket] = OrderedDict()
        self._seq = 0
        self._waiters = 0
        # Threads inside hold_wakeups() -> wake-ups their packets have not yet given.
        self._holding: dict[int, int] = {}

    def queue(self, packet: PortPacket) -> int | None:
        """Queue a packet; returns a token for withdraw(), or None if nobody can read it."""
        if self.handle_count == 0:
            # Nobody can ever dequeue it: dropping it keeps a closed port from growing.
            return None
        with self._lock:
            self._seq += 1
            token = self._seq
            self._queue[token] = packet
            if self._waiters:
                holding = self._holding
                me = get_ident() if holding else None
                if me in holding:
                    holding[me] += 1
                else:
                    self._cond.notify()
        return token

    def hold_wakeups(self) -> "_HeldWakeups":
        """A context in which the packets the calling thread queues wake no waiter until
        it leaves (see syscalls.port_hold_wakeups)."""
        return _HeldWakeups(self)

    def withdraw(self, token: int) -> bool:
        """Remove a packet not yet dequeued; False if it was already taken."""
        with self._lock:
            return self._queue.pop(token, None) is not None

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def wait(self, deadline: int) -> PortPacket:
        with self._lock:
            if self._queue:
                return self._queue.popitem(last=False)[1]
            self._waiters += 1
            try:
                while not self._queue:
                    if deadline >= ZX_TIME_INFINITE:
                        self._cond.wait()
                        continue
                    left = deadline - time.monotonic_ns()
                    if left <= 0:
                        raise ZxError(ZX_ERR_TIMED_OUT)
                    self._cond.wait(left / 1e9)
                return self._queue.popitem(last=False)[1]
            finally:
                self._waiters -= 1

    def on_zero_handles(self) -> None:
        with self._lock:
            self._queue.clear()


class _HeldWakeups:
    __slots__ = ("_port", "_me")

    def __init__(self, port: Port) -> None:
        self._port = port
        self._me = get_ident()

    def __enter__(self) -> None:
        port = self._port
        with port._lock:
            if self._me in port._holding:
                raise RuntimeError("hold_wakeups() does not nest")
            port._holding[self._me] = 0

    def __exit__(self, *exc) -> None:
        port = self._port
        with port._lock:
            held = port._holding.pop(self._me)
            # What the thread did not take back itself wakes a waiter each, as the
            # queueing would have.
            left = min(held, len(port._queue), port._waiters)
            if left:
                port._cond.notify(left)
