"""Ports of Zircon's core pager tests (zircon/system/utest/core/pager/pager.cc), named
after the test each one ports. VMO_VMAR_TEST pairs become _Vmo and _Vmar variants."""

from __future__ import annotations

import pytest

from pagerfs import zircon as zx

PAGE = zx.PAGE_SIZE


# --- basic paging -------------------------------------------------------------------
def single_page(pager, spawn, vmar):
    vmo = pager.create_vmo(1)
    t = spawn(lambda: vmo.check(0, 1, vmar))
    assert pager.wait_for_page_read(vmo, 0, 1)
    pager.supply_pages(vmo, 0, 1)
    assert t.wait()


def test_SinglePage_Vmo(pager, spawn):
    single_page(pager, spawn, False)


def test_SinglePage_Vmar(pager, spawn):
    single_page(pager, spawn, True)


def uncommitted_single_page(pager, spawn, vmar):
    vmo = pager.create_vmo(1)
    t = spawn(lambda: vmo.read(0, 1, vmar) == bytes(PAGE))
    assert pager.wait_for_page_read(vmo, 0, 1)
    pager.supply_pages(vmo, 0, 1, aux=zx.zx_vmo_create(PAGE, 0))
    assert t.wait()


def test_UncommittedSinglePage_Vmo(pager, spawn):
    uncommitted_single_page(pager, spawn, False)


def test_UncommittedSinglePage_Vmar(pager, spawn):
    uncommitted_single_page(pager, spawn, True)


def presupply(pager, spawn, vmar):
    vmo = pager.create_vmo(1)
    pager.supply_pages(vmo, 0, 1)
    t = spawn(lambda: vmo.check(0, 1, vmar))
    assert t.wait()
    assert not pager.wait_for_page_read(vmo, 0, 1, timeout=0)


def test_Presupply_Vmo(pager, spawn):
    presupply(pager, spawn, False)


def test_Presupply_Vmar(pager, spawn):
    presupply(pager, spawn, True)


def early_supply(pager, thread_factory, vmar):
    vmo = pager.create_vmo(2)
    t1 = thread_factory(lambda: vmo.check(0, 1, vmar))
    # A second thread makes sure the queue of requests is flushed.
    t2 = thread_factory(lambda: vmo.check(1, 1, vmar))
    t1.start()
    assert t1.wait_for_blocked()
    pager.supply_pages(vmo, 0, 1)
    assert t1.wait()
    t2.start()
    assert t2.wait_for_blocked()
    # The request for page 0 was withdrawn: the first packet is page 1's.
    assert pager.wait_for_page_read(vmo, 1, 1)
    pager.supply_pages(vmo, 1, 1)
    assert t2.wait()
    assert not pager.wait_for_page_read(vmo, 0, 1, timeout=0)


def test_EarlySupply_Vmo(pager, thread_factory):
    early_supply(pager, thread_factory, False)


def test_EarlySupply_Vmar(pager, thread_factory):
    early_supply(pager, thread_factory, True)


def sequential_multipage(pager, spawn, vmar):
    n = 32
    vmo = pager.create_vmo(n)
    t = spawn(lambda: vmo.check(0, n, vmar))
    if vmar:
        # A CPU touches one page at a time: one request per page.
        for i in range(n):
            assert pager.wait_for_page_read(vmo, i, 1)
            pager.supply_pages(vmo, i, 1)
    else:
        # zx_vmo_read asks for its whole absent run, then continues where it stopped.
        assert pager.wait_for_page_read(vmo, 0, n)
        for i in range(n):
            pager.supply_pages(vmo, i, 1)
    assert t.wait()


def test_SequentialMultipage_Vmo(pager, spawn):
    sequential_multipage(pager, spawn, False)


def test_SequentialMultipage_Vmar(pager, spawn):
    sequential_multipage(pager, spawn, True)


def concurrent_multipage_access(pager, spawn, vmar):
    vmo = pager.create_vmo(2)
    t = spawn(lambda: vmo.check(0, 1, vmar))
    t2 = spawn(lambda: vmo.check(1, 1, vmar))
    seen = {pager.get_page_read_request(vmo), pager.get_page_read_request(vmo)}
    assert seen == {(0, 1), (1, 1)}
    pager.supply_pages(vmo, 0, 2)
    assert t.wait()
    assert t2.wait()


def test_ConcurrentMultipageAccess_Vmo(pager, spawn):
    concurrent_multipage_access(pager, spawn, False)


