"""vmo_read_async, the model's one extension to the read side: zx_vmo_read for a caller
that must not block. It must raise the same page requests as zx_vmo_read, give the same
bytes and statuses, and tell its caller exactly once, with no kernel lock held."""

from __future__ import annotations

import threading

import pytest

from pagerfs import zircon as zx
from pagerfs.zircon import handles

PAGE = zx.PAGE_SIZE


class Done:
    """A `done` callback that records its calls and whether the VMO's lock was free."""

    def __init__(self, handle: int) -> None:
        self.obj = handles.lookup(handle, object, 0)
        self.calls: list[tuple[int, bytes | None]] = []
        self.lock_free: list[bool] = []
        self.threads: list[int] = []
        self.event = threading.Event()

    def __call__(self, status: int, data: bytes | None) -> None:
        self.lock_free.append(not self.obj.lock.locked())
        self.threads.append(threading.get_ident())
        self.calls.append((status, data))
        self.event.set()


def start(vmo, page: int, npages: int) -> tuple[bytes | None, Done]:
    done = Done(vmo.handle)
    return zx.vmo_read_async(vmo.handle, page * PAGE, npages * PAGE, done), done


def test_present_pages_are_returned_at_once(pager):
    vmo = pager.create_vmo(4)
    pager.supply_pages(vmo, 0, 4)
    data, done = start(vmo, 1, 2)
    assert data == vmo.expected(1, 2)
    assert done.calls == []
    assert pager.get_page_read_request(vmo, timeout=0) is None


def test_absent_pages_raise_the_request_zx_vmo_read_would(pager):
    vmo = pager.create_vmo(8)
    pager.supply_pages(vmo, 0, 2)
    pager.supply_pages(vmo, 5, 1)
    data, done = start(vmo, 1, 6)  # pages 1..6: 1 present, 2-4 absent, 5 present, 6 absent
    assert data is None
    # The first absent run only, up to the next present page, as the blocking read asks.
    assert pager.wait_for_page_read(vmo, 2, 3, timeout=0)
    assert pager.get_page_read_request(vmo, timeout=0) is None
    pager.supply_pages(vmo, 2, 3)
    # Continued by the supplying thread: the next absent run is asked for, no answer yet.
    assert done.calls == []
    assert pager.wait_for_page_read(vmo, 6, 1, timeout=0)
    pager.supply_pages(vmo, 6, 1)
    assert done.calls == [(zx.ZX_OK, vmo.expected(1, 6))]
    assert done.lock_free == [True]


def test_done_comes_from_the_supplying_thread(pager):
    vmo = pager.create_vmo(2)
    data, done = start(vmo, 0, 2)
    assert data is None
    assert pager.wait_for_page_read(vmo, 0, 2, timeout=0)
    supplier = threading.Thread(target=pager.supply_pages, args=(vmo, 0, 2))
    supplier.start()
    supplier.join(30)
    assert done.threads == [supplier.ident]
    assert done.calls == [(zx.ZX_OK, vmo.expected(0, 2))]


def test_joins_a_request_a_blocked_reader_raised(pager, spawn):
    vmo = pager.create_vmo(4)
    reader = spawn(lambda: vmo.check(0, 4, False))
    assert reader.wait_for_blocked()
    assert pager.wait_for_page_read(vmo, 0, 4, timeout=0)
    data, done = start(vmo, 1, 2)
    assert data is None
    assert pager.get_page_read_request(vmo, timeout=0) is None  # no second packet
    pager.supply_pages(vmo, 0, 4)
    assert reader.wait()
    assert done.calls == [(zx.ZX_OK, vmo.expected(1, 2))]


