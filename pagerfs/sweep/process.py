"""Running the program once: in a process group of its own, with a timeout, and
nothing left behind.

The program gets a new session (so its process group is its own and it has no
controlling terminal to wait on). When the timeout expires the whole group gets
SIGTERM, then SIGKILL after a grace period; when the program ends by itself, whatever
it left running in its group is killed too (it may hold files open in the mount).
Waiting is on pidfds, never a sleep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import select
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping

from pagerfs.sweep.verdict import Outcome

GRACE = 1.0          # seconds between SIGTERM and SIGKILL
REAP_BOUND = 10.0    # how long killed processes get to disappear
STDERR_EXCERPT = 2000  # bytes of the end of stderr kept


class ProgramError(Exception):
    """The program cannot be started at all (not found, not executable)."""


@dataclasses.dataclass(frozen=True)
class Invocation:
    argv: tuple[str, ...]
    env: Mapping[str, str]
    outputs: tuple[str, ...]
    timeout: float
    # (path, placeholder): replaced in the output compared and in the stderr excerpt,
    # since each run has its own mount point and output directory.
    redact: tuple[tuple[str, str], ...] = ()


def expand(words, mountpoint: str, out_dir: str) -> tuple[str, ...]:
    """`{}` is the mount point and `{out}` the run's own output directory."""
    return tuple(w.replace("{out}", out_dir).replace("{}", mountpoint) for w in words)


class ProcessTable:
    """The process groups running now, so that an interrupted sweep can end them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        self.stopping = threading.Event()

    def add(self, pgid: int) -> bool:
        """Register a group; False (and the group is killed) once the sweep is
        stopping: a run that started just after kill_all must not outlive it."""
        with self._lock:
            if not self.stopping.is_set():
                self._groups.add(pgid)
                return True
        _signal_group(pgid, signal.SIGKILL)
        return False

    def discard(self, pgid: int) -> None:
        with self._lock:
            self._groups.discard(pgid)

    def kill_all(self) -> None:
        with self._lock:
            self.stopping.set()
            groups = list(self._groups)
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_pidfd(fd: int, seconds: float) -> bool:
    return bool(select.select([fd], [], [], max(seconds, 0))[0])


def _members(pgid: int) -> list[int]:
    """The live processes of a process group (from /proc: there is no other list)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp ...
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            found.append(int(name))
    return found


def end_group(pgid: int) -> None:
    """SIGKILL what is left of the group and wait for each member to be gone."""
    fds = []
    for pid in _members(pgid):
        try:
            fds.append(os.pidfd_open(pid))
        except OSError:
            pass
    _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + REAP_BOUND
    try:
        for fd in fds:
            _wait_pidfd(fd, deadline - time.monotonic())
    finally:
        for fd in fds:
            os.close(fd)


def _normal(data: bytes, redact) -> bytes:
    for old, new in redact:
        if old:
            data = data.replace(os.fsencode(old), os.fsencode(new))
    return data


def _digest(stdout, outputs: tuple[str, ...], redact) -> str:
    """Of stdout and the output files, each run's own paths (its mount point, its
    output directory) written as their placeholders: `sha256sum {}/f` prints the mount
    point, which differs from run to run."""
    h = hashlib.sha256()
    stdout.seek(0)
    h.update(b"stdout\0" + hashlib.sha256(_normal(stdout.read(), redact)).digest())
    for path in outputs:
        h.update(b"\0" + _normal(os.fsencode(path), redact) + b"\0")
        try:
            with open(path, "rb") as f:
                h.update(hashlib.sha256(_normal(f.read(), redact)).digest())
        except OSError as err:
            h.update(f"unreadable: {err.strerror}".encode())
    return "sha256:" + h.hexdigest()


def _excerpt(stderr, redact) -> str:
    size = stderr.seek(0, os.SEEK_END)
    stderr.seek(max(size - STDERR_EXCERPT, 0))
    text = stderr.read().decode(errors="replace")
    if size > STDERR_EXCERPT:
        text = "..." + text[text.find("\n") + 1:] if "\n" in text else "..." + text
    for old, new in redact:
        if old:
            text = text.replace(old, new)
    return text


def run(inv: Invocation, table: ProcessTable | None = None) -> Outcome:
    """Run the program to its end, or to the timeout; never leaves a process behind."""
    for path in inv.outputs:
        # A file left by an earlier run would stand in for one this run did not write.
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.monotonic()
        try:
            proc = subprocess.Popen(inv.argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, env=dict(inv.env), start_new_session=True)
        except FileNotFoundError:
            raise ProgramError(f"{inv.argv[0]}: command not found") from None
        except PermissionError:
            raise ProgramError(f"{inv.argv[0]}: not executable") from None
        except OSError as e:
            raise ProgramError(f"{inv.argv[0]}: cannot run: {e.strerror}") from None
        pgid = proc.pid  # start_new_session: the leader's pid names the group
        if table is not None:
            table.add(pgid)
        timed_out = False
        pidfd = os.pidfd_open(proc.pid)
        try:
            if not _wait_pidfd(pidfd, inv.timeout):
                timed_out = True
                _signal_group(pgid, signal.SIGTERM)
                if not _wait_pidfd(pidfd, GRACE):
                    _signal_group(pgid, signal.SIGKILL)
            returncode = proc.wait()
            duration = time.monotonic() - began
        finally:
            os.close(pidfd)
            end_group(pgid)
            if table is not None:
                table.discard(pgid)
        if timed_out:
            exit_status, signum = None, None
        elif returncode < 0:
            exit_status, signum = None, -returncode
        else:
            exit_status, signum = returncode, None
        return Outcome(exit_status=exit_status, signal=signum, timed_out=timed_out,
                       digest=_digest(out, inv.outputs, inv.redact), duration=round(duration, 3),
                       stderr=_excerpt(err, inv.redact))
