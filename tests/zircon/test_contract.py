"""The contract's own rules, beyond what Zircon's tests cover: check orders, rights,
uint64/int64 conversions, the request rules, FAIL of the seed's kernel, bad input."""

from __future__ import annotations

import threading

import pytest

from pagerfs import zircon as zx

PAGE = zx.PAGE_SIZE
U64 = 2**64


def rights_of(handle: int) -> int:
    return zx.zx_object_get_info(handle, zx.ZX_INFO_HANDLE_BASIC).rights


# --- errors -----------------------------------------------------------------------------
def test_zx_error_names_its_status():
    e = zx.ZxError(zx.ZX_ERR_IO_DATA_INTEGRITY)
    assert e.status == -42
    assert str(e) == "ZX_ERR_IO_DATA_INTEGRITY (-42)"
    assert str(zx.ZxError(zx.ZX_ERR_BAD_STATE)) == "ZX_ERR_BAD_STATE (-20)"
    fault = zx.PageFault(synth_code=zx.ZX_ERR_NOT_FOUND)
    assert (fault.synth_code, fault.offset) == (zx.ZX_ERR_NOT_FOUND, 0)


def test_constants_have_zircons_values():
    assert (zx.ZX_ERR_IO, zx.ZX_ERR_IO_DATA_INTEGRITY, zx.ZX_ERR_NO_SPACE) == (-40, -42, -54)
    assert (zx.ZX_RIGHT_ATTACH_VMO, zx.ZX_RIGHT_MANAGE_VMO) == (1 << 23, 1 << 24)
    assert zx.ZX_TIME_INFINITE == 2**63 - 1
    assert zx.ZX_PKT_TYPE_PAGE_REQUEST == 9
    assert zx.PAGE_SIZE == 4096


# --- handles and rights --------------------------------------------------------------------
def test_default_rights(status_of):
    pager = zx.zx_pager_create(0)
    port = zx.zx_port_create(0)
    vmo = zx.zx_pager_create_vmo(pager, 0, port, 0, PAGE)
    plain = zx.zx_vmo_create(PAGE, 0)
    assert rights_of(pager) == (zx.ZX_RIGHT_INSPECT | zx.ZX_RIGHT_TRANSFER
                                | zx.ZX_RIGHT_ATTACH_VMO | zx.ZX_RIGHT_MANAGE_VMO)
    assert rights_of(port) & ~zx.ZX_RIGHT_WAIT == (
        zx.ZX_RIGHT_DUPLICATE | zx.ZX_RIGHT_TRANSFER | zx.ZX_RIGHT_INSPECT
        | zx.ZX_RIGHT_READ | zx.ZX_RIGHT_WRITE)
    vmo_rights = (zx.ZX_RIGHT_DUPLICATE | zx.ZX_RIGHT_TRANSFER | zx.ZX_RIGHT_READ
                  | zx.ZX_RIGHT_WRITE | zx.ZX_RIGHT_MAP | zx.ZX_RIGHT_INSPECT)
    for h in (vmo, plain):
        assert rights_of(h) & vmo_rights == vmo_rights
        assert not rights_of(h) & (zx.ZX_RIGHT_ATTACH_VMO | zx.ZX_RIGHT_MANAGE_VMO)
    # The pager handle cannot be duplicated.
    assert status_of(zx.zx_handle_duplicate, pager, zx.ZX_RIGHT_SAME_RIGHTS) == \
        zx.ZX_ERR_ACCESS_DENIED
    for h in (pager, port, vmo, plain):
        zx.zx_handle_close(h)


def test_handle_values_and_close(status_of):
    vmo = zx.zx_vmo_create(PAGE, 0)
    assert vmo > 0
    zx.zx_handle_close(zx.ZX_HANDLE_INVALID)  # a no-op
    zx.zx_handle_close(vmo)
    assert status_of(zx.zx_handle_close, vmo) == zx.ZX_ERR_BAD_HANDLE
    assert status_of(zx.zx_vmo_read, vmo, 0, 1) == zx.ZX_ERR_BAD_HANDLE
    assert status_of(zx.zx_vmo_read, 0x7FFFFFF3, 0, 1) == zx.ZX_ERR_BAD_HANDLE