def test_fail_ends_the_read_with_the_pagers_status(pager):
    vmo = pager.create_vmo(4)
    data, done = start(vmo, 0, 4)
    assert data is None
    assert pager.wait_for_page_read(vmo, 0, 4, timeout=0)
    pager.supply_pages(vmo, 0, 1)
    pager.fail_pages(vmo, 2, 1, zx.ZX_ERR_IO_DATA_INTEGRITY)
    assert done.calls == [(zx.ZX_ERR_IO_DATA_INTEGRITY, None)]
    assert done.lock_free == [True]
    # The failure is not remembered: the next read asks again.
    data, again = start(vmo, 0, 4)
    assert data is None
    assert pager.wait_for_page_read(vmo, 1, 3, timeout=0)


@pytest.mark.parametrize("how", ["detach", "close"])
def test_detach_ends_the_read_with_bad_state(pager, how):
    vmo = pager.create_vmo(2)
    data, done = start(vmo, 0, 2)
    assert data is None
    if how == "detach":
        pager.detach_vmo(vmo)
    else:
        pager.release_vmo(vmo)
        pager.vmos.remove(vmo)
    assert done.calls == [(zx.ZX_ERR_BAD_STATE, None)]
    assert done.lock_free == [True]


def test_after_detach_absent_pages_fail_at_once(pager):
    vmo = pager.create_vmo(2)
    pager.supply_pages(vmo, 0, 1)
    pager.detach_vmo(vmo)
    done = Done(vmo.handle)
    with pytest.raises(zx.ZxError) as err:
        zx.vmo_read_async(vmo.handle, 0, 2 * PAGE, done)
    assert err.value.status == zx.ZX_ERR_BAD_STATE
    assert done.calls == []


def test_plain_vmo_reads_at_once():
    vmo = zx.zx_vmo_create(2 * PAGE, 0)
    try:
        zx.zx_vmo_write(vmo, b"x" * 10, PAGE)
        assert zx.vmo_read_async(vmo, PAGE - 2, 6, None) == b"\0\0xxxx"
    finally:
        zx.zx_handle_close(vmo)


@pytest.mark.parametrize("args", [
    (0, PAGE + 1),          # past the end
    (2**64, 1),             # not a uint64
    (-1, 1),
    (PAGE, 2**64 - 1),      # offset + length overflows
])
def test_checks_match_zx_vmo_read(pager, status_of, args):
    vmo = pager.create_vmo(1)
    expected = status_of(zx.zx_vmo_read, vmo.handle, *args)
    assert expected != zx.ZX_OK
    assert status_of(zx.vmo_read_async, vmo.handle, *args, None) == expected
    assert pager.get_page_read_request(vmo, timeout=0) is None


def test_rights_and_handles_match_zx_vmo_read(pager, status_of):
    vmo = pager.create_vmo(1)
    no_read = zx.zx_handle_duplicate(vmo.handle, zx.ZX_RIGHT_MAP)
    try:
        for handle in (no_read, pager.port, 0):
            expected = status_of(zx.zx_vmo_read, handle, 0, PAGE)
            assert expected in (zx.ZX_ERR_ACCESS_DENIED, zx.ZX_ERR_WRONG_TYPE,
                                zx.ZX_ERR_BAD_HANDLE)
            assert status_of(zx.vmo_read_async, handle, 0, PAGE, None) == expected
    finally:
        zx.zx_handle_close(no_read)


def test_zero_length_reads_nothing(pager):
    vmo = pager.create_vmo(1)
    assert zx.vmo_read_async(vmo.handle, PAGE, 0, None) == b""
    assert pager.get_page_read_request(vmo, timeout=0) is None


def test_many_readers_each_told_once(pager, serve):
    server = serve()
    vmos = [server.add(pager.create_vmo(16)) for _ in range(3)]
    dones = []
    for i in range(60):
        vmo = vmos[i % 3]
        page = (i * 5) % 13
        data, done = start(vmo, page, 3)
        dones.append((vmo, page, data, done))
    for vmo, page, data, done in dones:
        if data is None:
            assert done.event.wait(30)
            assert done.calls == [(zx.ZX_OK, vmo.expected(page, 3))]
        else:
            assert data == vmo.expected(page, 3) and done.calls == []
    assert all(all(d.lock_free) for *_, d in dones)
