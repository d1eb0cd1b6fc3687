"""The page scanner extras: eviction, the kernel-wide budget, committed-bytes info."""

from __future__ import annotations

import pytest

from pagerfs import zircon as zx

PAGE = zx.PAGE_SIZE


def committed(handle: int) -> int:
    return zx.zx_object_get_info(handle, zx.ZX_INFO_VMO).committed_bytes


def test_evict_then_request_again(pager, spawn):
    vmo = pager.create_vmo(8)
    pager.supply_pages(vmo, 0, 8)
    before = zx.scanner_committed_bytes()
    assert zx.scanner_evict(vmo.handle, 2 * PAGE, 3 * PAGE) == 3
    assert committed(vmo.handle) == 5 * PAGE
    assert zx.scanner_committed_bytes() == before - 3 * PAGE
    # evicting absent pages evicts nothing
    assert zx.scanner_evict(vmo.handle, 2 * PAGE, 3 * PAGE) == 0
    # present pages need no request; the evicted ones are asked for again
    assert vmo.check(0, 2, False) and vmo.check(5, 3, False)
    t = spawn(lambda: vmo.check(0, 8, False))
    assert pager.wait_for_page_read(vmo, 2, 3)
    pager.supply_pages(vmo, 2, 3)
    assert t.wait()
    assert committed(vmo.handle) == 8 * PAGE


def test_evict_through_a_mapping(pager, spawn):
    vmo = pager.create_vmo(2)
    pager.supply_pages(vmo, 0, 2)
    assert vmo.check(0, 2, True)
    assert zx.scanner_evict(vmo.handle, 0, 2 * PAGE) == 2
    t = spawn(lambda: vmo.check(0, 2, True))
    assert pager.wait_for_page_read(vmo, 0, 1)
    pager.supply_pages(vmo, 0, 1)
    assert pager.wait_for_page_read(vmo, 1, 1)
    pager.supply_pages(vmo, 1, 1)
    assert t.wait()


def test_evict_checks(pager, status_of):
    vmo = pager.create_vmo(2)
    plain = zx.zx_vmo_create(PAGE, 0)
    port = pager.port
    status = lambda *a: status_of(zx.scanner_evict, *a)  # noqa: E731
    assert status(vmo.handle, 1, PAGE) == zx.ZX_ERR_INVALID_ARGS
    assert status(vmo.handle, 0, PAGE - 1) == zx.ZX_ERR_INVALID_ARGS
    assert status(0, 0, PAGE) == zx.ZX_ERR_BAD_HANDLE
    assert status(port, 0, PAGE) == zx.ZX_ERR_WRONG_TYPE
    assert status(plain, 0, PAGE) == zx.ZX_ERR_NOT_SUPPORTED
    assert status(vmo.handle, PAGE, 2 * PAGE) == zx.ZX_ERR_OUT_OF_RANGE
    assert status(vmo.handle, 2**64 - PAGE, 2 * PAGE) == zx.ZX_ERR_OUT_OF_RANGE
    zx.zx_handle_close(plain)


def test_info_vmo(pager, status_of):
    vmo = pager.create_vmo(3)
    info = zx.zx_object_get_info(vmo.handle, zx.ZX_INFO_VMO)
    assert (info.size_bytes, info.committed_bytes) == (3 * PAGE, 0)
    pager.supply_pages(vmo, 1, 2)
    info = zx.zx_object_get_info(vmo.handle, zx.ZX_INFO_VMO)
    assert info.committed_bytes == 2 * PAGE
    assert info.koid == zx.zx_object_get_info(vmo.handle, zx.ZX_INFO_HANDLE_BASIC).koid
    with pytest.raises(AttributeError):
        info.size_bytes = 0  # frozen
    # the seed's kernel asks no right for ZX_INFO_VMO, and reports the handle's rights
    bare = zx.zx_handle_duplicate(vmo.handle, zx.ZX_RIGHT_READ)
    info = zx.zx_object_get_info(bare, zx.ZX_INFO_VMO)
    assert (info.committed_bytes, info.handle_rights) == (2 * PAGE, zx.ZX_RIGHT_READ)
    assert status_of(zx.zx_object_get_info, pager.port, zx.ZX_INFO_VMO) == zx.ZX_ERR_WRONG_TYPE
    assert status_of(zx.zx_object_get_info, 0, zx.ZX_INFO_VMO) == zx.ZX_ERR_BAD_HANDLE
    assert status_of(zx.zx_object_get_info, vmo.handle, 12345) == zx.ZX_ERR_NOT_SUPPORTED
    zx.zx_handle_close(bare)


def test_closing_a_vmo_frees_its_pages(pager):
    vmo = pager.create_vmo(4)
    pager.supply_pages(vmo, 0, 4)
    before = zx.scanner_committed_bytes()
    pager.release_vmo(vmo)
    pager.vmos.remove(vmo)
    assert zx.scanner_committed_bytes() == before - 4 * PAGE


def test_limit_evicts_least_recently_used(pager, scanner_limit):
    a = pager.create_vmo(4)
    b = pager.create_vmo(4)
    pager.supply_pages(a, 0, 4)
    pager.supply_pages(b, 0, 4)
    assert a.check(0, 4, False)  # a is now more recently used than b
    base = zx.scanner_committed_bytes() - 8 * PAGE  # other tests' VMOs in this process
    scanner_limit(base + 6 * PAGE)
    assert zx.scanner_committed_bytes() <= base + 6 * PAGE
    assert committed(a.handle) == 4 * PAGE  # b went first


def test_limit_bounds_a_streaming_reader(pager, serve, scanner_limit):
    """A reader streams through a VMO four times the budget: every byte right, and the
    committed total stays within the budget plus the request being copied."""
    npages = 1024  # 4 MiB
    chunk = 16  # pages per read
    vmo = pager.create_vmo(npages)
    server = serve()
    server.add(vmo)
    base = zx.scanner_committed_bytes()
    limit = base + (1 << 20)
    scanner_limit(limit)
    peak = 0
    for page in range(0, npages, chunk):
        assert zx.zx_vmo_read(vmo.handle, page * PAGE, chunk * PAGE) == vmo.expected(page, chunk)
        peak = max(peak, zx.scanner_committed_bytes())
    assert base < peak <= limit + chunk * PAGE
    server.stop()
    assert zx.scanner_committed_bytes() <= limit
    assert committed(vmo.handle) <= 1 << 20
    assert server.requests >= npages // chunk  # it had to ask for every chunk
    # and a second pass re-requests what was evicted, still all right
    server = serve()
    server.add(vmo)
    for page in range(0, npages, 4 * chunk):
        assert zx.zx_vmo_read(vmo.handle, page * PAGE, chunk * PAGE) == vmo.expected(page, chunk)
    assert server.requests > 0


def test_limit_smaller_than_a_request_still_progresses(pager, serve, scanner_limit):
    """Pages a woken reader has not yet copied are never evicted under it."""
    vmos = [pager.create_vmo(64), pager.create_vmo(64)]
    server = serve()
    for vmo in vmos:
        server.add(vmo)
    scanner_limit(zx.scanner_committed_bytes() + 4 * PAGE)
    for _ in range(3):
        for vmo in vmos:  # each supply evicts the other VMO's pages
            assert zx.zx_vmo_read(vmo.handle, 0, 64 * PAGE) == vmo.expected(0, 64)
    assert server.requests >= 6