def test_duplicate_and_replace(status_of):
    vmo = zx.zx_vmo_create(PAGE, 0)
    ro = zx.zx_handle_duplicate(vmo, zx.ZX_RIGHT_READ | zx.ZX_RIGHT_DUPLICATE)
    assert rights_of(ro) == zx.ZX_RIGHT_READ | zx.ZX_RIGHT_DUPLICATE
    # more rights than the source has
    assert status_of(zx.zx_handle_duplicate, ro, zx.ZX_RIGHT_WRITE) == zx.ZX_ERR_INVALID_ARGS
    # no DUPLICATE right on the source
    bare = zx.zx_handle_duplicate(vmo, zx.ZX_RIGHT_READ)
    assert status_of(zx.zx_handle_duplicate, bare, zx.ZX_RIGHT_READ) == zx.ZX_ERR_ACCESS_DENIED
    # replace: a new handle with fewer rights, the old one gone
    replaced = zx.zx_handle_replace(ro, zx.ZX_RIGHT_READ)
    assert replaced != ro and rights_of(replaced) == zx.ZX_RIGHT_READ
    assert status_of(zx.zx_handle_close, ro) == zx.ZX_ERR_BAD_HANDLE
    # a failed replace (more rights) still consumes the handle, as in Zircon
    assert status_of(zx.zx_handle_replace, replaced, zx.ZX_RIGHT_WRITE) == zx.ZX_ERR_INVALID_ARGS
    assert status_of(zx.zx_handle_close, replaced) == zx.ZX_ERR_BAD_HANDLE
    # the object lives while a handle remains
    zx.zx_vmo_write(vmo, b"x", 0)
    assert zx.zx_vmo_read(bare, 0, 1) == b"x"
    for h in (vmo, bare):
        zx.zx_handle_close(h)


def test_wrong_type_wins_over_missing_rights(status_of):
    port = zx.zx_port_create(0)
    ro_port = zx.zx_handle_duplicate(port, zx.ZX_RIGHT_INSPECT)
    # a port without READ passed as a VMO: WRONG_TYPE, not ACCESS_DENIED
    assert status_of(zx.zx_vmo_read, ro_port, 0, 0) == zx.ZX_ERR_WRONG_TYPE
    assert status_of(zx.zx_port_wait, ro_port, 0) == zx.ZX_ERR_ACCESS_DENIED
    for h in (port, ro_port):
        zx.zx_handle_close(h)


def test_vmo_rights_for_read_write_commit(pager, status_of):
    vmo = pager.create_vmo(1)
    pager.supply_pages(vmo, 0, 1)
    no_read = zx.zx_handle_duplicate(vmo.handle, zx.ZX_DEFAULT_VMO_RIGHTS & ~zx.ZX_RIGHT_READ)
    no_write = zx.zx_handle_duplicate(vmo.handle, zx.ZX_DEFAULT_VMO_RIGHTS & ~zx.ZX_RIGHT_WRITE)
    assert status_of(zx.zx_vmo_read, no_read, 0, 1) == zx.ZX_ERR_ACCESS_DENIED
    assert status_of(zx.zx_vmo_op_range, no_write, zx.ZX_VMO_OP_COMMIT, 0, PAGE) == \
        zx.ZX_ERR_ACCESS_DENIED
    assert status_of(zx.zx_vmo_write, no_write, b"x", 0) == zx.ZX_ERR_ACCESS_DENIED
    assert zx.zx_vmo_read(no_write, 0, 16) == vmo.expected(0, 1)[:16]
    for h in (no_read, no_write):
        zx.zx_handle_close(h)


# --- zx_pager_op_range ---------------------------------------------------------------------
def reduced(handle: int, drop: int) -> int:
    """A handle to the same object without the `drop` rights (replace works on a pager)."""
    dup = zx.zx_handle_duplicate(handle, zx.ZX_RIGHT_SAME_RIGHTS) \
        if rights_of(handle) & zx.ZX_RIGHT_DUPLICATE else None
    source = dup if dup is not None else handle
    return zx.zx_handle_replace(source, rights_of(source) & ~drop)


def test_op_range_check_order(pager, status_of):
    vmo = pager.create_vmo(2)
    fail = zx.ZX_PAGER_OP_FAIL
    io = zx.ZX_ERR_IO
    op = zx.zx_pager_op_range
    # 1: alignment comes first, even before a bad handle
    assert status_of(op, 0, fail, 0, 1, 0, io) == zx.ZX_ERR_INVALID_ARGS
    assert status_of(op, 0, fail, 0, 0, PAGE + 1, io) == zx.ZX_ERR_INVALID_ARGS
    assert status_of(op, 0, fail, 0, -PAGE, 0, io) == zx.ZX_ERR_INVALID_ARGS
    assert status_of(op, 0, fail, 0, U64, 0, io) == zx.ZX_ERR_INVALID_ARGS
    # 5 after 4 after 3 after 2: handles before the op, the op before the data
    plain = zx.zx_vmo_create(PAGE, 0)
    assert status_of(op, pager.pager, 99, plain, 0, 0, 0) == zx.ZX_ERR_INVALID_ARGS
    assert status_of(op, pager.pager, 99, vmo.handle, 0, 0, 0) == zx.ZX_ERR_NOT_SUPPORTED
    # 6 before 7: bad data wins over an out-of-range range
    assert status_of(op, pager.pager, fail, vmo.handle, 8 * PAGE, PAGE, 0) == \
        zx.ZX_ERR_INVALID_ARGS
    assert status_of(op, pager.pager, fail, vmo.handle, 8 * PAGE, PAGE, io) == \
        zx.ZX_ERR_OUT_OF_RANGE
    # 7: offset + length overflowing
    assert status_of(op, pager.pager, fail, vmo.handle, U64 - PAGE, 2 * PAGE, io) == \
        zx.ZX_ERR_OUT_OF_RANGE
    zx.zx_handle_close(plain)


