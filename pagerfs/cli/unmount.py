"""Unmounting a pagerfs mount, for `pagerfs umount` and pagerfs.testing alike.

The kernel sends RELEASE for a closed file asynchronously, after close() returned, and
a mount stays busy until the daemon has answered it: an unmount right after the last
file was closed can find the mount busy for a moment. So a busy unmount is retried
while the daemon's count of open handles (user.pagerfs.stats `open_handles`) falls,
for a bounded time, before it is reported.
"""

from __future__ import annotations

import json
import os
import re
import select
import threading
import time

from pagerfs.cli.common import STATS, CommandError

# How long an unmount waits for releases in flight before it calls the mount busy.
RELEASE_WAIT = 2.0
_POLL = 0.005
HUNG = "hung"


def _unescape(field: bytes) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes.
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), field))


def mount_type(mountpoint: str) -> str | None:
    """The filesystem type /proc/mounts gives for this mount point, if mounted."""
    found = None
    with open("/proc/self/mounts", "rb") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and _unescape(fields[1]) == mountpoint:
                found = fields[2].decode(errors="replace")  # the last mount there wins
    return found


def _with_timeout(fn, seconds: float):
    """Run fn in a thread; None if it has not answered in time (a hung daemon)."""
    result: list = []

    def call():
        try:
            result.append(fn())
        except OSError as err:
            result.append(err)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    return result[0] if result else None


def daemon_stats(mountpoint: str, timeout: float = 2.0) -> dict | str | None:
    """The mount's totals; None if its daemon is gone; HUNG if it does not answer."""
    answer = _with_timeout(lambda: os.getxattr(mountpoint, STATS), timeout)
    if answer is None:
        return HUNG
    if isinstance(answer, bytes):
        try:
            return json.loads(answer)
        except ValueError:
            return None
    return None


def wait_exit(pid: int, seconds: float) -> bool:
    """Wait for a process to end (not only our children); True if it did."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], seconds)[0])
    finally:
        os.close(fd)


def holders(mountpoint: str) -> list[tuple[int, str, str]]:
    """(pid, command, path) of what processes hold inside the mount: open files,
    mapped files and working directories, as far as /proc lets us see."""
    inside = mountpoint.rstrip("/") + "/"
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        paths = set()
        try:
            for link in ["cwd", "root", *(f"fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd"))]:
                try:
                    paths.add(os.readlink(f"/proc/{pid}/{link}"))
                except OSError:
                    continue
            with open(f"/proc/{pid}/maps", errors="replace") as f:
                paths.update(line.split(None, 5)[5].strip() for line in f
                             if line.count(" ") >= 5 and inside in line)
            with open(f"/proc/{pid}/comm") as f:
                command = f.read().strip()
        except OSError:
            continue  # gone, or not ours to see
        found += [(pid, command, p) for p in sorted(paths)
                  if p == mountpoint or p.startswith(inside)]
    return found


def _releases_settle(mountpoint: str, deadline: float) -> int | None:
    """After a busy unmount: wait until the daemon holds no handle open. The handles it
    held when asked (0: the busy is not ours to wait for), or None if it is gone, hung,
    or still holds some at the deadline."""
    first = None
    while time.monotonic() < deadline:
        stats = daemon_stats(mountpoint, timeout=max(deadline - time.monotonic(), 0.01))
        if not isinstance(stats, dict):
            return None  # gone or hung: waiting cannot help
        handles = stats.get("open_handles", 0)
        first = handles if first is None else first
        time.sleep(_POLL)  # answered, but the kernel may not have taken the reply yet
        if not handles:
            return first
    return None


def _busy(mountpoint: str, shown: str) -> CommandError:
    held = holders(mountpoint)
    what = ", ".join(f"{os.path.relpath(p, mountpoint)} (pid {pid} {cmd})"
                     for pid, cmd, p in held[:5])
    more = f" and {len(held) - 5} more" if len(held) > 5 else ""
    return CommandError(f"{shown}: busy" + (f", held by {what}{more}" if held else "")
                        + " (close what is open there, or use --lazy)")


def unmount(shown: str, lazy: bool = False, release_wait: float = RELEASE_WAIT) -> None:
    """Unmount the pagerfs mount at `shown` and wait for its daemon to exit; raises
    CommandError with one line (not mounted, not pagerfs, busy, hung daemon)."""
    mountpoint = os.path.realpath(shown)
    kind = mount_type(mountpoint)
    if kind is None:
        raise CommandError(f"{shown}: not mounted")
    if kind != "fuse.pagerfs":
        raise CommandError(f"{shown}: not a pagerfs mount ({kind})")
    stats = daemon_stats(mountpoint)
    if stats == HUNG and not lazy:
        # Our own question is stuck in the mount now, which makes it busy for good.
        raise CommandError(f"{shown}: the daemon does not answer (stopped?); "
                           f"use --lazy to detach the mount anyway")
    # Imported here: every `pagerfs` command imports this module (for its help text),
    # and these two cost `pagerfs mkimage` 3 ms of its start.
    import shutil
    import subprocess

    pid = stats.get("pid") if isinstance(stats, dict) else None
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool:
        command = [tool, "-u", *(["-z"] if lazy else []), mountpoint]
    else:
        command = ["umount", *(["-l"] if lazy else []), mountpoint]
    deadline = time.monotonic() + release_wait
    idle_tries = 0
    while True:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0:
            break
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        if "busy" not in reason.lower():
            raise CommandError(f"{shown}: cannot unmount: {reason}")
        held = _releases_settle(mountpoint, deadline)
        # Busy with nothing open in the daemon (a working directory inside, say): a
        # release being taken is a matter of microseconds, so a few tries settle it.
        idle_tries = idle_tries + 1 if held == 0 else 0
        if held is None or idle_tries > 3:
            raise _busy(mountpoint, shown)
    if pid is not None and not wait_exit(int(pid), 10.0):
        raise CommandError(f"{shown}: unmounted, but daemon {pid} has not exited")
