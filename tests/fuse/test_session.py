"""The stand-in pyfuse3's session loop runs on (pagerfs.fuse.session), without a mount:
its lock and its wait on /dev/fuse, on a pipe, under a real trio run."""

from __future__ import annotations

import os

import pyfuse3
import pytest
import trio
import trio.testing

from pagerfs.fuse import session


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def test_a_free_lock_is_taken_without_a_checkpoint():
    async def main():
        lock = session.Lock()
        with trio.testing.assert_no_checkpoints():
            async with lock:
                pass
            async with lock:
                pass

    trio.run(main)


def test_the_lock_excludes_and_hands_over_in_order():
    events = []

    async def holder(lock, name, started):
        async with lock:
            events.append(f"{name} in")
            started.set()
            await trio.sleep(0)  # let the others queue up while it is held
            await trio.sleep(0)
            events.append(f"{name} out")

    async def main():
        lock = session.Lock()
        async with trio.open_nursery() as nursery:
            first = trio.Event()
            nursery.start_soon(holder, lock, "a", first)
            await first.wait()
            nursery.start_soon(holder, lock, "b", trio.Event())

    trio.run(main)
    assert events == ["a in", "a out", "b in", "b out"]


def test_a_queued_request_is_taken_without_going_round_trio(pipe):
    r, w = pipe
    os.write(w, b"x")

    async def main():
        waiter = session._Waiter()
        with trio.testing.assert_no_checkpoints():
            for _ in range(session.FAST_STREAK):
                await waiter.wait_readable(r)
        # Then one wait goes through trio, so that woken tasks get to run.
        with trio.testing.assert_checkpoints():
            await waiter.wait_readable(r)
        with trio.testing.assert_no_checkpoints():
            await waiter.wait_readable(r)

    trio.run(main)


def test_without_a_request_the_wait_parks_until_one_comes(pipe):
    r, w = pipe
    order = []

    async def writer():
        order.append("write")
        os.write(w, b"x")

    async def main():
        waiter = session._Waiter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await waiter.wait_readable(r)  # nothing there yet: parks, the writer runs
            order.append("readable")

    trio.run(main)
    assert order == ["write", "readable"]


def test_enable_gives_pyfuse3_what_its_loop_uses(monkeypatch):
    monkeypatch.setattr(pyfuse3, "trio", pyfuse3.trio)  # undone after the test
    session.enable()
    stand_in = pyfuse3.trio
    assert stand_in is not trio
    assert isinstance(stand_in.Lock(), session.Lock)
    for name in ("wait_readable", "current_task", "current_trio_token", "notify_closing"):
        assert callable(getattr(stand_in.lowlevel, name))
    assert stand_in.ClosedResourceError is trio.ClosedResourceError
    assert stand_in.open_nursery is trio.open_nursery