def test_op_range_rights(pager, status_of):
    vmo = pager.create_vmo(1)
    op = zx.zx_pager_op_range
    fail, io = zx.ZX_PAGER_OP_FAIL, zx.ZX_ERR_IO
    no_write = zx.zx_handle_duplicate(vmo.handle, zx.ZX_DEFAULT_VMO_RIGHTS & ~zx.ZX_RIGHT_WRITE)
    assert status_of(op, pager.pager, fail, no_write, 0, PAGE, io) == zx.ZX_ERR_ACCESS_DENIED
    # the pager's MANAGE_VMO is checked before the VMO handle
    weak_pager = zx.zx_handle_replace(pager.pager, zx.ZX_DEFAULT_PAGER_RIGHTS
                                      & ~zx.ZX_RIGHT_MANAGE_VMO)
    pager.pager = weak_pager
    assert status_of(op, weak_pager, fail, 0, 0, PAGE, io) == zx.ZX_ERR_ACCESS_DENIED
    assert status_of(zx.zx_pager_supply_pages, weak_pager, vmo.handle, 0, 0, 0, 0) == \
        zx.ZX_ERR_ACCESS_DENIED
    zx.zx_handle_close(no_write)


@pytest.mark.parametrize("data", [zx.ZX_ERR_NO_SPACE, zx.ZX_OK, 100, 0x11FFFFFFFF,
                                  zx.ZX_ERR_INTERNAL, 2**64, -(2**63) - 1, 2**31 - 40,
                                  -(2**31) - 1, "x", 1.0, None],
                         ids=repr)
def test_op_range_rejects_data(pager, data, status_of):
    vmo = pager.create_vmo(1)
    assert status_of(zx.zx_pager_op_range, pager.pager, zx.ZX_PAGER_OP_FAIL, vmo.handle,
                     0, PAGE, data) == zx.ZX_ERR_INVALID_ARGS


@pytest.mark.parametrize("data,status", [
    (-40, zx.ZX_ERR_IO),
    (0xFFFFFFFFFFFFFFD8, zx.ZX_ERR_IO),
    (-42, zx.ZX_ERR_IO_DATA_INTEGRITY),
    (2**64 - 42, zx.ZX_ERR_IO_DATA_INTEGRITY),
    (2**64 - 20, zx.ZX_ERR_BAD_STATE),
], ids=repr)
def test_op_range_data_is_int64(pager, spawn, data, status):
    vmo = pager.create_vmo(1)
    t = spawn(lambda: vmo.check(0, 1, False))
    assert pager.wait_for_page_read(vmo, 0, 1)
    zx.zx_pager_op_range(pager.pager, zx.ZX_PAGER_OP_FAIL, vmo.handle, 0, PAGE, data)
    assert t.wait_for_failure(status)


def test_fail_of_nothing_is_ok(pager, spawn):
    vmo = pager.create_vmo(4)
    t = spawn(lambda: vmo.check(1, 2, False))
    assert pager.wait_for_page_read(vmo, 1, 2)
    pager.fail_pages(vmo, 0, 1)  # meets no request
    pager.fail_pages(vmo, 3, 1)
    pager.fail_pages(vmo, 2, 0)  # zero length, inside the request
    assert t.is_blocked()
    pager.supply_pages(vmo, 1, 2)
    assert t.wait()


def test_fail_whole_request_even_if_joiner_page_supplied(pager, spawn):
    """The seed's kernel: a thread that joined a request for its first page fails with
    the request, even though its own page was supplied before the FAIL."""
    vmo = pager.create_vmo(4)
    a = spawn(lambda: vmo.check(0, 4, False))
    assert pager.wait_for_page_read(vmo, 0, 4)
    b = spawn(lambda: vmo.check(2, 1, False))
    assert b.wait_for_blocked()
    assert pager.get_page_read_request(vmo, timeout=0) is None  # b joined, no packet
    pager.supply_pages(vmo, 2, 1)
    assert b.is_blocked()  # the request still lacks pages 0, 1, 3
    pager.fail_pages(vmo, 0, 1, zx.ZX_ERR_IO_DATA_INTEGRITY)
    assert a.wait_for_failure(zx.ZX_ERR_IO_DATA_INTEGRITY)
    assert b.wait_for_failure(zx.ZX_ERR_IO_DATA_INTEGRITY)
    # Nothing is remembered: page 2 stays, page 0 is asked for again.
    assert vmo.check(2, 1, False)
    c = spawn(lambda: vmo.check(0, 1, False))
    assert pager.wait_for_page_read(vmo, 0, 1)
    pager.supply_pages(vmo, 0, 1)
    assert c.wait()


