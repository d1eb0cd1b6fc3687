"""The sweep itself: a traced clean run, a second clean run to check the program is
deterministic, then one run per target, each on a fresh mount of its own.

Every run mounts with the kernel's and the pager's read-ahead off, the traced run and
the faulted runs alike: each READ is then one page the program itself touched, so the
trace names exactly the pages to sweep, and a rule fires only if the program really
asks for its page (never because read-ahead brushed it), which is what lets the
daemon's stats decide `not-reached`. A fresh mount is a fresh page cache and fresh
VMOs, and its rule is in force before the mount answers (pagerfs.testing's `faults=`),
so no run sees another's state and none leaves a rule behind.

A fresh mount costs most of a second (a daemon starts), so by default each parallel
job keeps one mount and gives every run a state proven equivalent for the file under
test: the rules of the last run are cleared and the new one armed before the program
starts (arming drops the file's pages from its VMO and Linux's page cache); then
mincore(2) must show none of the file's pages cached, and the daemon must hold no open
file (the kernel's RELEASEs of the last run have arrived, so every VMO is gone and the
next open makes a fresh one). `--fresh-mounts` takes a new mount for every run instead;
tests/sweep/test_sweep.py checks that both give the same verdicts.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import queue
import shlex
import shutil
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence

from pagerfs import testing
from pagerfs.sweep import plan as planning
from pagerfs.sweep import process
from pagerfs.sweep.residency import read_ahead_kb, resident_pages
from pagerfs.sweep.results import Baseline, Run, Settings, Sweep
from pagerfs.sweep.verdict import Outcome, classify, signal_name

MOUNT_OPTIONS = ("read_ahead=0", "read_ahead_kb=0")
CLEAN_TIMEOUT = 120.0   # bound of the clean runs when --timeout is not given
MIN_TIMEOUT = 5.0       # the default timeout is 10x the clean run, at least this
QUIET_BOUND = 5.0       # how long a reused mount may take to see the last run's RELEASEs
_POLL = 0.005
# The main thread waits for runs in slices this long: a signal the kernel hands to a
# worker thread runs its Python handler only when the main thread next wakes, and a
# lock wait without a timeout would never wake for it.
_SIGNAL_SLICE = 0.2


class SweepError(Exception):
    """A sweep that cannot be made, in one line (exit status 2)."""


@dataclasses.dataclass(frozen=True)
class Job:
    """What every run of one sweep shares."""

    image: str
    command: tuple[str, ...]
    outputs: tuple[str, ...]
    timeout: float


def default_timeout(clean_duration: float) -> float:
    return round(max(MIN_TIMEOUT, 10 * clean_duration), 1)


@contextlib.contextmanager
def image_of(target: str) -> Iterator[tuple[str, str | None]]:
    """(image path, source directory or None): a directory is built into a temporary
    image first, removed on the way out."""
    if not os.path.exists(target):
        raise SweepError(f"{target}: no such file or directory")
    if not os.path.isdir(target):
        yield os.path.abspath(target), None
        return
    with tempfile.TemporaryDirectory(prefix="pagerfs-sweep-img.") as tmp:
        try:
            img = testing.build(target, cache_dir=tmp)
        except testing.PagerfsError as err:
            raise SweepError(f"{target}: cannot build an image: {err}") from None
        yield str(img.path), os.path.abspath(target)


@contextlib.contextmanager
def _mount(job: Job, **kw):
    with contextlib.ExitStack() as stack:
        try:
            m = stack.enter_context(testing.mount(job.image, options=MOUNT_OPTIONS, **kw))
        except testing.PagerfsError as err:
            raise SweepError(str(err)) from None
        yield m


def run_in(mount, job: Job, table: process.ProcessTable | None = None,
           timeout: float | None = None) -> Outcome:
    """Run the command once in `mount`, `{}` and $PAGERFS_MNT naming it, `{out}` and
    $PAGERFS_OUT a fresh output directory of this run's own."""
    out_dir = tempfile.mkdtemp(prefix="pagerfs-sweep-out.")
    try:
        where = str(mount.path)
        env = {**os.environ, "PAGERFS_MNT": where, "PAGERFS_OUT": out_dir}
        inv = process.Invocation(
            argv=process.expand(job.command, where, out_dir), env=env,
            outputs=process.expand(job.outputs, where, out_dir),
            timeout=job.timeout if timeout is None else timeout,
            redact=((out_dir, "{out}"), (where, "{}")))
        try:
            return process.run(inv, table)
        except process.ProgramError as err:
            raise SweepError(str(err)) from None
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _image_files(root) -> dict[str, int]:
    """{relative path: size} of the regular files under the mount point."""
    found = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                found[os.path.relpath(path, root)] = os.stat(path).st_size
    return found


