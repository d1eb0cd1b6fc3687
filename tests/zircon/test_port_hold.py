"""port_hold_wakeups, the model's extension for a reader that serves its own page
request: the packets the holding thread queues wake no waiter until it leaves, unless
it took them back; everyone else's packets wake waiters as usual."""

from __future__ import annotations

import threading

import pytest

from pagerfs import zircon as zx
from pagerfs.zircon import handles
from pagerfs.zircon.port import Port

PAGE = zx.PAGE_SIZE


@pytest.fixture
def setup():
    pager = zx.zx_pager_create(0)
    port = zx.zx_port_create(0)
    vmos = [zx.zx_pager_create_vmo(pager, 0, port, key, 16 * PAGE) for key in (1, 2)]
    yield pager, port, vmos
    for h in (*vmos, port, pager):
        zx.zx_handle_close(h)


def raise_request(vmo, page):
    """Queue a READ packet for `page` (a read parked on it)."""
    assert zx.vmo_read_async(vmo, page * PAGE, PAGE, lambda status, data: None) is None


def parked(port) -> int:
    """Threads parked in the port's zx_port_wait and not yet woken (the model's own
    condition variable: a woken waiter has left its queue)."""
    return len(handles.lookup(port, Port, 0)._cond._waiters)


def wait_parked(port, n):
    for _ in range(3000):
        if parked(port) == n:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{n} waiters never parked")


class Waiter(threading.Thread):
    """A pager thread's zx_port_wait, recording the keys and offsets it is given."""

    def __init__(self, port, count):
        super().__init__(daemon=True)
        self.port, self.count, self.got = port, count, []

    @classmethod
    def parked(cls, port):
        """One waiter, started and parked in zx_port_wait."""
        waiter = cls(port, 1)
        waiter.start()
        wait_parked(port, 1)
        return waiter

    def run(self):
        for _ in range(self.count):
            packet = zx.zx_port_wait(self.port, zx.ZX_TIME_INFINITE)
            self.got.append((packet.key, packet.page_request.offset))


def test_a_packet_taken_back_inside_the_hold_never_reaches_a_waiter(setup):
    _, port, (a, b) = setup
    waiter = Waiter.parked(port)
    with zx.port_hold_wakeups(port):
        raise_request(a, 3)
        assert parked(port) == 1  # not woken for it
        taken = zx.zx_port_wait(port, 0)
    assert parked(port) == 1  # nor when the hold ends: nothing of it is left
    assert (taken.key, taken.page_request.offset) == (1, 3 * PAGE)
    raise_request(b, 5)  # outside the hold: wakes the waiter, who finds this one
    waiter.join(30)
    assert waiter.got == [(2, 5 * PAGE)]


def test_what_the_holder_leaves_queued_wakes_a_waiter_as_it_leaves(setup):
    _, port, (a, _b) = setup
    waiter = Waiter.parked(port)
    with zx.port_hold_wakeups(port):
        raise_request(a, 7)
        assert parked(port) == 1
    waiter.join(30)
    assert waiter.got == [(1, 7 * PAGE)]


def test_other_threads_packets_wake_waiters_while_one_holds(setup):
    _, port, (a, b) = setup
    waiter = Waiter.parked(port)
    with zx.port_hold_wakeups(port):
        other = threading.Thread(target=raise_request, args=(b, 2))
        other.start()
        other.join(30)
        waiter.join(30)  # woken while this thread still holds
        assert waiter.got == [(2, 2 * PAGE)]


def test_the_hold_needs_the_right_to_wait_and_does_not_nest(setup):
    _, port, _ = setup
    no_read = zx.zx_handle_duplicate(port, zx.ZX_RIGHT_WRITE)
    with pytest.raises(zx.ZxError) as err:
        zx.port_hold_wakeups(no_read)
    assert err.value.status == zx.ZX_ERR_ACCESS_DENIED
    zx.zx_handle_close(no_read)
    with zx.port_hold_wakeups(port):
        with pytest.raises(RuntimeError):
            with zx.port_hold_wakeups(port):
                pass
    with zx.port_hold_wakeups(port):  # the failed nest left the outer hold usable
        pass
