"""The user pager against the real kernel model and a real image (no FUSE)."""

import contextlib
import logging
import os
import threading

import pytest
from hypothesis import given, settings, strategies as st

from pagerfs import zircon as zx
from pagerfs.pager.faults import parse_rule
from pagerfs.pager.user_pager import UserPager
from pagerfs.store import Image, build_image, corrupt

PAGE = 4096
CHUNK = 16 * 1024  # 4 pages a chunk


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    data = b"".join(os.urandom(2048) + bytes([i % 251]) * 2048 for i in range(64)) + b"tail"
    (root / "f").write_bytes(data)
    (root / "small").write_bytes(b"small file\n")
    image = tmp_path_factory.mktemp("img") / "i.img"
    build_image(str(root), str(image), chunk_size=CHUNK)
    return data, image


@pytest.fixture
def pager(source):
    image = Image.open(source[1])
    up = UserPager(image, threads=2)
    yield up
    up.stop()
    image.close()


@contextlib.contextmanager
def own_pager(image, **options):
    """A UserPager the test makes itself, stopped afterwards."""
    up = UserPager(image, **options)
    try:
        yield up
    finally:
        up.stop()


@contextlib.contextmanager
def file_vmo(up, name):
    """(ino, vmo) of a file opened through the pager, closed afterwards."""
    ino = up.image.resolve(name)
    vmo = up.open(ino)
    try:
        yield ino, vmo
    finally:
        up.close(ino)


def read_pages(vmo, first, count):
    return zx.zx_vmo_read(vmo, first * PAGE, count * PAGE)


def outcome(vmo, page, size):
    try:
        return zx.zx_vmo_read(vmo, page * PAGE, min(PAGE, size - page * PAGE))
    except zx.ZxError as err:
        return err.status