def test_ConcurrentMultipageAccess_Vmar(pager, spawn):
    concurrent_multipage_access(pager, spawn, True)


def concurrent_overlapping_access(pager, spawn, vmar):
    vmo = pager.create_vmo(1)
    threads = []
    for _ in range(32):
        t = spawn(lambda: vmo.check(0, 1, vmar))
        assert t.wait_for_blocked()
        threads.append(t)
    assert pager.wait_for_page_read(vmo, 0, 1)
    pager.supply_pages(vmo, 0, 1)
    for t in threads:
        assert t.wait()
    assert not pager.wait_for_page_read(vmo, 0, 1, timeout=0)


def test_ConcurrentOverlappingAccess_Vmo(pager, spawn):
    concurrent_overlapping_access(pager, spawn, False)


def test_ConcurrentOverlappingAccess_Vmar(pager, spawn):
    concurrent_overlapping_access(pager, spawn, True)


def bulk_single_supply(pager, spawn, vmar):
    n = 8
    vmo = pager.create_vmo(n)
    threads = []
    for i in range(n):
        threads.append(spawn(lambda i=i: vmo.check(i, 1, vmar)))
        assert pager.wait_for_page_read(vmo, i, 1)
    pager.supply_pages(vmo, 0, n)
    for t in threads:
        assert t.wait()


def test_BulkSingleSupply_Vmo(pager, spawn):
    bulk_single_supply(pager, spawn, False)


def test_BulkSingleSupply_Vmar(pager, spawn):
    bulk_single_supply(pager, spawn, True)


@pytest.mark.parametrize("use_src_offset", [False, True], ids=["Length", "Offset"])
def test_BulkOddSupply(pager, spawn, use_src_offset):
    lengths = [2, 3, 5, 7, 37, 5, 13, 23]
    vmo = pager.create_vmo(sum(lengths))
    page = 0
    for n in lengths:
        threads = []
        for j in range(n):
            threads.append(spawn(lambda p=page + j: vmo.check(p, 1, True)))
            assert pager.wait_for_page_read(vmo, page + j, 1)
        pager.supply_pages(vmo, page, n, src_page=page if use_src_offset else 0)
        for t in threads:
            assert t.wait()
        page += n


def overlap_supply(pager, spawn, vmar):
    vmo = pager.create_vmo(2)
    alt = page_of(0xA1)
    aux = zx.zx_vmo_create(PAGE, 0)
    zx.zx_vmo_write(aux, alt, 0)
    pager.supply_pages(vmo, 0, 1, aux=aux)
    pager.supply_pages(vmo, 1, 1)  # an earlier page is never overwritten...
    pager.supply_pages(vmo, 0, 2)  # ...not even by a later supply of the same range
    t = spawn(lambda: vmo.read(0, 1, vmar) == alt and vmo.check(1, 1, vmar))
    assert t.wait()
    assert not pager.wait_for_page_read(vmo, 0, 1, timeout=0)


def page_of(byte: int) -> bytes:
    return bytes([byte]) * PAGE


def test_OverlapSupply_Vmo(pager, spawn):
    overlap_supply(pager, spawn, False)


def test_OverlapSupply_Vmar(pager, spawn):
    overlap_supply(pager, spawn, True)


def test_ManyRequest(pager, spawn):
    n = 64  # Zircon uses 257; 64 keeps the thread count sane on 2 cores
    vmo = pager.create_vmo(n)
    threads = []
    for i in range(n):
        t = spawn(lambda i=i: vmo.check(i, 1, True))
        assert t.wait_for_blocked()
        threads.append(t)
    for i in range(n):
        assert pager.wait_for_page_read(vmo, i, 1)
        pager.supply_pages(vmo, i, 1)
        assert threads[i].wait()


def test_SuccessiveVmo(pager, spawn):
    for _ in range(16):
        vmo = pager.create_vmo(1)
        t = spawn(lambda vmo=vmo: vmo.check(0, 1, True))
        assert pager.wait_for_page_read(vmo, 0, 1)
        pager.supply_pages(vmo, 0, 1)
        assert t.wait()
        pager.release_vmo(vmo)


def test_MultipleConcurrentVmo(pager, spawn):
    vmos = [pager.create_vmo(1) for _ in range(8)]
    threads = []
    for vmo in vmos:
        threads.append(spawn(lambda vmo=vmo: vmo.check(0, 1, True)))
        assert pager.wait_for_page_read(vmo, 0, 1)
    for vmo, t in zip(vmos, threads):
        pager.supply_pages(vmo, 0, 1)
        assert t.wait()


