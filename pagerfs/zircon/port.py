"""Ports and the packets the kernel queues on them."""

from __future__ import annotations

import threading
import time
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
    __slots__ = ("_lock", "_cond", "_queue", "_seq", "_waiters")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: OrderedDict[int, PortPacket] = OrderedDict()
        self._seq = 0
        self._waiters = 0

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
                self._cond.notify()
        return token

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