def test_serves_every_byte(pager, source):
    data, _ = source
    with file_vmo(pager, b"f") as (ino, vmo):
        assert zx.zx_vmo_read(vmo, 0, len(data)) == data
        stats = pager.stats.snapshot(ino)
        assert stats["pages_supplied"] == -(-len(data) // PAGE)
        assert pager.committed_pages(ino) == -(-len(data) // PAGE)
        assert pager.wait_idle(30)  # the pager thread may still hold the file a moment
    assert pager.committed_pages(ino) == 0  # closing the last opener frees the VMO


@pytest.mark.parametrize("error,status", [
    ("IO", zx.ZX_ERR_IO), ("IO_DATA_INTEGRITY", zx.ZX_ERR_IO_DATA_INTEGRITY),
    ("BAD_STATE", zx.ZX_ERR_BAD_STATE), ("corrupt", zx.ZX_ERR_IO_DATA_INTEGRITY)])
def test_only_the_rule_pages_fail_with_their_status(pager, source, error, status):
    data, _ = source
    with file_vmo(pager, b"f") as (ino, vmo):
        pager.add_fault(ino, parse_rule(f"pages=6-9 error={error}"))  # spans two chunks
        # One request over all of it fails as a whole (the contract's kernel) ...
        with pytest.raises(zx.ZxError) as info:
            read_pages(vmo, 0, 16)
        assert info.value.status == status
        # ... but every good page of it was supplied on the way.
        committed = pager.committed_pages(ino)
        for page in range(16):
            got = outcome(vmo, page, len(data))
            if 6 <= page <= 9:
                assert got == status, page
            else:
                assert got == data[page * PAGE:(page + 1) * PAGE], page
        assert pager.committed_pages(ino) == committed  # the good pages asked for nothing
        name = "IO_DATA_INTEGRITY" if error == "corrupt" else error
        assert set(pager.stats.snapshot(ino)["pages_failed"]) == {name}


def test_a_random_read_is_served_its_own_pages_and_a_stream_whole_chunks(pager, source):
    data, _ = source
    with file_vmo(pager, b"f") as (ino, vmo):
        # Page 9 starts no stream: only it is verified and supplied, not its chunk.
        assert read_pages(vmo, 9, 1) == data[9 * PAGE:10 * PAGE]
        assert pager.committed_pages(ino) == 1
        assert pager.stats.snapshot(ino)["pages_supplied"] == 1
        # Page 0 starts a stream: at least its whole chunk (pages 0-3) comes in.
        assert read_pages(vmo, 0, 1) == data[:PAGE]
        assert pager.wait_idle(30)
        assert pager.committed_pages(ino) >= 1 + 4


def test_adding_a_rule_evicts_present_pages(pager, source):
    data, _ = source
    with file_vmo(pager, b"f") as (ino, vmo):
        assert read_pages(vmo, 0, 8) == data[:8 * PAGE]
        pager.add_fault(ino, parse_rule("pages=2 error=IO"))
        assert outcome(vmo, 2, len(data)) == zx.ZX_ERR_IO
        assert pager.clear_faults(ino) == 0  # page 2 was absent: nothing to evict
        assert outcome(vmo, 2, len(data)) == data[2 * PAGE:3 * PAGE]


def test_real_damage_in_the_image_fails_exactly_the_damaged_pages(source, tmp_path):
    data, image = source
    damaged = tmp_path / "damaged.img"
    damaged.write_bytes(image.read_bytes())
    # The store's offline check says which pages are lost; the pager must agree.
    lost = {p for d in corrupt(str(damaged), b"f", 9) if d.path.lstrip(b"/") == b"f"
            for p in range(d.first_page, d.last_page + 1)}
    assert 9 in lost and lost <= set(range(8, 12))  # the damage stays in its chunk
    with (Image.open(damaged) as img,
          own_pager(img, threads=1) as up,
          file_vmo(up, b"f") as (ino, vmo)):
        for page in range(16):
            got = outcome(vmo, page, len(data))
            if page in lost:
                assert got == zx.ZX_ERR_IO_DATA_INTEGRITY, page
            else:
                assert got == data[page * PAGE:(page + 1) * PAGE], page


def test_unreadable_image_fails_with_zx_err_io(source, tmp_path):
    data, image = source
    copy = tmp_path / "copy.img"
    copy.write_bytes(image.read_bytes())
    with Image.open(copy) as img:
        os.truncate(copy, 4096)  # the data vanishes under the open image
        with own_pager(img, threads=1) as up, file_vmo(up, b"f") as (ino, vmo):
            assert outcome(vmo, 0, len(data)) == zx.ZX_ERR_IO
            assert up.stats.snapshot(ino)["pages_failed"]["IO"] >= 1


class BrokenImage:
    """A real image whose chunk reads hit a bug: the pager must not hang or die."""

    def __init__(self, image):
        self._image = image

    def __getattr__(self, name):
        return getattr(self._image, name)

    def read_chunk(self, ino, index, tamper=None):
        raise RuntimeError("a bug in the store")

    def read_chunk_pages(self, ino, index, first_page, npages, tamper=None):
        raise RuntimeError("a bug in the store")


def test_unexpected_errors_become_bad_state_and_a_log_line(source, caplog):
    data, image = source
    with (Image.open(image) as img,
          own_pager(BrokenImage(img), threads=1) as up,
          file_vmo(up, b"f") as (ino, vmo)):
        with caplog.at_level(logging.ERROR, logger="pagerfs.pager"):
            assert outcome(vmo, 3, len(data)) == zx.ZX_ERR_BAD_STATE
            assert outcome(vmo, 3, len(data)) == zx.ZX_ERR_BAD_STATE  # still serving
        assert "a bug in the store" in caplog.text


def test_budget_keeps_committed_pages_bounded(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    # 24 MiB, every page different, compressing well: larger than the 16 MiB budget.
    data = b"".join(i.to_bytes(4, "little") * 1024 for i in range(6 * 1024))
    (src / "large").write_bytes(data)
    build_image(str(src), str(tmp_path / "l.img"), chunk_size=128 * 1024)
    with (Image.open(tmp_path / "l.img") as img,
          own_pager(img, threads=2, budget=16 * 2**20) as up,
          file_vmo(up, b"large") as (ino, vmo)):
        for offset in range(0, len(data), 2**20):
            assert zx.zx_vmo_read(vmo, offset, 2**20) == data[offset:offset + 2**20]
            assert up.committed_pages() * PAGE <= 16 * 2**20
        # At least every page once: read-ahead racing the budget may supply a page,
        # see it evicted, and supply it again.
        supplied = up.stats.snapshot(ino)["pages_supplied"]
        assert supplied >= len(data) // PAGE
        # The first pages were evicted; reading them again asks the pager again.
        assert zx.zx_vmo_read(vmo, 0, PAGE) == data[:PAGE]
        assert up.stats.snapshot(ino)["pages_supplied"] > supplied
    with pytest.raises(ValueError):
        UserPager(None, budget=2**20)


def test_probability_rules_decide_the_same_way_for_a_seed(pager, source):
    data, _ = source
    ino = pager.image.resolve(b"f")

    def outcomes(rule):
        pager.add_fault(ino, parse_rule(rule))
        result = []
        for _ in range(32):
            vmo = pager.open(ino)  # a fresh VMO each time: every read is a request
            result.append(outcome(vmo, 5, len(data)) == zx.ZX_ERR_IO)
            pager.close(ino)
        pager.clear_faults(ino)
        return result

    first = outcomes("pages=5 error=IO probability=0.5 seed=11")
    assert first == outcomes("pages=5 error=IO probability=0.5 seed=11")
    assert first != outcomes("pages=5 error=IO probability=0.5 seed=12")
    assert 6 <= sum(first) <= 26


FAIL_KINDS = ["IO", "IO_DATA_INTEGRITY", "BAD_STATE", "corrupt"]
STATUS_OF = {"IO": zx.ZX_ERR_IO, "IO_DATA_INTEGRITY": zx.ZX_ERR_IO_DATA_INTEGRITY,
             "BAD_STATE": zx.ZX_ERR_BAD_STATE, "corrupt": zx.ZX_ERR_IO_DATA_INTEGRITY}


def expected_status(rules, page):
    """The model: the first FAIL rule added covering the page, else corrupt, else good."""
    for first, last, kind in rules:
        if first <= page <= last and kind != "corrupt":
            return STATUS_OF[kind]
    if any(first <= page <= last for first, last, kind in rules):
        return zx.ZX_ERR_IO_DATA_INTEGRITY
    return None


@settings(max_examples=25, deadline=None)
@given(rules=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 6), st.sampled_from(FAIL_KINDS)),
                      max_size=4),
       reads=st.lists(st.tuples(st.integers(0, 63), st.integers(1, 24)), min_size=1, max_size=6))