def test_fail_after_close_pager_is_not_possible_but_detached_fail_is_ok(pager):
    vmo = pager.create_vmo(1)
    pager.detach_vmo(vmo)
    pager.fail_pages(vmo, 0, PAGE // PAGE)  # OK, nothing happens
    assert pager.wait_for_page_complete(vmo.key)


# --- page requests ---------------------------------------------------------------------------
def test_request_stops_before_present_page(pager, spawn):
    vmo = pager.create_vmo(8)
    pager.supply_pages(vmo, 3, 1)
    t = spawn(lambda: vmo.check(1, 6, False))
    assert pager.wait_for_page_read(vmo, 1, 2)
    pager.supply_pages(vmo, 1, 2)
    assert pager.wait_for_page_read(vmo, 4, 3)
    pager.supply_pages(vmo, 4, 3)
    assert t.wait()


def test_request_stops_before_outstanding_request_then_joins(pager, spawn):
    vmo = pager.create_vmo(8)
    a = spawn(lambda: vmo.check(4, 2, False))
    assert pager.wait_for_page_read(vmo, 4, 2)
    b = spawn(lambda: vmo.check(0, 8, False))
    assert pager.wait_for_page_read(vmo, 0, 4)  # stops before a's request
    pager.supply_pages(vmo, 0, 4)
    assert b.wait_for_blocked()
    # b now needs page 4, inside a's outstanding request: it joins, no new packet
    assert pager.get_page_read_request(vmo, timeout=0) is None
    pager.supply_pages(vmo, 4, 2)
    assert a.wait()
    assert pager.wait_for_page_read(vmo, 6, 2)
    pager.supply_pages(vmo, 6, 2)
    assert b.wait()


def test_packet_withdrawn_when_request_completes_first(pager, spawn):
    vmo = pager.create_vmo(2)
    t = spawn(lambda: vmo.check(0, 2, False))
    assert t.wait_for_blocked()
    pager.supply_pages(vmo, 0, 2)
    assert t.wait()
    assert pager.get_page_read_request(vmo, timeout=0) is None
    # likewise when it fails before the pager looked
    t = spawn(lambda: vmo.commit(0, 2))
    assert t.wait()
    vmo2 = pager.create_vmo(1)
    t = spawn(lambda: vmo2.commit(0, 1))
    assert t.wait_for_blocked()
    pager.fail_pages(vmo2, 0, 1)
    assert t.wait_for_failure(zx.ZX_ERR_IO)
    assert pager.get_page_read_request(vmo2, timeout=0) is None


def test_read_beyond_size(pager, status_of):
    vmo = pager.create_vmo(2)
    h = vmo.handle
    assert status_of(zx.zx_vmo_read, h, PAGE, PAGE + 1) == zx.ZX_ERR_OUT_OF_RANGE
    assert status_of(zx.zx_vmo_read, h, U64 - 1, 2) == zx.ZX_ERR_OUT_OF_RANGE
    assert status_of(zx.zx_vmo_op_range, h, zx.ZX_VMO_OP_COMMIT, PAGE, 2 * PAGE) == \
        zx.ZX_ERR_OUT_OF_RANGE
    assert zx.zx_vmo_read(h, 2 * PAGE, 0) == b""
    assert pager.get_page_read_request(vmo, timeout=0) is None


# --- supply ---------------------------------------------------------------------------------
def test_supply_check_order(pager, status_of):
    vmo = pager.create_vmo(2)
    aux = zx.zx_vmo_create(PAGE, 0)
    supply = zx.zx_pager_supply_pages
    p, v = pager.pager, vmo.handle
    # alignment before handles
    assert status_of(supply, 0, 0, 0, 0, 0, 1) == zx.ZX_ERR_INVALID_ARGS
    # pager mismatch before the aux handle
    other = zx.zx_pager_create(0)
    assert status_of(supply, other, v, 0, 0, 0, 0) == zx.ZX_ERR_INVALID_ARGS
    # aux rights before aux type
    port_vmo = zx.zx_pager_create_vmo(p, 0, pager.port, 99, PAGE)
    ro = zx.zx_handle_duplicate(port_vmo, zx.ZX_RIGHT_READ)
    assert status_of(supply, p, v, 0, PAGE, ro, 0) == zx.ZX_ERR_ACCESS_DENIED
    assert status_of(supply, p, v, 0, PAGE, port_vmo, 0) == zx.ZX_ERR_NOT_SUPPORTED
    # aux range before the pager VMO's range
    assert status_of(supply, p, v, 4 * PAGE, PAGE, aux, PAGE) == zx.ZX_ERR_OUT_OF_RANGE
    assert status_of(supply, p, v, 4 * PAGE, PAGE, aux, 0) == zx.ZX_ERR_OUT_OF_RANGE
    # ranges before the detached check
    pager.detach_vmo(vmo)
    assert status_of(supply, p, v, 4 * PAGE, PAGE, aux, 0) == zx.ZX_ERR_OUT_OF_RANGE
    assert status_of(supply, p, v, 0, PAGE, aux, 0) == zx.ZX_ERR_BAD_STATE
    for h in (aux, other, port_vmo, ro):
        zx.zx_handle_close(h)


def test_supply_moves_pages_and_short_tail(pager):
    vmo = pager.create_vmo(4)
    aux = zx.zx_vmo_create(4 * PAGE, 0)
    data = bytes(range(256)) * 40  # 10240 bytes: two pages and a short tail
    zx.zx_vmo_write(aux, data, 0)
    assert zx.zx_object_get_info(aux, zx.ZX_INFO_VMO).committed_bytes == 3 * PAGE
    zx.zx_pager_supply_pages(pager.pager, vmo.handle, 0, 4 * PAGE, aux, 0)
    # the aux VMO gave its pages away
    assert zx.zx_vmo_read(aux, 0, 4 * PAGE) == bytes(4 * PAGE)
    assert zx.zx_object_get_info(aux, zx.ZX_INFO_VMO).committed_bytes == 0
    # missing bytes and the never-committed fourth page read as zeros
    got = zx.zx_vmo_read(vmo.handle, 0, 4 * PAGE)
    assert got == data + bytes(4 * PAGE - len(data))
    assert zx.zx_object_get_info(vmo.handle, zx.ZX_INFO_VMO).committed_bytes == 4 * PAGE
    zx.zx_handle_close(aux)


def test_supply_with_aux_offset_touches_only_its_range(pager):
    a = pager.create_vmo(4)
    b = pager.create_vmo(4)
    pager.supply_pages(b, 0, 4)
    aux = zx.zx_vmo_create(8 * PAGE, 0)
    zx.zx_vmo_write(aux, b"\x11" * PAGE + b"\x22" * PAGE, 5 * PAGE)
    zx.zx_pager_supply_pages(pager.pager, a.handle, 2 * PAGE, 2 * PAGE, aux, 5 * PAGE)
    assert zx.zx_vmo_read(a.handle, 2 * PAGE, 2 * PAGE) == b"\x11" * PAGE + b"\x22" * PAGE
    assert b.check(0, 4, False)
    zx.zx_handle_close(aux)


def test_huge_vmo_is_sparse(pager):
    tib = 1 << 40
    vmo = pager.create_vmo(tib // PAGE)
    assert zx.zx_vmo_get_size(vmo.handle) == tib
    info = zx.zx_object_get_info(vmo.handle, zx.ZX_INFO_VMO)
    assert (info.size_bytes, info.committed_bytes) == (tib, 0)
    pager.supply_pages(vmo, tib // PAGE - 1, 1)
    assert vmo.check(tib // PAGE - 1, 1, False)
    assert zx.zx_object_get_info(vmo.handle, zx.ZX_INFO_VMO).committed_bytes == PAGE


# --- plain VMOs -----------------------------------------------------------------------------
def test_plain_vmo_read_write_decommit(status_of):
    vmo = zx.zx_vmo_create(3 * PAGE + 1, 0)
    assert zx.zx_vmo_get_size(vmo) == 4 * PAGE  # rounded up to a page
    assert zx.zx_vmo_read(vmo, 0, 4 * PAGE) == bytes(4 * PAGE)
    buf = bytearray(b"abc" * 3000)
    zx.zx_vmo_write(vmo, buf, 100)
    buf[0:3] = b"zzz"  # the VMO copied what the caller can change
    zx.zx_vmo_write(vmo, b"XY", PAGE - 1)  # straddles a page boundary
    expect = bytearray(4 * PAGE)
    expect[100:9100] = b"abc" * 3000
    expect[PAGE - 1:PAGE + 1] = b"XY"
    assert zx.zx_vmo_read(vmo, 0, 4 * PAGE) == bytes(expect)
    assert zx.zx_vmo_read(vmo, PAGE - 2, 4) == bytes(expect[PAGE - 2:PAGE + 2])
    zx.zx_vmo_op_range(vmo, zx.ZX_VMO_OP_DECOMMIT, PAGE, PAGE)
    expect[PAGE:2 * PAGE] = bytes(PAGE)
    assert zx.zx_vmo_read(vmo, 0, 4 * PAGE) == bytes(expect)
    zx.zx_vmo_op_range(vmo, zx.ZX_VMO_OP_COMMIT, 0, 4 * PAGE)
    assert zx.zx_object_get_info(vmo, zx.ZX_INFO_VMO).committed_bytes == 4 * PAGE
    assert zx.zx_vmo_read(vmo, 0, 4 * PAGE) == bytes(expect)
    assert status_of(zx.zx_vmo_op_range, vmo, 99, 0, PAGE) == zx.ZX_ERR_INVALID_ARGS
    assert status_of(zx.zx_vmo_write, vmo, b"x", 4 * PAGE) == zx.ZX_ERR_OUT_OF_RANGE
    assert status_of(zx.zx_vmo_create, PAGE, 1) == zx.ZX_ERR_INVALID_ARGS
    zx.zx_handle_close(vmo)


def test_write_to_pager_vmo_faults_pages_in(pager, spawn):
    vmo = pager.create_vmo(2)
    t = spawn(lambda: zx.zx_vmo_write(vmo.handle, b"hello", PAGE - 2) is None)
    assert pager.wait_for_page_read(vmo, 0, 2)
    pager.supply_pages(vmo, 0, 2)
    assert t.wait()
    expect = bytearray(vmo.expected(0, 2))
    expect[PAGE - 2:PAGE + 3] = b"hello"
    assert zx.zx_vmo_read(vmo.handle, 0, 2 * PAGE) == bytes(expect)


# --- detach and close ---------------------------------------------------------------------------
def test_detached_vmo_keeps_present_pages(pager, status_of):
    vmo = pager.create_vmo(2)
    pager.supply_pages(vmo, 0, 1)
    pager.detach_vmo(vmo)
    assert vmo.check(0, 1, False)
    assert status_of(zx.zx_vmo_read, vmo.handle, 0, 2 * PAGE) == zx.ZX_ERR_BAD_STATE
    assert status_of(zx.zx_vmo_op_range, vmo.handle, zx.ZX_VMO_OP_COMMIT, PAGE, PAGE) == \
        zx.ZX_ERR_BAD_STATE
    with pytest.raises(zx.PageFault) as e:
        vmo.map().read(0, 2 * PAGE)
    assert (e.value.synth_code, e.value.offset) == (zx.ZX_ERR_BAD_STATE, PAGE)
    assert pager.get_page_read_request(vmo, timeout=0) is None


def test_close_last_handle_detaches_waiters(pager, spawn):
    vmo = pager.create_vmo(1)
    dup = zx.zx_handle_duplicate(vmo.handle, zx.ZX_RIGHT_SAME_RIGHTS)
    t = spawn(lambda: zx.zx_vmo_read(dup, 0, PAGE) is not None)
    assert pager.wait_for_page_read(vmo, 0, 1)
    zx.zx_handle_close(vmo.handle)
    assert t.is_blocked()  # another handle remains
    zx.zx_handle_close(dup)
    assert t.wait_for_failure(zx.ZX_ERR_BAD_STATE)
    assert pager.wait_for_page_complete(vmo.key)
    assert not pager.wait_for_page_complete(vmo.key, timeout=0)
    pager.vmos.remove(vmo)


def test_close_pager_sends_no_complete(pager, spawn):
    vmos = [pager.create_vmo(1) for _ in range(3)]
    threads = [spawn(lambda v=v: v.commit(0, 1)) for v in vmos]
    for t in threads:
        assert t.wait_for_blocked()
    pager.close_pager_handle()
    for t in threads:
        assert t.wait_for_failure(zx.ZX_ERR_BAD_STATE)
    for v in vmos:
        pager.release_vmo(v)
    pager.vmos.clear()
    for _ in range(3):
        packet = pager._next_packet(lambda p: True, 0)
        assert packet is None or packet.page_request.command == zx.ZX_PAGER_VMO_READ


# --- ports -------------------------------------------------------------------------------------
def test_port_wait_deadlines(status_of):
    port = zx.zx_port_create(0)
    assert status_of(zx.zx_port_wait, port, 0) == zx.ZX_ERR_TIMED_OUT
    assert status_of(zx.zx_port_wait, port, -5) == zx.ZX_ERR_TIMED_OUT
    start = zx.zx_clock_get_monotonic()
    assert status_of(zx.zx_port_wait, port, zx.zx_deadline_after(20_000_000)) == \
        zx.ZX_ERR_TIMED_OUT
    assert zx.zx_clock_get_monotonic() - start >= 20_000_000
    assert zx.zx_deadline_after(zx.ZX_TIME_INFINITE) == zx.ZX_TIME_INFINITE
    assert status_of(zx.zx_port_wait, port, "soon") == zx.ZX_ERR_INVALID_ARGS
    assert status_of(zx.zx_port_create, 1) == zx.ZX_ERR_INVALID_ARGS
    zx.zx_handle_close(port)


def test_port_wait_infinite_wakes_on_packet(pager):
    vmo = pager.create_vmo(1)
    got = []
    waiter = threading.Thread(target=lambda: got.append(
        zx.zx_port_wait(pager.port, zx.ZX_TIME_INFINITE)))
    waiter.start()
    zx.zx_handle_close(vmo.handle)  # queues COMPLETE
    pager.vmos.remove(vmo)
    waiter.join(30)
    assert got and got[0].key == vmo.key
    assert got[0].page_request.command == zx.ZX_PAGER_VMO_COMPLETE


# --- mappings --------------------------------------------------------------------------------
def test_mapping_faults(pager, spawn):
    vmo = pager.create_vmo(3)
    mapping = zx.zx_vmar_map(zx.zx_vmar_root_self(), zx.ZX_VM_PERM_READ, 0, vmo.handle,
                             PAGE, 2 * PAGE)
    pager.supply_pages(vmo, 1, 1)
    # one page at a time: the first absent page asks for exactly one page
    t = spawn(lambda: mapping.read(PAGE - 10, 20) == vmo.expected(1, 2)[PAGE - 10:PAGE + 10])
    assert pager.wait_for_page_read(vmo, 2, 1)
    pager.fail_pages(vmo, 2, 1, zx.ZX_ERR_IO_DATA_INTEGRITY)
    assert t.wait_for_crash(PAGE, zx.ZX_ERR_IO_DATA_INTEGRITY)
    # outside the mapping
    with pytest.raises(zx.PageFault) as e:
        mapping.read(2 * PAGE, 1)
    assert e.value.synth_code == zx.ZX_ERR_NOT_FOUND
    # the bytes inside are touched first, then the fault past the end
    pager.supply_pages(vmo, 2, 1)
    with pytest.raises(zx.PageFault) as e:
        mapping.read(PAGE // 2, 2 * PAGE)
    assert (e.value.synth_code, e.value.offset) == (zx.ZX_ERR_NOT_FOUND, 2 * PAGE)
    assert mapping.read(PAGE // 2, PAGE) == vmo.expected(1, 2)[PAGE // 2:PAGE // 2 + PAGE]
    mapping.unmap()
    with pytest.raises(zx.PageFault) as e:
        mapping.read(0, 1)
    assert e.value.synth_code == zx.ZX_ERR_NOT_FOUND


def test_map_checks(pager, status_of):
    vmo = pager.create_vmo(1)
    root = zx.zx_vmar_root_self()
    no_map = zx.zx_handle_duplicate(vmo.handle, zx.ZX_DEFAULT_VMO_RIGHTS & ~zx.ZX_RIGHT_MAP)
    assert status_of(zx.zx_vmar_map, root, zx.ZX_VM_PERM_READ, 0, no_map, 0, PAGE) == \
        zx.ZX_ERR_ACCESS_DENIED
    assert status_of(zx.zx_vmar_map, vmo.handle, zx.ZX_VM_PERM_READ, 0, vmo.handle, 0,
                     PAGE) == zx.ZX_ERR_WRONG_TYPE
    assert status_of(zx.zx_vmar_map, root, zx.ZX_VM_PERM_READ, 0, vmo.handle, 1, PAGE) == \
        zx.ZX_ERR_INVALID_ARGS
    assert status_of(zx.zx_vmar_map, root, zx.ZX_VM_PERM_READ, 0, vmo.handle, 0, 0) == \
        zx.ZX_ERR_INVALID_ARGS
    zx.zx_handle_close(no_map)


# --- bad input never escapes as a Python exception ------------------------------------------
BAD_INTS = [-1, 2**64, 1.5, "7", None, b"\x00", [], object()]


def test_bad_arguments_are_zx_errors(pager):
    vmo = pager.create_vmo(1)
    p, v = pager.pager, vmo.handle
    aux = zx.zx_vmo_create(PAGE, 0)
    calls = [
        lambda x: zx.zx_vmo_read(v, x, 1),
        lambda x: zx.zx_vmo_read(v, 0, x),
        lambda x: zx.zx_vmo_write(aux, b"a", x),
        lambda x: zx.zx_vmo_write(aux, x, 0) if x is not None and not isinstance(
            x, (bytes,)) else zx.zx_vmo_write(aux, object(), 0),
        lambda x: zx.zx_vmo_op_range(aux, zx.ZX_VMO_OP_COMMIT, x, PAGE),
        lambda x: zx.zx_vmo_op_range(aux, x, 0, PAGE),
        lambda x: zx.zx_vmo_create(x, 0),
        lambda x: zx.zx_vmo_create(PAGE, x),
        lambda x: zx.zx_pager_create(x),
        lambda x: zx.zx_pager_create_vmo(p, 0, pager.port, x, PAGE),
        lambda x: zx.zx_pager_create_vmo(p, 0, pager.port, 0, x),
        lambda x: zx.zx_pager_supply_pages(p, v, x, 0, aux, 0),
        lambda x: zx.zx_pager_supply_pages(p, v, 0, x, aux, 0),
        lambda x: zx.zx_pager_supply_pages(p, v, 0, 0, aux, x),
        lambda x: zx.zx_pager_op_range(p, zx.ZX_PAGER_OP_FAIL, v, x, 0, zx.ZX_ERR_IO),
        lambda x: zx.zx_pager_op_range(p, zx.ZX_PAGER_OP_FAIL, v, 0, 0, x),
        lambda x: zx.zx_pager_op_range(p, x, v, 0, 0, zx.ZX_ERR_IO),
        lambda x: zx.zx_port_wait(pager.port, x),
        lambda x: zx.zx_handle_duplicate(aux, x),
        lambda x: zx.zx_vmar_map(zx.zx_vmar_root_self(), x, 0, v, 0, PAGE),
        lambda x: zx.zx_vmar_map(zx.zx_vmar_root_self(), 1, 0, v, x, PAGE),
        lambda x: zx.zx_object_get_info(v, x),
        lambda x: zx.scanner_evict(v, x, PAGE),
        lambda x: zx.scanner_set_limit(x) if x is not None else zx.scanner_set_limit(-1),
        lambda x: vmo.map().read(x, 1),
        # handles of the wrong Python type
        lambda x: zx.zx_vmo_read(x, 0, 0),
        lambda x: zx.zx_handle_close(x) if x is not None else zx.zx_handle_close("h"),
        lambda x: zx.zx_pager_supply_pages(x, v, 0, 0, aux, 0),
        lambda x: zx.zx_pager_op_range(p, 1, x, 0, 0, zx.ZX_ERR_IO),
    ]
    for i, call in enumerate(calls):
        for bad in BAD_INTS:
            try:
                call(bad)
            except zx.ZxError as e:
                assert e.status in (zx.ZX_ERR_INVALID_ARGS, zx.ZX_ERR_BAD_HANDLE,
                                    zx.ZX_ERR_OUT_OF_RANGE, zx.ZX_ERR_NOT_SUPPORTED,
                                    zx.ZX_ERR_TIMED_OUT), (i, bad, e)
            except zx.PageFault as e:
                assert e.synth_code == zx.ZX_ERR_NOT_FOUND, (i, bad)
            else:
                # only a value that is a valid argument may succeed (none of these is)
                pytest.fail(f"call {i} accepted {bad!r}")
    zx.scanner_set_limit(None)
    # and nothing of that disturbed the VMO
    assert pager.get_page_read_request(vmo, timeout=0) is None
    zx.zx_handle_close(aux)


def test_blocked_reader_blocks_only_itself(pager, spawn):
    vmo = pager.create_vmo(3)
    pager.supply_pages(vmo, 1, 1)
    t = spawn(lambda: vmo.check(0, 1, False))
    assert t.wait_for_blocked()
    # The VMO is not locked by the waiting reader: present pages read at once, and
    # another reader of a different page raises its own request.
    assert vmo.check(1, 1, False)
    assert vmo.check(1, 1, True)
    u = spawn(lambda: vmo.check(2, 1, True))
    assert u.wait_for_blocked()
    assert {pager.get_page_read_request(vmo), pager.get_page_read_request(vmo)} == {
        (0, 1), (2, 1)}
    pager.supply_pages(vmo, 2, 1)
    assert u.wait()
    assert t.is_blocked()
    pager.supply_pages(vmo, 0, 1)
    assert t.wait()


def test_page_fault_is_the_fatal_page_fault_exception():
    fault = zx.PageFault(zx.ZX_ERR_IO, 8192)
    assert fault.type == zx.ZX_EXCP_FATAL_PAGE_FAULT == 0x108
    assert "ZX_ERR_IO (-40)" in str(fault)


def test_write_accepts_any_bytes_like_and_keeps_a_snapshot(status_of):
    import array

    vmo = zx.zx_vmo_create(PAGE, 0)
    cases = [
        (memoryview(b"abcdefgh")[::2], b"aceg"),  # strided
        (array.array("H", [0x0102, 0x0304]), array.array("H", [0x0102, 0x0304]).tobytes()),
        (memoryview(bytes(range(16))).cast("B", (4, 4)), bytes(range(16))),
        (memoryview(b"xyz"), b"xyz"),
        (bytearray(b"mutable"), b"mutable"),
    ]
    for data, expect in cases:
        zx.zx_vmo_write(vmo, data, 100)
        if isinstance(data, bytearray):
            data[0:1] = b"M"  # changing the caller's buffer afterwards changes nothing
        assert zx.zx_vmo_read(vmo, 100, len(expect)) == expect
    for bad in ("text", 5, None, [1, 2]):
        assert status_of(zx.zx_vmo_write, vmo, bad, 0) == zx.ZX_ERR_INVALID_ARGS
    zx.zx_handle_close(vmo)


def test_read_larger_than_memory_is_no_memory(pager, status_of):
    tib = 1 << 40
    plain = zx.zx_vmo_create(tib, 0)
    vmo = pager.create_vmo(tib // PAGE)
    assert status_of(zx.zx_vmo_read, plain, 0, tib) == zx.ZX_ERR_NO_MEMORY
    assert status_of(zx.zx_vmo_read, vmo.handle, 0, tib) == zx.ZX_ERR_NO_MEMORY
    with pytest.raises(zx.ZxError) as e:
        vmo.map().read(0, tib)
    assert e.value.status == zx.ZX_ERR_NO_MEMORY
    assert pager.get_page_read_request(vmo, timeout=0) is None  # no pager was asked
    zx.zx_handle_close(plain)