def _refuse_failed_clean_run(command: Sequence[str], outcome: Outcome, timeout: float) -> None:
    what = f"`{shlex.join(command)}`"
    if outcome.timed_out:
        raise SweepError(f"{what} did not end within {timeout:g} s on the clean run "
                         f"(--timeout): a sweep needs a good baseline")
    last = next((line.strip() for line in reversed(outcome.stderr.splitlines())
                 if line.strip()), "")
    why = f": {last}" if last else ""
    if outcome.signal is not None:
        raise SweepError(f"{what} was killed by {signal_name(outcome.signal)} on the clean "
                         f"run{why}: a sweep needs a good baseline")
    if outcome.exit_status != 0:
        raise SweepError(f"{what} failed on the clean run (exit {outcome.exit_status}){why}: "
                         f"a sweep needs a good baseline")


class MountPool:
    """One mount per parallel job, made when first needed; a run takes one and gives it
    back. Closing the pool unmounts them all."""

    def __init__(self, job: Job, size: int):
        self._job = job
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(size):
            self._free.put(None)
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def taken(self):
        m = self._free.get()
        try:
            if m is None:
                with self._lock:
                    m = self._stack.enter_context(_mount(self._job))
            yield m
        finally:
            self._free.put(m)

    def close(self) -> None:
        with self._lock:
            self._stack.close()

    def __enter__(self) -> "MountPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def clean_runs(job: Job, pool: MountPool | None = None) -> tuple[Baseline, dict[str, int]]:
    """The traced clean run on a fresh mount, and a second one to compare it with (on a
    mount of the pool, which the sweep then reuses); (baseline, the image's files and
    their sizes)."""
    with _mount(job, trace=True) as m:
        window = read_ahead_kb(m.path)
        if window:
            # Setting it needs root; the daemon carries on without (best effort).
            warnings.warn(f"pagerfs: warning: the mount's kernel read-ahead window is "
                          f"{window} KiB, not 0 (not root?): the trace may name pages "
                          f"only read ahead, whose runs then come out not-reached")
        mark = m.mark()
        golden = run_in(m, job)
        events = m.trace(since=mark)
        files = _image_files(m.path)
    _refuse_failed_clean_run(job.command, golden, job.timeout)
    with (pool.taken() if pool is not None else _mount(job)) as m:
        again = run_in(m, job)
    _refuse_failed_clean_run(job.command, again, job.timeout)
    if again.digest != golden.digest:
        raise SweepError(f"`{shlex.join(job.command)}` gave different output on two clean "
                         f"runs: a sweep needs a deterministic program")
    touched = planning.touched_pages(events)
    return Baseline(exit_status=0, digest=golden.digest,
                    duration=max(golden.duration, again.duration), pages=touched,
                    sizes={p: files.get(p, 0) for p in touched}), files


