"""The two file systems under test, driven through their ordinary commands, and a
registry of live mounts so that every exit path unmounts them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGERFS = "pagerfs"
SQUASHFS = "squashfs"
SYSTEMS = (PAGERFS, SQUASHFS)
LABELS = {PAGERFS: "pagerfs", SQUASHFS: "squashfuse_ll"}


class BenchError(Exception):
    """A failure the bench reports as one line and exit status 2."""


def pagerfs_cmd() -> list[str]:
    return [sys.executable, "-m", "pagerfs"]


def build_command(system: str, src: Path, image: Path, extra: tuple[str, ...] = ()) -> list[str]:
    if system == PAGERFS:
        return [*pagerfs_cmd(), "mkimage", *extra, str(src), str(image)]
    return ["mksquashfs", str(src), str(image), "-comp", "lz4", "-noappend", "-quiet", "-no-progress", *extra]


def mount_command(system: str, image: Path, mnt: Path, page_budget: int | None = None,
                  extra: tuple[str, ...] = ()) -> list[str]:
    if system == PAGERFS:
        opts = ["-o", f"page_budget={page_budget}"] if page_budget is not None else []
        for o in extra:
            opts += ["-o", o]
        return [*pagerfs_cmd(), "mount", *opts, str(image), str(mnt)]
    return ["squashfuse_ll", str(image), str(mnt)]


def run_checked(cmd: list[str], what: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except FileNotFoundError:
        raise BenchError(f"{what}: {cmd[0]} not found")
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: no answer after {timeout:.0f} s")
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        raise BenchError(f"{what} failed (exit {proc.returncode}): {last[-1] if last else 'no message'}")
    return proc


def build_image(system: str, src: Path, image: Path, extra: tuple[str, ...] = ()) -> float:
    """Builds the image; returns wall seconds. Any old image is removed first so that
    neither builder gets to append or reuse."""
    if image.exists():
        image.unlink()
    start = time.perf_counter()
    run_checked(build_command(system, src, image, extra), f"building the {LABELS[system]} image")
    return time.perf_counter() - start


def daemon_pids(mnt: Path) -> list[int]:
    """Processes whose command line names the mountpoint (the FUSE daemon; `pagerfs
    mount` and squashfuse_ll both keep it in argv), other than this one."""
    target = os.path.realpath(mnt)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        for arg in args[1:]:
            if arg and os.path.realpath(arg.decode(errors="replace")) == target:
                pids.append(int(entry))
                break
    return pids


def pagerfs_reported_pid(mnt: Path) -> int | None:
    """The daemon's own answer: `pagerfs stats` reads it from the root's stats xattr."""
    try:
        return int(json.loads(os.getxattr(mnt, "user.pagerfs.stats"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def peak_rss_bytes(pid: int) -> int:
    """VmHWM of the process: the most resident memory it ever had."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmHWM for pid {pid}")


def set_read_ahead(mnt: Path, kib: int) -> None:
    """Sets the Linux readahead window of the mount's backing device (the bdi of a FUSE
    connection, 128 KiB by default): how many bytes of READs a sequential reader keeps
    in flight."""
    dev = os.stat(mnt).st_dev
    path = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    try:
        path.write_text(f"{kib}\n")
    except OSError as err:
        raise BenchError(f"cannot set {path}: {err.strerror}") from None


def is_mounted(mnt: Path) -> bool:
    target = os.path.realpath(mnt)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


@dataclass
class Mount:
    system: str
    mnt: Path
    pid: int

    def peak_rss(self) -> int:
        return peak_rss_bytes(self.pid)


@dataclass
class Mounts:
    """Every mount the bench made and has not yet taken down."""

    live: dict[Path, Mount] = field(default_factory=dict)

    def mount(self, system: str, image: Path, mnt: Path, page_budget: int | None = None,
              extra: tuple[str, ...] = (), read_ahead_kib: int | None = None) -> Mount:
        mnt.mkdir(parents=True, exist_ok=True)
        if is_mounted(mnt):
            force_unmount(mnt)
        # Registered before mounting: if the command dies halfway, cleanup still looks.
        self.live[mnt] = Mount(system, mnt, -1)
        run_checked(mount_command(system, image, mnt, page_budget, extra), f"mounting {LABELS[system]}", timeout=120)
        if not is_mounted(mnt):
            raise BenchError(f"{LABELS[system]}: mount command returned but {mnt} is not mounted")
        pids = daemon_pids(mnt)
        if system == PAGERFS:
            pid = pagerfs_reported_pid(mnt)
            pids = [pid] if pid is not None else pids
        if len(pids) != 1:
            raise BenchError(f"{LABELS[system]}: expected one daemon serving {mnt}, found {pids or 'none'}")
        m = Mount(system, mnt, pids[0])
        self.live[mnt] = m
        if read_ahead_kib is not None:
            set_read_ahead(mnt, read_ahead_kib)
        return m

    def unmount(self, m: Mount) -> None:
        """Unmounts and waits for the daemon to exit, so it cannot steal CPU from the
        next measurement."""
        cmd = [*pagerfs_cmd(), "umount", str(m.mnt)] if m.system == PAGERFS else ["fusermount3", "-u", str(m.mnt)]
        try:
            run_checked(cmd, f"unmounting {LABELS[m.system]}", timeout=60)
        except BenchError as first:
            # `pagerfs umount` also fails when the unmount worked but the daemon was slow
            # to exit; only a mount that is still there is worth a second try.
            if is_mounted(m.mnt):
                try:
                    run_checked(["fusermount3", "-u", str(m.mnt)], f"unmounting {LABELS[m.system]}", timeout=60)
                except BenchError:
                    raise first from None
            else:
                print(f"  note: {first} (but it is unmounted)", file=sys.stderr, flush=True)
        self.live.pop(m.mnt, None)
        wait_exit(m.pid, 30)

    def cleanup(self) -> None:
        for mnt in list(self.live):
            force_unmount(mnt)
            self.live.pop(mnt, None)


def force_unmount(mnt: Path) -> None:
    if shutil.which("fusermount3"):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if is_mounted(mnt):
        subprocess.run(["umount", "-l", str(mnt)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_exit(pid: int, timeout: float) -> None:
    if pid <= 0:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if state == "Z":  # exited, waiting for its parent to reap it
                return
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.02)
    raise BenchError(f"daemon {pid} still running {timeout:.0f} s after unmount")
