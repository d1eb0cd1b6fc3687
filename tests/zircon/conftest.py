"""Test helpers modelled on Zircon's core pager tests (userpager.h, test_thread.h).

UserPager owns a pager and a port and serves requests on the test's command;
TestThread runs a blocking call in a thread and lets a test wait, by events, for the
thread to block on a page request, to finish, or to fail.
"""

from __future__ import annotations

import struct
import threading
from typing import Callable

import pytest

from pagerfs import zircon as zx
from pagerfs.zircon import blocking

PAGE = zx.PAGE_SIZE
JOIN_TIMEOUT = 30.0  # seconds; only reached when the code under test hangs


def page_contents(key: int, page: int) -> bytes:
    """Distinct content for every (vmo key, page), as Zircon's GenerateBufferContents."""
    return struct.pack("<QQ", key, page) * (PAGE // 16)


class Vmo:
    """A pager-backed VMO made by UserPager, with its key and size in pages."""

    def __init__(self, handle: int, key: int, npages: int) -> None:
        self.handle = handle
        self.key = key
        self.npages = npages
        self.mapping: zx.Mapping | None = None

    def expected(self, page: int, npages: int) -> bytes:
        return b"".join(page_contents(self.key, p) for p in range(page, page + npages))

    def map(self) -> zx.Mapping:
        if self.mapping is None:
            self.mapping = zx.zx_vmar_map(
                zx.zx_vmar_root_self(), zx.ZX_VM_PERM_READ, 0, self.handle, 0,
                self.npages * PAGE,
            )
        return self.mapping

    def read(self, page: int, npages: int, through_vmar: bool) -> bytes:
        if through_vmar:
            return self.map().read(page * PAGE, npages * PAGE)
        return zx.zx_vmo_read(self.handle, page * PAGE, npages * PAGE)

    def check(self, page: int, npages: int, through_vmar: bool) -> bool:
        return self.read(page, npages, through_vmar) == self.expected(page, npages)

    def commit(self, page: int, npages: int) -> bool:
        zx.zx_vmo_op_range(self.handle, zx.ZX_VMO_OP_COMMIT, page * PAGE, npages * PAGE)
        return True


class UserPager:
    def __init__(self) -> None:
        self.pager = zx.zx_pager_create(0)
        self.port = zx.zx_port_create(0)
        self._next_key = 1
        self.vmos: list[Vmo] = []
        self._stash: list[zx.PortPacket] = []  # packets seen while looking for another

    def create_vmo(self, npages: int, options: int = 0) -> Vmo:
        key = self._next_key
        self._next_key += 1
        handle = zx.zx_pager_create_vmo(self.pager, options, self.port, key, npages * PAGE)
        vmo = Vmo(handle, key, npages)
        self.vmos.append(vmo)
        return vmo

    def release_vmo(self, vmo: Vmo) -> None:
        if vmo.mapping is not None:
            vmo.mapping.unmap()
        zx.zx_handle_close(vmo.handle)

    def close_pager_handle(self) -> None:
        zx.zx_handle_close(self.pager)

    def close_port_handle(self) -> None:
        zx.zx_handle_close(self.port)

    def supply_pages(self, vmo: Vmo, page: int, npages: int, src_page: int = 0,
                     aux: int | None = None) -> None:
        """Supply [page, page + npages) with the VMO's expected content (or `aux`)."""
        if aux is None:
            aux = zx.zx_vmo_create((src_page + npages) * PAGE, 0)
            zx.zx_vmo_write(aux, vmo.expected(page, npages), src_page * PAGE)
        try:
            zx.zx_pager_supply_pages(self.pager, vmo.handle, page * PAGE, npages * PAGE,
                                     aux, src_page * PAGE)
        finally:
            zx.zx_handle_close(aux)

    def fail_pages(self, vmo: Vmo, page: int, npages: int,
                   status: int = zx.ZX_ERR_IO) -> None:
        zx.zx_pager_op_range(self.pager, zx.ZX_PAGER_OP_FAIL, vmo.handle, page * PAGE,
                             npages * PAGE, status)

    def detach_vmo(self, vmo: Vmo) -> None:
        zx.zx_pager_detach_vmo(self.pager, vmo.handle)

    def _next_packet(self, match: Callable[[zx.PortPacket], bool],
                     timeout: float | None) -> zx.PortPacket | None:
        for i, packet in enumerate(self._stash):
            if match(packet):
                return self._stash.pop(i)
        if timeout is None:
            deadline = zx.ZX_TIME_INFINITE
        else:
            deadline = zx.zx_deadline_after(int(timeout * 1e9))
        while True:
            try:
                packet = zx.zx_port_wait(self.port, deadline)
            except zx.ZxError as e:
                assert e.status == zx.ZX_ERR_TIMED_OUT
                return None
            if match(packet):
                return packet
            self._stash.append(packet)

    def get_page_read_request(self, vmo: Vmo, timeout: float | None = None
                              ) -> tuple[int, int] | None:
        """The next READ request for vmo as (page, npages); None if none comes in time.

        timeout 0 asks whether one is queued right now.
        """
        packet = self._next_packet(
            lambda p: p.key == vmo.key and p.page_request.command == zx.ZX_PAGER_VMO_READ,
            timeout,
        )
        if packet is None:
            return None
        assert packet.type == zx.ZX_PKT_TYPE_PAGE_REQUEST
        assert packet.status == zx.ZX_OK
        assert packet.page_request.flags == 0
        req = packet.page_request
        assert req.offset % PAGE == 0 and req.length % PAGE == 0
        return req.offset // PAGE, req.length // PAGE

    def wait_for_page_read(self, vmo: Vmo, page: int, npages: int,
                           timeout: float | None = None) -> bool:
        return self.get_page_read_request(vmo, timeout) == (page, npages)

    def wait_for_page_complete(self, key: int, timeout: float | None = None) -> bool:
        packet = self._next_packet(
            lambda p: p.key == key and p.page_request.command == zx.ZX_PAGER_VMO_COMPLETE,
            timeout,
        )
        if packet is None:
            return False
        req = packet.page_request
        return (packet.type, packet.status, req.offset, req.length) == (
            zx.ZX_PKT_TYPE_PAGE_REQUEST, zx.ZX_OK, 0, 0)

    def close(self) -> None:
        for handle in (self.pager, self.port):
            try:
                zx.zx_handle_close(handle)
            except zx.ZxError:
                pass
        for vmo in self.vmos:
            try:
                self.release_vmo(vmo)
            except zx.ZxError:
                pass


class TestThread:
    """Runs fn in a thread; fn returns True for success."""

    __test__ = False  # not a pytest test class

    def __init__(self, fn: Callable[[], bool]) -> None:
        self._fn = fn
        self.result: bool | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.result = bool(self._fn())
        except BaseException as e:  # noqa: BLE001 - reported to the test
            self.error = e

    def start(self) -> "TestThread":
        self._thread.start()
        return self

    def wait_for_blocked(self) -> bool:
        """True once the thread is blocked on a page request."""
        while self._thread.ident is None:
            pass
        return blocking.wait_until_blocked(self._thread.ident, JOIN_TIMEOUT)

    def is_blocked(self) -> bool:
        return self._thread.ident is not None and blocking.is_blocked(self._thread.ident)

    def _join(self) -> None:
        self._thread.join(JOIN_TIMEOUT)
        assert not self._thread.is_alive(), "thread still blocked"

    def wait(self) -> bool:
        """The thread finished and fn succeeded."""
        self._join()
        if self.error is not None:
            raise self.error
        return self.result is True

    def wait_for_failure(self, status: int | None = None) -> bool:
        """The thread finished with a failed syscall (of the given status)."""
        self._join()
        if isinstance(self.error, zx.ZxError):
            return status is None or self.error.status == status
        return self.error is None and self.result is False and status is None

    def wait_for_crash(self, offset: int | None = None, code: int | None = None) -> bool:
        """The thread took a fatal page fault (at that mapping offset, with that code)."""
        self._join()
        e = self.error
        if not isinstance(e, zx.PageFault):
            return False
        return (offset is None or e.offset == offset) and (code is None or e.synth_code == code)


def _status_of(fn: Callable[..., object], *args: object) -> int:
    """The zx status fn(*args) raised, or ZX_OK if it returned."""
    try:
        fn(*args)
    except zx.ZxError as e:
        return e.status
    return zx.ZX_OK


# A fixture, not a module: under --import-mode=importlib with no __init__.py tests can't import it
@pytest.fixture(scope="session")
def status_of() -> Callable[..., int]:
    """status_of(fn, *args) -> the zx status fn(*args) raised, or ZX_OK."""
    return _status_of


@pytest.fixture
def pager():
    p = UserPager()
    yield p
    p.close()


@pytest.fixture
def make_pager():
    made: list[UserPager] = []

    def make() -> UserPager:
        made.append(UserPager())
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.fixture
def spawn():
    """spawn(fn) -> a started TestThread."""

    def start(fn: Callable[[], bool]) -> TestThread:
        return TestThread(fn).start()

    return start


@pytest.fixture
def thread_factory():
    """thread_factory(fn) -> a TestThread not yet started."""
    return TestThread


class Server:
    """A pager thread: serves every READ packet on the UserPager's port until stopped.

    policy(vmo, page, npages) -> None to supply the expected content, or a status to
    FAIL the request's range with (after supplying the pages it can).
    """

    def __init__(self, pager: UserPager, policy=None) -> None:
        self.pager = pager
        self.policy = policy
        self.by_key = {}
        self.requests = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, vmo: Vmo) -> Vmo:
        self.by_key[vmo.key] = vmo
        return vmo

    def start(self) -> "Server":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    packet = zx.zx_port_wait(self.pager.port, zx.zx_deadline_after(20_000_000))
                except zx.ZxError as e:
                    if e.status == zx.ZX_ERR_TIMED_OUT:
                        continue
                    raise
                req = packet.page_request
                if req.command != zx.ZX_PAGER_VMO_READ:
                    continue
                self.requests += 1
                vmo = self.by_key[packet.key]
                page, npages = req.offset // PAGE, req.length // PAGE
                status = self.policy(vmo, page, npages) if self.policy else None
                if status is None:
                    self.pager.supply_pages(vmo, page, npages)
                else:
                    self.pager.fail_pages(vmo, page, npages, status)
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self.errors.append(e)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT)
        assert not self._thread.is_alive()
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def serve(pager):
    """serve(policy=None) -> a started Server for the test's UserPager."""
    servers: list[Server] = []

    def start(policy=None) -> Server:
        servers.append(Server(pager, policy).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def scanner_limit():
    """Set a kernel-wide budget for the test; always cleared afterwards."""
    yield zx.scanner_set_limit
    zx.scanner_set_limit(None)