def _wait_quiet(m) -> None:
    """Until the daemon holds no open file. The kernel sends RELEASE after close()
    has returned, so the last run's may still be on their way; there is no event to
    wait on from outside the daemon, hence the (bounded) poll."""
    deadline = time.monotonic() + QUIET_BOUND
    while m.stats().get("open_files", 0):
        if time.monotonic() > deadline:
            raise SweepError(f"{m.path}: files stay open in the mount after a run "
                             f"(a process outside the run's group?); try --fresh-mounts")
        time.sleep(_POLL)


def _arm(m, target: planning.Target):
    """Arm the target's rule on a reused mount, and check the file is as cold as on a
    fresh one: no page cached by Linux, no VMO left."""
    m.clear()
    handle = m.fault(target.path, pages=range(target.first, target.last + 1),
                     error=target.error,
                     count=planning.TRANSIENT_COUNT if target.transient else None,
                     probability=target.probability, seed=target.seed)
    cached = resident_pages(m / target.path)
    _wait_quiet(m)
    committed = m.stats(target.path).get("committed_pages", 0)
    if cached or committed:
        raise SweepError(f"{target.path}: {cached} pages still cached, {committed} in its "
                         f"VMO after arming a rule; try --fresh-mounts")
    return handle


def run_target(job: Job, target: planning.Target, golden_digest: str,
               table: process.ProcessTable | None = None, mount=None) -> Run:
    """One run: on `mount` (reused, see _arm) or, without one, on a fresh mount whose
    rule is armed from the start."""
    if mount is None:
        with _mount(job, faults=[(target.path, target.rule)]) as m:
            outcome = run_in(m, job, table)
            fired = m.fired(target.path)
    else:
        handle = _arm(mount, target)
        try:
            outcome = run_in(mount, job, table)
            fired = mount.fired(handle)
        finally:
            mount.clear()
    return Run(target=target, verdict=classify(outcome, golden_digest, fired), fired=fired,
               outcome=outcome)


def _kill_runs_first_on_signals(table: process.ProcessTable) -> Callable[[], None]:
    """While the sweep runs, SIGINT and SIGTERM kill the running programs before the
    handlers already set (pagerfs.testing's, which unmount everything, then raise)
    run: unmounting under a live program would find its files open. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        before = signal.getsignal(signum)
        if not callable(before):
            continue

        def handler(n, frame, before=before):
            table.kill_all()
            before(n, frame)

        previous[signum] = before
        signal.signal(signum, handler)

    def restore() -> None:
        for signum, before in previous.items():
            signal.signal(signum, before)

    return restore


def sweep(job: Job, source: str | None, settings: Settings, baseline: Baseline,
          targets: Sequence[planning.Target],
          advance: Callable[[Run], None] = lambda run: None,
          pool: MountPool | None = None) -> Sweep:
    """Every target's run, `settings.jobs` at a time, on the pool's mounts (or, without
    a pool, each on a fresh mount); an interrupt (KeyboardInterrupt) kills what runs."""
    table = process.ProcessTable()

    def one(target: planning.Target) -> Run | None:
        if table.stopping.is_set():
            return None
        if pool is None:
            return run_target(job, target, baseline.digest, table)
        with pool.taken() as m:
            return run_target(job, target, baseline.digest, table, mount=m)

    done: dict[int, Run] = {}
    pool_threads = concurrent.futures.ThreadPoolExecutor(max_workers=settings.jobs,
                                                         thread_name_prefix="sweep")
    restore = _kill_runs_first_on_signals(table)
    try:
        pending = {pool_threads.submit(one, t) for t in targets}
        while pending:
            finished, pending = concurrent.futures.wait(
                pending, timeout=_SIGNAL_SLICE,
                return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                run = future.result()
                if run is not None:
                    done[run.target.case] = run
                    advance(run)
    except BaseException:
        table.kill_all()
        raise
    finally:
        pool_threads.shutdown(wait=True, cancel_futures=True)
        restore()
    return Sweep(image=job.image, source=source, command=job.command, settings=settings,
                 baseline=baseline, runs=tuple(done[t.case] for t in targets))
