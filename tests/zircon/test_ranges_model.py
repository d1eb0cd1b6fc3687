"""The extent store against a page-by-page model, through the syscalls: random writes,
commits, decommits, supplies and evictions must read back exactly as the model says."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pagerfs import zircon as zx

PAGE = zx.PAGE_SIZE
NPAGES = 12
SIZE = NPAGES * PAGE

offsets = st.integers(0, SIZE)
write_op = st.tuples(st.just("write"), offsets, st.integers(1, 3 * PAGE), st.integers(0, 255))
page_range = st.tuples(st.integers(0, NPAGES), st.integers(0, NPAGES)).map(sorted)
commit_op = st.tuples(st.just("commit"), page_range)
decommit_op = st.tuples(st.just("decommit"), page_range)
plain_ops = st.lists(st.one_of(write_op, commit_op, decommit_op), max_size=25)


@settings(max_examples=150, deadline=None)
@given(plain_ops)
def test_plain_vmo_matches_model(ops):
    vmo = zx.zx_vmo_create(SIZE, 0)
    model = bytearray(SIZE)
    committed = set()
    try:
        for op in ops:
            if op[0] == "write":
                _, off, n, byte = op
                n = min(n, SIZE - off)
                if n == 0:
                    continue
                data = bytes([byte]) * (n - 1) + bytes([(byte + 1) % 256])
                zx.zx_vmo_write(vmo, data, off)
                model[off:off + n] = data
                committed.update(range(off // PAGE, (off + n + PAGE - 1) // PAGE))
            elif op[0] == "commit":
                a, b = op[1]
                zx.zx_vmo_op_range(vmo, zx.ZX_VMO_OP_COMMIT, a * PAGE, (b - a) * PAGE)
                committed.update(range(a, b))
            else:
                a, b = op[1]
                zx.zx_vmo_op_range(vmo, zx.ZX_VMO_OP_DECOMMIT, a * PAGE, (b - a) * PAGE)
                model[a * PAGE:b * PAGE] = bytes((b - a) * PAGE)
                committed.difference_update(range(a, b))
            assert zx.zx_vmo_read(vmo, 0, SIZE) == bytes(model)
            info = zx.zx_object_get_info(vmo, zx.ZX_INFO_VMO)
            assert info.committed_bytes == len(committed) * PAGE
        # unaligned reads agree too
        for off in (1, PAGE - 1, PAGE + 7, SIZE - 5):
            assert zx.zx_vmo_read(vmo, off, SIZE - off) == bytes(model[off:])
    finally:
        zx.zx_handle_close(vmo)


aux_write = st.tuples(st.integers(0, NPAGES - 1), st.integers(1, 3 * PAGE), st.integers(1, 255))
supply_op = st.tuples(
    st.just("supply"), page_range, st.integers(0, NPAGES),
    st.lists(aux_write, max_size=3),
)
evict_op = st.tuples(st.just("evict"), page_range)
pager_ops = st.lists(st.one_of(supply_op, evict_op), max_size=20)


@settings(max_examples=150, deadline=None)
@given(pager_ops)
def test_pager_vmo_supply_and_evict_match_model(ops):
    pager = zx.zx_pager_create(0)
    port = zx.zx_port_create(0)
    vmo = zx.zx_pager_create_vmo(pager, 0, port, 1, SIZE)
    model: dict[int, bytes] = {}  # present page -> its bytes
    try:
        for op in ops:
            if op[0] == "supply":
                _, (a, b), aux_first, writes = op
                n = min(b - a, NPAGES - aux_first)
                aux = zx.zx_vmo_create(SIZE, 0)
                aux_model = bytearray(SIZE)
                for page, length, byte in writes:
                    length = min(length, SIZE - page * PAGE)
                    zx.zx_vmo_write(aux, bytes([byte]) * length, page * PAGE)
                    aux_model[page * PAGE:page * PAGE + length] = bytes([byte]) * length
                zx.zx_pager_supply_pages(pager, vmo, a * PAGE, n * PAGE, aux, aux_first * PAGE)
                for i in range(n):
                    src = (aux_first + i) * PAGE
                    # never overwrite a present page
                    model.setdefault(a + i, bytes(aux_model[src:src + PAGE]))
                    aux_model[src:src + PAGE] = bytes(PAGE)
                assert zx.zx_vmo_read(aux, 0, SIZE) == bytes(aux_model)
                zx.zx_handle_close(aux)
            else:
                a, b = op[1]
                dropped = zx.scanner_evict(vmo, a * PAGE, (b - a) * PAGE)
                assert dropped == sum(1 for p in range(a, b) if p in model)
                for p in range(a, b):
                    model.pop(p, None)
            info = zx.zx_object_get_info(vmo, zx.ZX_INFO_VMO)
            assert info.committed_bytes == len(model) * PAGE
            # every present run reads back as the model says, without a request
            for p, data in model.items():
                assert zx.zx_vmo_read(vmo, p * PAGE, PAGE) == data
        assert _no_packet(port)
    finally:
        for h in (vmo, port, pager):
            zx.zx_handle_close(h)


def _no_packet(port: int) -> bool:
    try:
        zx.zx_port_wait(port, 0)
    except zx.ZxError as e:
        return e.status == zx.ZX_ERR_TIMED_OUT
    return False