def test_any_rules_any_reads_match_the_page_model(source, rules, reads):
    data, image = source
    rules = [(first, first + span, kind) for first, span, kind in rules]
    npages = -(-len(data) // PAGE)
    with (Image.open(image) as img,
          own_pager(img, threads=2) as up,
          file_vmo(up, b"f") as (ino, vmo)):
        for first, last, kind in rules:
            up.add_fault(ino, parse_rule(f"pages={first}-{last} error={kind}"))
        # Reads of several pages: all good, or fail with the status of a bad page.
        for first, count in reads:
            count = min(count, npages - first)
            statuses = {expected_status(rules, p) for p in range(first, first + count)} - {None}
            try:
                got = zx.zx_vmo_read(vmo, first * PAGE, min(count * PAGE, len(data) - first * PAGE))
            except zx.ZxError as err:
                assert err.status in statuses
            else:
                assert not statuses and got == data[first * PAGE:first * PAGE + len(got)]
        # Afterwards, page by page, exactly the model.
        for page in range(npages):
            want = expected_status(rules, page)
            got = outcome(vmo, page, len(data))
            assert got == (want if want is not None else data[page * PAGE:(page + 1) * PAGE]), page


def test_a_read_at_the_start_reads_the_rest_ahead_once(pager, source):
    data, _ = source
    npages = -(-len(data) // PAGE)
    with file_vmo(pager, b"f") as (ino, vmo):
        assert read_pages(vmo, 0, 1) == data[:PAGE]
        assert pager.wait_idle(timeout=60)
        # The whole (small) file lies within the read-ahead window.
        assert pager.committed_pages(ino) == npages
        requests = pager.stats.snapshot(ino)["page_requests"]
        assert zx.zx_vmo_read(vmo, 0, len(data)) == data
        stats = pager.stats.snapshot(ino)
        assert stats["page_requests"] == requests  # nothing left to ask for
        assert stats["chunks_read"] == -(-npages // (CHUNK // PAGE))  # each chunk once


def test_read_ahead_leaves_a_rule_its_pages(pager, source):
    data, _ = source
    with file_vmo(pager, b"f") as (ino, vmo):
        pager.add_fault(ino, parse_rule("pages=41 error=IO"))
        assert read_pages(vmo, 0, 1) == data[:PAGE]
        assert pager.wait_idle(timeout=60)
        # The rule's chunk (pages 40-43) was skipped, so the rule acts on a real request.
        assert pager.committed_pages(ino) == -(-len(data) // PAGE) - 4
        assert outcome(vmo, 41, len(data)) == zx.ZX_ERR_IO
        assert outcome(vmo, 40, len(data)) == data[40 * PAGE:41 * PAGE]


def test_read_ahead_can_be_turned_off(source):
    data, path = source
    with (Image.open(path) as image,
          own_pager(image, threads=2, read_ahead=0) as up,
          file_vmo(up, b"f") as (ino, vmo)):
        assert read_pages(vmo, 0, 1) == data[:PAGE]
        assert up.wait_idle(timeout=60)
        assert up.committed_pages(ino) == CHUNK // PAGE  # its own chunk only


def test_a_read_that_continues_a_stream_moves_read_ahead_on(source):
    # Read-ahead of one chunk: after page 0's request, chunks 0 and 1 are present.
    data, path = source
    ppc = CHUNK // PAGE
    with (Image.open(path) as image,
          own_pager(image, threads=1, read_ahead=CHUNK) as up,
          file_vmo(up, b"f") as (ino, vmo)):
        assert read_pages(vmo, 0, 1) == data[:PAGE]
        assert up.wait_idle(timeout=60)
        assert up.committed_pages(ino) == 2 * ppc
        requests = up.stats.snapshot(ino)["page_requests"]
        # Reading chunk 1 asks the pager for nothing, yet read-ahead moves on to chunk
        # 2; a read that starts no stream moves nothing.
        assert up.read(ino, vmo, ppc * PAGE, CHUNK, None) == data[ppc * PAGE:2 * ppc * PAGE]
        assert up.wait_idle(timeout=60)
        assert up.stats.snapshot(ino)["page_requests"] == requests
        assert up.committed_pages(ino) == 3 * ppc
        assert up.read(ino, vmo, PAGE, PAGE, None) == data[PAGE:2 * PAGE]
        assert up.wait_idle(timeout=60)
        assert up.committed_pages(ino) == 3 * ppc


def test_random_pages_do_not_keep_their_whole_chunks_alive(tmp_path):
    import tracemalloc
    src = tmp_path / "src"
    src.mkdir()
    chunk = 64 * 1024
    (src / "r").write_bytes(os.urandom(64 * chunk))  # incompressible: 64 raw chunks
    image = tmp_path / "r.img"
    build_image(str(src), str(image), chunk_size=chunk)
    with (Image.open(image) as img,
          own_pager(img, threads=1, budget=None) as up,
          file_vmo(up, b"r") as (ino, vmo)):
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for k in range(64):  # page 3 of every chunk: no stream, one page each
                read_pages(vmo, k * (chunk // PAGE) + 3, 1)
            assert up.wait_idle(30)
            held = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert up.committed_pages(ino) == 64
        # 64 pages are 256 KiB; keeping their chunks alive would be 4 MiB.
        assert held < 1 << 20, held


def test_a_file_of_one_chunk_is_supplied_as_it_is_first_opened(pager):
    """Its first read then finds every page present and asks the pager for nothing."""
    with file_vmo(pager, b"small") as (ino, vmo):
        assert pager.committed_pages(ino) == 1
        assert zx.zx_vmo_read(vmo, 0, 11) == b"small file\n"
        assert pager.stats.snapshot(ino)["page_requests"] == 0
    # Opened again it is most likely in the host's page cache: nothing is supplied ahead.
    with file_vmo(pager, b"small") as (ino, vmo):
        assert pager.committed_pages(ino) == 0
        assert zx.zx_vmo_read(vmo, 0, 11) == b"small file\n"
        assert pager.stats.snapshot(ino)["page_requests"] == 1


def test_a_small_file_with_a_rule_waits_for_the_request_the_rule_acts_on(pager):
    ino = pager.image.resolve(b"small")
    pager.add_fault(ino, parse_rule("pages=0 error=IO count=1"))
    with file_vmo(pager, b"small") as (ino, vmo):
        assert pager.committed_pages(ino) == 0
        assert outcome(vmo, 0, 11) == zx.ZX_ERR_IO
        assert outcome(vmo, 0, 11) == b"small file\n"  # count=1: the next request is served


def _read_from(up, ino, vmo, offset, length):
    """vmo_read_async, then serve_here in this thread; (data, thread that ended it)."""
    import threading
    ended = threading.Event()
    got = []

    def done(status, data):
        got.append((status, data, threading.get_ident()))
        ended.set()

    data = zx.vmo_read_async(vmo, offset, length, done)
    assert data is None  # the pages were absent: the read parked on a request
    up.serve_here(ino, offset, length)
    assert ended.wait(30)
    status, data, thread = got[0]
    return (data if status == zx.ZX_OK else status), thread


def test_a_random_miss_is_served_in_the_readers_own_thread(source):
    import threading
    data, image_path = source
    # No pager thread at all: only serve_here can answer.
    with Image.open(image_path) as image, own_pager(image, threads=0) as up, \
            file_vmo(up, b"f") as (ino, vmo):
        got, thread = _read_from(up, ino, vmo, 9 * PAGE, PAGE)
        assert got == data[9 * PAGE:10 * PAGE]
        assert thread == threading.get_ident()
        assert up.stats.snapshot(ino)["page_requests"] == 1


def test_serve_here_leaves_streams_and_rules_to_the_pager_threads(source):
    import threading
    data, image_path = source
    with Image.open(image_path) as image, own_pager(image, threads=1, read_ahead=0) as up, \
            file_vmo(up, b"f") as (ino, vmo):
        # Two chunks: never in the reader's thread, whichever thread took the packet.
        got, thread = _read_from(up, ino, vmo, 2 * PAGE, 4 * PAGE)
        assert got == data[2 * PAGE:6 * PAGE]
        assert thread != threading.get_ident()
        # A file with a rule (which may sleep): a pager thread applies it.
        up.add_fault(ino, parse_rule("pages=13 error=IO_DATA_INTEGRITY"))
        got, thread = _read_from(up, ino, vmo, 13 * PAGE, PAGE)
        assert got == zx.ZX_ERR_IO_DATA_INTEGRITY
        assert thread != threading.get_ident()


def test_what_serve_here_leaves_waits_for_a_pager_thread(source):
    _, image_path = source
    with Image.open(image_path) as image, \
            own_pager(image, threads=0, read_ahead=0, close_batch=1) as up:
        ino = image.resolve(b"f")
        vmo = up.open(ino)
        ended = []
        assert zx.vmo_read_async(vmo, 2 * PAGE, 4 * PAGE,
                                 lambda status, data: ended.append(status)) is None
        up.serve_here(ino, 2 * PAGE, 4 * PAGE)  # two chunks: not even taken
        assert ended == [] and zx.zx_port_wait(up.port, 0).key == ino
        # Taken for a read of one page, it is found to be a request of two chunks:
        # handed on, not served.
        assert zx.vmo_read_async(vmo, 9 * PAGE, 4 * PAGE,
                                 lambda status, data: ended.append(status)) is None
        up.serve_here(ino, 9 * PAGE, PAGE)
        assert len(up._handoff) == 1
        up.close(ino)  # the detach ends the requests nobody served
        assert ended == [zx.ZX_ERR_BAD_STATE] * 2


def test_a_rule_armed_during_a_supply_at_open_still_acts_on_the_first_read(pager):
    """A file without rules is supplied at open without a rule gate; arming its first
    rule must wait for such a supply in progress before evicting, or the supplied page
    would stay present and the rule would never see a request."""
    ino = pager.image.resolve(b"small")
    in_supply, go = threading.Event(), threading.Event()
    real_supply = pager.server.supply_chunk

    def held_supply(*args):
        in_supply.set()
        assert go.wait(30)
        real_supply(*args)

    armer_waits = threading.Event()

    class WatchedLock:
        """The open lock, telling when the arming thread asks for it."""

        def __init__(self, lock):
            self.lock = lock

        def __enter__(self):
            if threading.current_thread().name == "armer":
                armer_waits.set()
            return self.lock.__enter__()

        def __exit__(self, *exc):
            return self.lock.__exit__(*exc)

    pager.server.supply_chunk = held_supply
    pager._open_lock = WatchedLock(pager._open_lock)
    vmos = []
    opener = threading.Thread(target=lambda: vmos.append(pager.open(ino)))
    opener.start()
    assert in_supply.wait(30)
    armer = threading.Thread(target=pager.add_fault, name="armer",
                             args=(ino, parse_rule("pages=0 error=IO count=1")))
    armer.start()
    while armer.is_alive() and not armer_waits.wait(0.05):
        pass  # it either waits for the supply (right) or finishes without (wrong)
    go.set()
    opener.join(30)
    armer.join(30)
    try:
        assert pager.committed_pages(ino) == 0
        assert outcome(vmos[0], 0, 11) == zx.ZX_ERR_IO
    finally:
        pager.close(ino)


def test_readers_serving_their_own_misses_beside_the_pager_threads_all_get_their_bytes(source):
    """Several threads read at once, each calling serve_here after its read parked, as
    the trio thread does: packets they take that are not theirs, or not one chunk,
    reach a pager thread, and every read ends with the right bytes."""
    import random
    import threading
    data, image_path = source
    pages = len(data) // PAGE
    with Image.open(image_path) as image, own_pager(image, threads=2, read_ahead=0) as up, \
            file_vmo(up, b"f") as (ino, vmo):
        failures = []

        def reader(seed):
            rng = random.Random(seed)
            for _ in range(40):
                first = rng.randrange(pages)
                count = min(rng.choice((1, 1, 2, 5)), pages - first)
                zx.scanner_evict(vmo, first * PAGE, count * PAGE)
                ended = threading.Event()
                got = []

                def done(status, out):
                    got.append((status, out))
                    ended.set()

                out = zx.vmo_read_async(vmo, first * PAGE, count * PAGE, done)
                if out is None:
                    up.serve_here(ino, first * PAGE, count * PAGE)
                    if not ended.wait(30):
                        failures.append(("no answer", first, count))
                        return
                    status, out = got[0]
                    if status != zx.ZX_OK:
                        failures.append((status, first, count))
                        continue
                if out != data[first * PAGE:(first + count) * PAGE]:
                    failures.append(("wrong bytes", first, count))

        threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert failures == []


def test_a_request_serve_here_hands_on_wakes_an_idle_pager_thread(source):
    import threading
    data, image_path = source
    with Image.open(image_path) as image, own_pager(image, threads=1, read_ahead=0) as up, \
            file_vmo(up, b"f") as (ino, vmo), file_vmo(up, b"small") as (small, small_vmo):
        # Keep the one pager thread asleep in a delay rule on the other file...
        up.add_fault(small, parse_rule("pages=0 error=none delay_ms=60000"))
        slept = threading.Event()
        assert zx.vmo_read_async(small_vmo, 0, PAGE, lambda s, d: slept.set()) is None
        for _ in range(3000):
            if up.stats.snapshot(small)["delays"]:
                break
            threading.Event().wait(0.01)
        assert up.stats.snapshot(small)["delays"] == 1
        # ...while this thread takes a request of two chunks off the port and hands it on.
        ended = threading.Event()
        got = []
        assert zx.vmo_read_async(vmo, 9 * PAGE, 4 * PAGE,
                                 lambda s, d: (got.append(d), ended.set())) is None
        up.serve_here(ino, 9 * PAGE, PAGE)
        assert not ended.is_set()
        # Once awake and done with the other file, the pager thread must be told of it.
        up.hurry()
        assert slept.wait(30)
        assert ended.wait(30)
        assert got == [data[9 * PAGE:13 * PAGE]]


def test_closed_files_are_detached_in_batches(tmp_path):
    """A closed file's VMO is gone from the pager at once, and detached (its COMPLETE
    packet queued) with the next close_batch - 1 closes."""
    for i in range(3):
        (tmp_path / f"f{i}").write_bytes(b"x" * (PAGE + i))
    image_path = tmp_path.parent / (tmp_path.name + ".img")
    build_image(str(tmp_path), str(image_path), chunk_size=CHUNK)
    with Image.open(image_path) as image, own_pager(image, threads=0, close_batch=3) as up:
        inos = [image.resolve(f"f{i}".encode()) for i in range(3)]

        def completes():
            keys = []
            while True:
                try:
                    packet = zx.zx_port_wait(up.port, 0)
                except zx.ZxError:
                    return keys
                assert packet.page_request.command == zx.ZX_PAGER_VMO_COMPLETE
                keys.append(packet.key)

        for ino in inos[:2]:
            up.open(ino)
            up.close(ino)
            assert up.open_files() == 0 and up.committed_pages(ino) == 0
        assert completes() == []
        vmo = up.open(inos[0])  # a new VMO, not the one waiting to be detached
        assert up.open_files() == 1 and zx.zx_vmo_get_size(vmo) == PAGE
        up.close(inos[0])  # the third close: all three detach
        assert sorted(completes()) == sorted([inos[0], inos[1], inos[0]])


def test_read_serves_a_random_miss_in_its_own_thread_beside_idle_pager_threads(source):
    import threading
    data, image_path = source
    with Image.open(image_path) as image, own_pager(image, threads=2) as up, \
            file_vmo(up, b"f") as (ino, vmo):
        for page in (9, 30, 3):
            got = []
            # The packet wakes no pager thread (port_hold_wakeups): this thread serves it.
            assert up.read(ino, vmo, page * PAGE, PAGE,
                           lambda status, out: got.append((status, out, threading.get_ident()))) is None
            assert got == [(zx.ZX_OK, data[page * PAGE:(page + 1) * PAGE], threading.get_ident())]
        # Present pages come back at once; a read of two chunks is left to the pager threads.
        assert up.read(ino, vmo, 9 * PAGE, PAGE, None) == data[9 * PAGE:10 * PAGE]
        ended = threading.Event()
        assert up.read(ino, vmo, 18 * PAGE, 4 * PAGE, lambda status, out: ended.set()) is None
        assert ended.wait(30)


def test_an_error_serving_in_the_readers_thread_leaves_the_request_to_a_pager_thread(
        source, monkeypatch, caplog):
    import threading
    data, image_path = source
    with Image.open(image_path) as image, own_pager(image, threads=1) as up, \
            file_vmo(up, b"f") as (ino, vmo):
        calls = []
        real = up._serving

        def broken_once(*args, **kw):
            if not calls:
                calls.append(threading.get_ident())
                raise RuntimeError("bug")
            return real(*args, **kw)

        monkeypatch.setattr(up, "_serving", broken_once)
        ended = threading.Event()
        got = []
        with caplog.at_level(logging.ERROR, logger="pagerfs.pager"):
            up.read(ino, vmo, 9 * PAGE, PAGE, lambda status, out: (got.append(out), ended.set()))
        assert calls == [threading.get_ident()]
        assert ended.wait(30) and got == [data[9 * PAGE:10 * PAGE]]
        assert "reader's thread" in caplog.text


@pytest.mark.parametrize("through", ["read", "mapping", "commit"])
def test_a_rule_armed_while_a_blocked_read_of_its_page_is_served_acts_on_the_next_read(
        pager, source, held_after_wake, through):
    """A blocked reader whose request was just supplied still holds (pins) the pages
    until it has copied them. Arming a rule in that moment must still leave the rule's
    pages absent when it returns: the read in flight gets its bytes (it was served
    under the old rules) and the next read asks the pager, which fires the rule."""
    from pagerfs.zircon import blocking

    data, _ = source
    got = []

    def reader(vmo):
        held_after_wake.hold_me()
        if through == "read":
            got.append(zx.zx_vmo_read(vmo, 0, PAGE))
        elif through == "mapping":
            mapping = zx.zx_vmar_map(zx.zx_vmar_root_self(), zx.ZX_VM_PERM_READ, 0, vmo, 0, PAGE)
            got.append(mapping.read(0, PAGE))
            mapping.unmap()
        else:
            zx.zx_vmo_op_range(vmo, zx.ZX_VMO_OP_COMMIT, 0, PAGE)
            got.append(data[:PAGE])

    with file_vmo(pager, b"f") as (ino, vmo):
        thread = threading.Thread(target=reader, args=(vmo,))
        thread.start()
        assert held_after_wake.woken.wait(30)  # served: page 0 present, pinned for it
        armer = threading.Thread(target=pager.add_fault,
                                 args=(ino, parse_rule("pages=0 error=IO count=1")))
        armer.start()
        # Arming either waits in the kernel for the reader to copy (right) or ends
        # with page 0 left present (wrong); let the reader go on either way.
        while armer.is_alive() and not blocking.wait_until_blocked(armer.ident, 0.05):
            pass
        held_after_wake.let_go()
        thread.join(30)
        armer.join(30)
        assert not thread.is_alive() and not armer.is_alive()
        assert got == [data[:PAGE]]
        assert outcome(vmo, 0, len(data)) == zx.ZX_ERR_IO
        assert outcome(vmo, 0, len(data)) == data[:PAGE]  # count=1


class _Recording:
    """A real image that notes which chunk calls reach it, in order."""

    def __init__(self, image):
        self._image = image
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        return getattr(self._image, name)

    def prefetch(self, ino, index):
        self.calls.append(("prefetch", index))
        return self._image.prefetch(ino, index)

    def read_chunk_pages(self, ino, index, first_page, npages, tamper=None):
        self.calls.append(("read", index))
        return self._image.read_chunk_pages(ino, index, first_page, npages, tamper)


def test_a_miss_read_serves_itself_prefetches_its_chunk_before_reading_it(source):
    import threading
    data, image_path = source
    with Image.open(image_path) as real:
        image = _Recording(real)
        with own_pager(image, threads=1, read_ahead=0) as up, file_vmo(up, b"f") as (ino, vmo):
            got = []
            assert up.read(ino, vmo, 9 * PAGE, PAGE, lambda status, out: got.append(out)) is None
            assert got == [data[9 * PAGE:10 * PAGE]]
            assert image.calls == [("prefetch", 2), ("read", 2)]  # 4 pages a chunk
            # A hit asks the store nothing; a read the pager threads serve gets no hint.
            image.calls.clear()
            assert up.read(ino, vmo, 9 * PAGE, PAGE, None) == data[9 * PAGE:10 * PAGE]
            ended = threading.Event()
            assert up.read(ino, vmo, 18 * PAGE, 4 * PAGE, lambda status, out: ended.set()) is None
            assert ended.wait(30)
            assert not [call for call in image.calls if call[0] == "prefetch"]


def test_serving_a_file_without_rules_makes_no_faultset_for_it(pager, source):
    data, _ = source
    with file_vmo(pager, b"f") as (ino, vmo):
        assert zx.zx_vmo_read(vmo, 0, len(data)) == data
        assert pager.wait_idle(30)
        assert pager.clear_faults(ino) == 0 and pager.remove_fault(ino, 1) is False
    assert pager._faults == {} and pager._plain == {}
    assert pager.fault_states(ino) == []


def test_a_rule_armed_while_a_thread_serves_the_file_without_rules_acts_next(pager, source):
    """A pager thread serving a file that had no rules holds no rule gate; arming the
    file's first rule must wait for that serve to end before evicting, or the page it
    supplies would stay present and the rule would never see a request."""
    data, _ = source
    in_serve, go = threading.Event(), threading.Event()
    real_serve = pager.server.serve

    def held_serve(*args):
        in_serve.set()
        assert go.wait(30)
        real_serve(*args)

    armer_waits = threading.Event()
    real_wait = pager._plain_done.wait

    def watched_wait(*args):
        armer_waits.set()
        return real_wait(*args)

    pager.server.serve = held_serve
    pager._plain_done.wait = watched_wait
    got = []
    with file_vmo(pager, b"f") as (ino, vmo):
        reader = threading.Thread(target=lambda: got.append(zx.zx_vmo_read(vmo, 0, PAGE)))
        reader.start()
        assert in_serve.wait(30)
        armer = threading.Thread(target=pager.add_fault,
                                 args=(ino, parse_rule("pages=0 error=IO count=1")))
        armer.start()
        while armer.is_alive() and not armer_waits.wait(0.05):
            pass  # it either waits for the serve (right) or finishes without (wrong)
        go.set()
        reader.join(30)
        armer.join(30)
        pager.server.serve = real_serve
        assert got == [data[:PAGE]]
        assert outcome(vmo, 0, len(data)) == zx.ZX_ERR_IO