def test_VmarUnmap(pager, spawn):
    vmo = pager.create_vmo(1)
    mapping = vmo.map()
    t = spawn(lambda: vmo.check(0, 1, True))
    assert t.wait_for_blocked()
    mapping.unmap()
    pager.supply_pages(vmo, 0, 1)
    assert t.wait_for_crash(0, zx.ZX_ERR_NOT_FOUND)


# --- commit -------------------------------------------------------------------------------
def test_SimpleCommit(pager, spawn):
    n = 555
    vmo = pager.create_vmo(n)
    t = spawn(lambda: vmo.commit(0, n))
    assert pager.wait_for_page_read(vmo, 0, n)
    pager.supply_pages(vmo, 0, n)
    assert t.wait()
    assert vmo.check(0, n, False)


def test_SplitCommit(pager, spawn):
    n = 33
    vmo = pager.create_vmo(n)
    pager.supply_pages(vmo, n // 2, 1)
    t = spawn(lambda: vmo.commit(0, n))
    assert pager.wait_for_page_read(vmo, 0, n // 2)
    pager.supply_pages(vmo, 0, n // 2)
    assert pager.wait_for_page_read(vmo, n // 2 + 1, n // 2)
    pager.supply_pages(vmo, n // 2 + 1, n // 2)
    assert t.wait()


def test_OverlapCommit(pager, spawn):
    n = 32
    vmo = pager.create_vmo(n)
    t1 = spawn(lambda: vmo.commit(n // 4, n // 2))
    assert pager.wait_for_page_read(vmo, n // 4, n // 2)
    t2 = spawn(lambda: vmo.commit(0, n))
    assert pager.wait_for_page_read(vmo, 0, n // 4)
    pager.supply_pages(vmo, 0, 3 * n // 4)
    assert pager.wait_for_page_read(vmo, 3 * n // 4, n // 4)
    pager.supply_pages(vmo, 3 * n // 4, n // 4)
    assert t1.wait()
    assert t2.wait()


def test_OverlapCommitSupply(pager, spawn):
    supply_len, commit_a, commit_b = 3, 7, 5
    n = commit_a * commit_b * supply_len
    vmo = pager.create_vmo(n)
    threads_a = []
    for i in range(n // commit_a):
        threads_a.append(spawn(lambda i=i: vmo.commit(i * commit_a, commit_a)))
        assert pager.wait_for_page_read(vmo, i * commit_a, commit_a)
    threads_b = []
    for i in range(n // commit_b):
        t = spawn(lambda i=i: vmo.commit(i * commit_b, commit_b))
        assert t.wait_for_blocked()
        threads_b.append(t)
    for i in range(n // supply_len):
        pager.supply_pages(vmo, i * supply_len, supply_len)
    for t in threads_a + threads_b:
        assert t.wait()
    assert vmo.check(0, n, False)


def test_MultisupplyCommit(pager, spawn):
    n = 32
    vmo = pager.create_vmo(n)
    t = spawn(lambda: vmo.commit(0, n))
    assert pager.wait_for_page_read(vmo, 0, n)
    for i in range(n):
        pager.supply_pages(vmo, i, 1)
    assert t.wait()


def test_MulticommitSupply(pager, spawn):
    commits, supplies = 5, 7
    vmo = pager.create_vmo(commits * supplies)
    threads = []
    for i in range(commits):
        threads.append(spawn(lambda i=i: vmo.commit(i * supplies, supplies)))
        assert pager.wait_for_page_read(vmo, i * supplies, supplies)
    for i in range(supplies):
        pager.supply_pages(vmo, commits * i, commits)
    for t in threads:
        assert t.wait()


def test_CommitRedundantSupply(pager, spawn):
    n = 8
    vmo = pager.create_vmo(n)
    t = spawn(lambda: vmo.commit(0, n))
    assert pager.wait_for_page_read(vmo, 0, n)
    for i in range(1, n + 1):
        pager.supply_pages(vmo, 0, i)
    assert t.wait()


def test_UncommittedSupply(pager):
    vmo = pager.create_vmo(1)
    empty = zx.zx_vmo_create(PAGE, 0)
    zx.zx_pager_supply_pages(pager.pager, vmo.handle, 0, PAGE, empty, 0)
    # A read does not fault, and gives zeros.
    assert zx.zx_vmo_read(vmo.handle, 0, 4) == bytes(4)
    assert pager.get_page_read_request(vmo, timeout=0) is None


def test_Decommit(pager):
    vmo = pager.create_vmo(1)
    with pytest.raises(zx.ZxError) as e:
        zx.zx_vmo_op_range(vmo.handle, zx.ZX_VMO_OP_DECOMMIT, 0, PAGE)
    assert e.value.status == zx.ZX_ERR_NOT_SUPPORTED


# --- detach and close ------------------------------------------------------------------------
def test_DetachPageComplete(pager):
    vmo = pager.create_vmo(1)
    pager.detach_vmo(vmo)
    assert pager.wait_for_page_complete(vmo.key)
    # Exactly one COMPLETE: a second detach is OK and queues nothing.
    pager.detach_vmo(vmo)
    assert not pager.wait_for_page_complete(vmo.key, timeout=0)
    # nor does closing its last handle afterwards
    pager.release_vmo(vmo)
    pager.vmos.remove(vmo)
    assert not pager.wait_for_page_complete(vmo.key, timeout=0)


def test_ClosePageComplete(pager):
    vmo = pager.create_vmo(1)
    key = vmo.key
    pager.release_vmo(vmo)
    assert pager.wait_for_page_complete(key)


def read_interrupt(pager, spawn, vmar, detach, late):
    vmo = pager.create_vmo(1)
    t = spawn(lambda: vmo.check(0, 1, vmar))
    if late:
        assert pager.wait_for_page_read(vmo, 0, 1)
    else:
        assert t.wait_for_blocked()
    if detach:
        pager.detach_vmo(vmo)
    else:
        pager.close_pager_handle()
    if vmar:
        assert t.wait_for_crash(0, zx.ZX_ERR_BAD_STATE)
    else:
        assert t.wait_for_failure(zx.ZX_ERR_BAD_STATE)
    if detach:
        assert pager.wait_for_page_complete(vmo.key)
    else:
        # Closing the pager ends the source without COMPLETE packets.
        assert not pager.wait_for_page_complete(vmo.key, timeout=0)


@pytest.mark.parametrize("late", [False, True], ids=["Early", "Late"])
@pytest.mark.parametrize("detach", [False, True], ids=["Close", "Detach"])
def test_ReadInterrupt_Vmo(pager, spawn, detach, late):
    read_interrupt(pager, spawn, False, detach, late)


@pytest.mark.parametrize("late", [False, True], ids=["Early", "Late"])
@pytest.mark.parametrize("detach", [False, True], ids=["Close", "Detach"])
def test_ReadInterrupt_Vmar(pager, spawn, detach, late):
    read_interrupt(pager, spawn, True, detach, late)


def test_ClosePager(pager, spawn):
    vmo = pager.create_vmo(2)
    pager.supply_pages(vmo, 1, 1)
    t = spawn(lambda: vmo.check(0, 1, True))
    assert t.wait_for_blocked()
    pager.close_pager_handle()
    assert t.wait_for_crash(0, zx.ZX_ERR_BAD_STATE)
    assert vmo.check(1, 1, True)


def test_DetachClosePager(pager):
    vmo = pager.create_vmo(1)
    pager.detach_vmo(vmo)
    pager.close_pager_handle()
    assert pager.wait_for_page_complete(vmo.key)


def test_ClosePort(pager, spawn):
    vmo = pager.create_vmo(2)
    t = spawn(lambda: vmo.check(0, 1, True))
    assert t.wait_for_blocked()
    pager.close_port_handle()
    pager.supply_pages(vmo, 1, 1)
    assert vmo.check(1, 1, True)
    pager.detach_vmo(vmo)
    assert t.wait_for_crash(0, zx.ZX_ERR_BAD_STATE)


def test_SupplyAfterDetach(pager):
    n = 11
    vmo = pager.create_vmo(n)
    pager.detach_vmo(vmo)
    assert pager.get_page_read_request(vmo, timeout=0) is None
    with pytest.raises(zx.ZxError) as e:
        pager.supply_pages(vmo, 0, n)
    assert e.value.status == zx.ZX_ERR_BAD_STATE
    assert pager.get_page_read_request(vmo, timeout=0) is None


def test_VmoInfoPager(pager):
    vmo = pager.create_vmo(1)
    info = zx.zx_object_get_info(vmo.handle, zx.ZX_INFO_VMO)
    assert info.flags & zx.ZX_INFO_VMO_PAGER_BACKED
    plain = zx.zx_vmo_create(PAGE, 0)
    info = zx.zx_object_get_info(plain, zx.ZX_INFO_VMO)
    assert not info.flags & zx.ZX_INFO_VMO_PAGER_BACKED
    zx.zx_handle_close(plain)


# --- API violations ----------------------------------------------------------------------------
def test_InvalidPagerCreate(status_of):
    assert status_of(zx.zx_pager_create, 1) == zx.ZX_ERR_INVALID_ARGS


def test_InvalidPagerCreateVmo(status_of):
    pager = zx.zx_pager_create(0)
    port = zx.zx_port_create(0)
    create = zx.zx_pager_create_vmo
    # bad options
    assert status_of(create, pager, 0xFFFFFFFF, port, 0, PAGE) == zx.ZX_ERR_INVALID_ARGS
    # bad handles for pager and port
    assert status_of(create, zx.ZX_HANDLE_INVALID, 0, port, 0, PAGE) == zx.ZX_ERR_BAD_HANDLE
    assert status_of(create, pager, 0, zx.ZX_HANDLE_INVALID, 0, PAGE) == zx.ZX_ERR_BAD_HANDLE
    # missing write right on port
    ro_port = zx.zx_handle_duplicate(port, zx.ZX_DEFAULT_PORT_RIGHTS & ~zx.ZX_RIGHT_WRITE)
    assert status_of(create, pager, 0, ro_port, 0, PAGE) == zx.ZX_ERR_ACCESS_DENIED
    # bad handle types for pager and port
    assert status_of(create, port, 0, port, 0, PAGE) == zx.ZX_ERR_WRONG_TYPE
    tmp_vmo = zx.zx_vmo_create(PAGE, 0)
    assert status_of(create, pager, 0, tmp_vmo, 0, PAGE) == zx.ZX_ERR_WRONG_TYPE
    # invalid size
    bad_size = (2**64 - 1) // PAGE * PAGE + 1
    assert status_of(create, pager, 0, port, 0, bad_size) == zx.ZX_ERR_OUT_OF_RANGE
    for h in (pager, port, ro_port, tmp_vmo):
        zx.zx_handle_close(h)


def test_InvalidPagerDetachVmo(status_of):
    pager = zx.zx_pager_create(0)
    port = zx.zx_port_create(0)
    vmo = zx.zx_pager_create_vmo(pager, 0, port, 0, PAGE)
    detach = zx.zx_pager_detach_vmo
    assert status_of(detach, zx.ZX_HANDLE_INVALID, vmo) == zx.ZX_ERR_BAD_HANDLE
    assert status_of(detach, pager, zx.ZX_HANDLE_INVALID) == zx.ZX_ERR_BAD_HANDLE
    assert status_of(detach, vmo, vmo) == zx.ZX_ERR_WRONG_TYPE
    assert status_of(detach, pager, pager) == zx.ZX_ERR_WRONG_TYPE
    tmp_vmo = zx.zx_vmo_create(PAGE, 0)
    assert status_of(detach, pager, tmp_vmo) == zx.ZX_ERR_INVALID_ARGS
    pager2 = zx.zx_pager_create(0)
    assert status_of(detach, pager2, vmo) == zx.ZX_ERR_INVALID_ARGS
    for h in (pager, port, vmo, tmp_vmo, pager2):
        zx.zx_handle_close(h)


def test_InvalidPagerSupplyPages(status_of):
    pager = zx.zx_pager_create(0)
    port = zx.zx_port_create(0)
    vmo = zx.zx_pager_create_vmo(pager, 0, port, 0, PAGE)
    aux = zx.zx_vmo_create(PAGE, 0)
    supply = zx.zx_pager_supply_pages
    inv = zx.ZX_HANDLE_INVALID
    # bad handles
    assert status_of(supply, inv, vmo, 0, 0, aux, 0) == zx.ZX_ERR_BAD_HANDLE
    assert status_of(supply, pager, inv, 0, 0, aux, 0) == zx.ZX_ERR_BAD_HANDLE
    assert status_of(supply, pager, vmo, 0, 0, inv, 0) == zx.ZX_ERR_BAD_HANDLE
    # wrong handle types
    assert status_of(supply, vmo, vmo, 0, 0, aux, 0) == zx.ZX_ERR_WRONG_TYPE
    assert status_of(supply, pager, pager, 0, 0, aux, 0) == zx.ZX_ERR_WRONG_TYPE
    assert status_of(supply, pager, vmo, 0, 0, port, 0) == zx.ZX_ERR_WRONG_TYPE
    # using a non-paged vmo
    assert status_of(supply, pager, aux, 0, 0, aux, 0) == zx.ZX_ERR_INVALID_ARGS
    # using a pager vmo from another pager
    pager2 = zx.zx_pager_create(0)
    assert status_of(supply, pager2, vmo, 0, 0, inv, 0) == zx.ZX_ERR_INVALID_ARGS
    # missing permissions on the aux vmo
    ro_vmo = zx.zx_handle_duplicate(vmo, zx.ZX_DEFAULT_VMO_RIGHTS & ~zx.ZX_RIGHT_WRITE)
    assert status_of(supply, pager, vmo, 0, 0, ro_vmo, 0) == zx.ZX_ERR_ACCESS_DENIED
    wo_vmo = zx.zx_handle_duplicate(vmo, zx.ZX_DEFAULT_VMO_RIGHTS & ~zx.ZX_RIGHT_READ)
    assert status_of(supply, pager, vmo, 0, 0, wo_vmo, 0) == zx.ZX_ERR_ACCESS_DENIED
    # misaligned offset, size, or aux alignment
    assert status_of(supply, pager, vmo, 1, 0, aux, 0) == zx.ZX_ERR_INVALID_ARGS
    assert status_of(supply, pager, vmo, 0, 1, aux, 0) == zx.ZX_ERR_INVALID_ARGS
    assert status_of(supply, pager, vmo, 0, 0, aux, 1) == zx.ZX_ERR_INVALID_ARGS
    # a pager vmo as aux (the contract's NOT_SUPPORTED; Zircon says BAD_STATE)
    other = zx.zx_pager_create_vmo(pager, 0, port, 1, PAGE)
    assert status_of(supply, pager, vmo, 0, PAGE, other, 0) == zx.ZX_ERR_NOT_SUPPORTED
    # out of range pager_vmo region
    zx.zx_vmo_op_range(aux, zx.ZX_VMO_OP_COMMIT, 0, PAGE)
    assert status_of(supply, pager, vmo, PAGE, PAGE, aux, 0) == zx.ZX_ERR_OUT_OF_RANGE
    # out of range aux_vmo region
    assert status_of(supply, pager, vmo, 0, PAGE, aux, PAGE) == zx.ZX_ERR_OUT_OF_RANGE
    # none of that moved a page
    assert zx.zx_object_get_info(aux, zx.ZX_INFO_VMO).committed_bytes == PAGE
    assert zx.zx_object_get_info(vmo, zx.ZX_INFO_VMO).committed_bytes == 0
    for h in (pager, port, vmo, aux, pager2, ro_vmo, wo_vmo, other):
        zx.zx_handle_close(h)


def test_InvalidPagerOpRange(status_of):
    op_range = zx.zx_pager_op_range
    for op in (zx.ZX_PAGER_OP_FAIL,):
        pager = zx.zx_pager_create(0)
        port = zx.zx_port_create(0)
        vmo = zx.zx_pager_create_vmo(pager, 0, port, 0, PAGE)
        inv = zx.ZX_HANDLE_INVALID
        # bad handles
        assert status_of(op_range, inv, op, vmo, 0, 0, 0) == zx.ZX_ERR_BAD_HANDLE
        assert status_of(op_range, pager, op, inv, 0, 0, 0) == zx.ZX_ERR_BAD_HANDLE
        # wrong handle types
        assert status_of(op_range, vmo, op, vmo, 0, 0, 0) == zx.ZX_ERR_WRONG_TYPE
        assert status_of(op_range, pager, op, pager, 0, 0, 0) == zx.ZX_ERR_WRONG_TYPE
        # using a non-pager-backed vmo
        vmo2 = zx.zx_vmo_create(PAGE, 0)
        assert status_of(op_range, pager, op, vmo2, 0, 0, 0) == zx.ZX_ERR_INVALID_ARGS
        # using a pager vmo from another pager
        pager2 = zx.zx_pager_create(0)
        assert status_of(op_range, pager2, op, vmo, 0, 0, 0) == zx.ZX_ERR_INVALID_ARGS
        # misaligned offset or length
        assert status_of(op_range, pager, op, vmo, 1, 0, 0) == zx.ZX_ERR_INVALID_ARGS
        assert status_of(op_range, pager, op, vmo, 0, 1, 0) == zx.ZX_ERR_INVALID_ARGS
        # out of range
        assert (status_of(op_range, pager, op, vmo, PAGE, PAGE, zx.ZX_ERR_BAD_STATE)
                == zx.ZX_ERR_OUT_OF_RANGE)
        # invalid error code
        if op == zx.ZX_PAGER_OP_FAIL:
            assert status_of(op_range, pager, op, vmo, 0, 0, 0x11FFFFFFFF) == zx.ZX_ERR_INVALID_ARGS
            assert (status_of(op_range, pager, op, vmo, 0, 0, zx.ZX_ERR_INTERNAL)
                    == zx.ZX_ERR_INVALID_ARGS)
            assert status_of(op_range, pager, op, vmo, 0, 0, 10) == zx.ZX_ERR_INVALID_ARGS
        for h in (pager, port, vmo, vmo2, pager2):
            zx.zx_handle_close(h)
    pager = zx.zx_pager_create(0)
    port = zx.zx_port_create(0)
    vmo = zx.zx_pager_create_vmo(pager, 0, port, 0, PAGE)
    # invalid opcode, and other unknown ones
    for op in (0, 2, 3, 0xFFFFFFFF):
        assert status_of(op_range, pager, op, vmo, 0, 0, 0) == zx.ZX_ERR_NOT_SUPPORTED
    for h in (pager, port, vmo):
        zx.zx_handle_close(h)


# --- FAIL -------------------------------------------------------------------------------------
def fail_single_page(pager, spawn, vmar):
    vmo = pager.create_vmo(1)
    t = spawn(lambda: vmo.check(0, 1, vmar))
    assert t.wait_for_blocked()
    assert pager.wait_for_page_read(vmo, 0, 1)
    pager.fail_pages(vmo, 0, 1)
    if vmar:
        assert t.wait_for_crash(0, zx.ZX_ERR_IO)
    else:
        assert t.wait_for_failure(zx.ZX_ERR_IO)
    assert pager.get_page_read_request(vmo, timeout=0) is None


def test_FailSinglePage_Vmo(pager, spawn):
    fail_single_page(pager, spawn, False)


def test_FailSinglePage_Vmar(pager, spawn):
    fail_single_page(pager, spawn, True)


def test_FailExactRange(pager, spawn):
    n = 11
    vmo = pager.create_vmo(n)
    t = spawn(lambda: vmo.commit(0, n))
    assert t.wait_for_blocked()
    assert pager.wait_for_page_read(vmo, 0, n)
    pager.fail_pages(vmo, 0, n)
    assert t.wait_for_failure(zx.ZX_ERR_IO)
    assert pager.get_page_read_request(vmo, timeout=0) is None


def test_FailMultipleCommits(pager, spawn):
    n = 11
    vmo = pager.create_vmo(n)
    # Multiple threads requesting disjoint ranges.
    threads = [spawn(lambda i=i: vmo.commit(i, 1)) for i in range(n)]
    seen = set()
    for t in threads:
        assert t.wait_for_blocked()
    for _ in range(n):
        seen.add(pager.get_page_read_request(vmo))
    assert seen == {(i, 1) for i in range(n)}
    pager.fail_pages(vmo, 0, n)
    for t in threads:
        assert t.wait_for_failure(zx.ZX_ERR_IO)
    assert pager.get_page_read_request(vmo, timeout=0) is None
    # Multiple threads requesting the same range.
    threads = []
    for _ in range(n):
        t = spawn(lambda: vmo.commit(0, n))
        assert t.wait_for_blocked()
        threads.append(t)
    assert pager.wait_for_page_read(vmo, 0, n)
    pager.fail_pages(vmo, 0, n)
    for t in threads:
        assert t.wait_for_failure(zx.ZX_ERR_IO)
    assert pager.get_page_read_request(vmo, timeout=0) is None


def test_FailMultipleVmos(pager, thread_factory):
    vmo1 = pager.create_vmo(1)
    t1 = thread_factory(lambda: vmo1.commit(0, 1))
    vmo2 = pager.create_vmo(1)
    t2 = thread_factory(lambda: vmo2.commit(0, 1))
    t1.start()
    assert t1.wait_for_blocked()
    assert pager.wait_for_page_read(vmo1, 0, 1)
    # No page requests for vmo2 yet.
    assert pager.get_page_read_request(vmo2, timeout=0) is None
    t2.start()
    assert t2.wait_for_blocked()
    assert pager.wait_for_page_read(vmo2, 0, 1)
    pager.fail_pages(vmo1, 0, 1)
    assert t1.wait_for_failure(zx.ZX_ERR_IO)
    assert t2.is_blocked()  # failing vmo1 left vmo2's request alone
    assert pager.get_page_read_request(vmo1, timeout=0) is None
    pager.fail_pages(vmo2, 0, 1)
    assert t2.wait_for_failure(zx.ZX_ERR_IO)
    assert pager.get_page_read_request(vmo1, timeout=0) is None
    assert pager.get_page_read_request(vmo2, timeout=0) is None


def test_FailOverlappingRange(pager, thread_factory):
    n = 11
    vmo = pager.create_vmo(n)
    # End of the request range overlaps with the failed range.
    t1 = thread_factory(lambda: vmo.commit(0, 2))
    # The entire request range overlaps with the failed range.
    t2 = thread_factory(lambda: vmo.commit(9, 2))
    # The start of the request range overlaps with the failed range.
    t3 = thread_factory(lambda: vmo.commit(5, 2))
    for t, (page, count) in ((t1, (0, 2)), (t2, (9, 2)), (t3, (5, 2))):
        t.start()
        assert t.wait_for_blocked()
        assert pager.wait_for_page_read(vmo, page, count)
    pager.fail_pages(vmo, 1, 9)
    for t in (t1, t2, t3):
        assert t.wait_for_failure(zx.ZX_ERR_IO)
    assert pager.get_page_read_request(vmo, timeout=0) is None


def test_FailRedundant(pager, spawn):
    n = 11
    vmo = pager.create_vmo(n)
    t = spawn(lambda: vmo.commit(0, n))
    assert t.wait_for_blocked()
    assert pager.wait_for_page_read(vmo, 0, n)
    for i in range(n):
        # The first call fails the request; the rest meet no request and are no-ops.
        pager.fail_pages(vmo, i, 1)
    assert t.wait_for_failure(zx.ZX_ERR_IO)
    assert pager.get_page_read_request(vmo, timeout=0) is None


def test_FailAfterDetach(pager, spawn):
    n = 11
    vmo = pager.create_vmo(n)
    t = spawn(lambda: vmo.commit(0, n))
    assert t.wait_for_blocked()
    assert pager.wait_for_page_read(vmo, 0, n)
    pager.detach_vmo(vmo)
    assert t.wait_for_failure(zx.ZX_ERR_BAD_STATE)
    assert pager.get_page_read_request(vmo, timeout=0) is None
    pager.fail_pages(vmo, 0, n)  # a no-op, and OK
    assert pager.get_page_read_request(vmo, timeout=0) is None


def test_SupplyAfterFail(pager, spawn):
    n = 11
    vmo = pager.create_vmo(n)
    t1 = spawn(lambda: vmo.commit(0, n))
    assert t1.wait_for_blocked()
    assert pager.wait_for_page_read(vmo, 0, n)
    pager.fail_pages(vmo, 0, n)
    assert t1.wait_for_failure(zx.ZX_ERR_IO)
    assert pager.get_page_read_request(vmo, timeout=0) is None
    # Try to COMMIT the failed range again: nothing was remembered.
    t2 = spawn(lambda: vmo.commit(0, n))
    assert t2.wait_for_blocked()
    assert pager.wait_for_page_read(vmo, 0, n)
    pager.supply_pages(vmo, 0, n)
    assert t2.wait()
    assert pager.get_page_read_request(vmo, timeout=0) is None
    assert vmo.check(0, n, False)


@pytest.mark.parametrize(
    "error", [zx.ZX_ERR_IO, zx.ZX_ERR_IO_DATA_INTEGRITY, zx.ZX_ERR_BAD_STATE],
    ids=["IO", "IO_DATA_INTEGRITY", "BAD_STATE"],
)
def test_FailErrorCode(pager, spawn, error):
    n = 11
    vmo = pager.create_vmo(n)
    t_commit = spawn(lambda: vmo.commit(0, n))
    assert t_commit.wait_for_blocked()
    t_read = spawn(lambda: vmo.check(0, n, False))
    assert t_read.wait_for_blocked()
    assert pager.wait_for_page_read(vmo, 0, n)
    pager.fail_pages(vmo, 0, n, error)
    assert t_commit.wait_for_failure(error)
    assert t_read.wait_for_failure(error)
    assert pager.get_page_read_request(vmo, timeout=0) is None
