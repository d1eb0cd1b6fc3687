"""The mount daemon's life: preflight, fork, readiness, signals, and the end.

`pagerfs mount` checks what it can in the caller (so that mistakes get one clear line
and exit 2), then forks. The child mounts and reports over a pipe: "ok" once the mount
answers, or the one-line reason it could not mount. The parent returns only then.

SIGINT and SIGTERM end the FUSE loop and unmount cleanly. If the loop dies of anything
else, the session is closed without unmounting, so that programs see ENOTCONN rather
than an empty directory standing in for the image; `pagerfs umount` clears it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import logging.handlers
import os
import signal
import stat
import sys
import traceback

log = logging.getLogger("pagerfs.fuse")

FUSE_DEVICE = "/dev/fuse"


class MountError(Exception):
    """Why a mount cannot be made, in one line."""


@dataclasses.dataclass(frozen=True)
class MountOptions:
    allow_other: bool = False
    page_budget: int | None = 256 * 2**20
    pager_threads: int = 4
    # The pager's sequential read-ahead, bytes (0: none).
    read_ahead: int = 2 * 2**20
    # The kernel's read-ahead window on this mount (its BDI's read_ahead_kb): with the
    # default 128 KiB only one READ is in flight; a wider window keeps several going.
    # 0 turns it off: every READ is then one page the program itself touched, which is
    # what `pagerfs sweep` traces.
    read_ahead_kb: int = 1024
    fuse_options: tuple[str, ...] = ()
    # -o faults=FILE: rules armed before the mount answers (read by pagerfs.fuse.faults_file)
    faults: str | None = None


def parse_size(text: str) -> int:
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in units else ""
    number = t[: len(t) - len(unit)]
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise MountError(f"{text!r} is not a size (try 256M or 1G)") from None
    if value < 0:
        raise MountError(f"{text!r} is not a size")
    return int(value)


# FUSE options passed through as they are (pyfuse3 takes them at init).
_PASSTHROUGH = {"default_permissions", "noatime", "atime", "nodev", "nosuid", "dev", "suid"}


def parse_options(texts: list[str]) -> MountOptions:
    """-o a,b=c -o d ... -> MountOptions; unknown options are refused, not ignored."""
    from pagerfs.pager.user_pager import MIN_BUDGET

    fields: dict = {}
    passthrough: list[str] = []
    for text in texts:
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            if key == "allow_other" and not sep:
                fields["allow_other"] = True
            elif key == "page_budget" and sep:
                budget = parse_size(value)
                if budget < MIN_BUDGET:
                    raise MountError(f"page_budget={value}: at least {MIN_BUDGET // 2**20}M")
                fields["page_budget"] = budget
            elif key == "pager_threads" and sep:
                if not value.isdigit() or not 1 <= int(value) <= 64:
                    raise MountError(f"pager_threads={value}: expected 1 to 64")
                fields["pager_threads"] = int(value)
            elif key == "read_ahead" and sep:
                ahead = parse_size(value)
                if ahead > 64 * 2**20:
                    raise MountError(f"read_ahead={value}: at most 64M")
                fields["read_ahead"] = ahead
            elif key == "read_ahead_kb" and sep:
                if not value.isdigit() or not 0 <= int(value) <= 65536:
                    raise MountError(f"read_ahead_kb={value}: expected 0 to 65536")
                fields["read_ahead_kb"] = int(value)
            elif key == "faults" and sep and value:
                fields["faults"] = value
            elif key in _PASSTHROUGH and not sep:
                passthrough.append(key)
            elif key in ("ro", "rw"):
                continue  # always read-only; accepted so that fstab-style lines work
            else:
                raise MountError(f"unknown mount option {item!r}")
    return MountOptions(fuse_options=tuple(passthrough), **fields)


def set_read_ahead_kb(mountpoint: str, kib: int) -> bool:
    """Set the kernel's read-ahead window on our own mount, best effort (it needs
    root; without it the mount works with the kernel's default)."""
    # Called once the FUSE loop runs: the stat is answered only after the kernel has
    # taken our INIT reply, which sets the window from max_readahead (so setting it any
    # earlier would be undone).
    try:
        st_dev = os.stat(mountpoint).st_dev
        dev = f"{os.major(st_dev)}:{os.minor(st_dev)}"
        with open(f"/sys/class/bdi/{dev}/read_ahead_kb", "w") as f:
            f.write(str(kib))
        return True
    except OSError as err:
        log.info("read_ahead_kb=%d not set: %s", kib, err)
        return False


def preflight(mountpoint: str) -> None:
    """Refuse, with one line, what would make the mount fail or mislead. (The image
    itself is opened, and so checked, by the caller: this layer only uses the store's
    types.)"""
    if not os.path.exists(FUSE_DEVICE):
        raise MountError(f"{FUSE_DEVICE} is missing: load the fuse module (modprobe fuse)")
    try:
        fd = os.open(FUSE_DEVICE, os.O_RDWR)
        os.close(fd)
    except OSError as err:
        raise MountError(f"cannot open {FUSE_DEVICE}: {err.strerror}") from None
    try:
        st = os.stat(mountpoint)
    except FileNotFoundError:
        raise MountError(f"{mountpoint}: no such directory") from None
    except OSError as err:
        raise MountError(f"{mountpoint}: {err.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"{mountpoint}: not a directory")
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint}: something is already mounted there")
    if os.listdir(mountpoint):
        raise MountError(f"{mountpoint}: directory is not empty")


def _setup_logging(foreground: bool, log_path: str | None, debug: bool) -> None:
    if log_path:
        handler: logging.Handler = logging.FileHandler(log_path)
    elif foreground:
        handler = logging.StreamHandler(sys.stderr)
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler("/dev/log")
    else:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter(
        "%(asctime)s pagerfs[%(process)d] %(threadName)s %(levelname)s %(message)s"))
    root = logging.getLogger("pagerfs")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Cap glibc's malloc arenas; False where that cannot be done (not glibc).

    glibc gives each new thread an arena of its own, up to 8 per core, and each keeps
    the memory its thread freed. The daemon's pager and read-ahead threads allocate and
    free chunk-sized buffers all the time, so with one arena each the daemon's peak RSS
    reading a file 4x its 128 MiB budget was 214-222 MiB; with 2 arenas, 194-197 MiB
    (tools/bench --only memory); with 1, 185-186 against 191-193 with 2 (2026-12-03,
    alternating mounts), no slower: the threads allocate a few chunk buffers per MiB,
    far too few to contend for one arena's lock. Must run before the threads start.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_arena_max = -8  # from glibc's malloc.h
    return mallopt(m_arena_max, arenas) == 1


def serve(image, image_path: str, mountpoint: str, options: MountOptions,
          trace_path: str | None, ready, faults=()) -> int:
    """Mount the open image and serve until unmounted or signalled; closes the image.
    `ready(error_or_None)` is called exactly once, when the mount answers or when it
    cannot be made. `faults`, [(inode, rule)], are armed before the session starts."""
    import pyfuse3
    import trio

    from pagerfs.fuse import session
    from pagerfs.fuse.core import FileSystem
    from pagerfs.fuse.operations import Operations
    from pagerfs.pager.trace import Trace
    from pagerfs.pager.user_pager import UserPager

    limit_malloc_arenas()
    try:
        pager = UserPager(image, threads=options.pager_threads, budget=options.page_budget,
                          trace=Trace.open(trace_path), read_ahead=options.read_ahead)
    except Exception as err:
        image.close()
        ready(f"cannot start: {err}")
        return 2
    for ino, rule in faults:
        pager.add_fault(ino, rule)
    fs = FileSystem(image, pager, image_bytes=os.path.getsize(image_path))
    # libfuse splits options at commas; a backslash keeps one literal.
    fsname = os.path.abspath(image_path).replace("\\", "\\\\").replace(",", "\\,")
    # Not "ro": the VFS refuses setxattr on a read-only mount (EROFS), and setxattr is
    # the fault-injection channel. Writes are refused by the handlers instead (EROFS).
    fuse_options = {"fsname=" + fsname, "subtype=pagerfs",
                    "default_permissions", *options.fuse_options}
    if options.allow_other:
        fuse_options.add("allow_other")
    session.enable()
    try:
        pyfuse3.init(Operations(fs), mountpoint, fuse_options)
    except Exception as err:
        pager.stop()
        image.close()
        ready(f"cannot mount on {mountpoint}: {err}")
        return 2

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            # Signals are watched before readiness is reported, so that a SIGTERM right
            # after `pagerfs mount` returns still unmounts cleanly.
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
                async def watch() -> None:
                    async for signum in signals:
                        log.info("%s: unmounting", signal.Signals(signum).name)
                        pager.hurry()  # READs in flight must end for the loop to end
                        pyfuse3.terminate()
                        return

                nursery.start_soon(watch)

                async def announce() -> None:
                    # Ready only once the window is set: a program started right after
                    # `pagerfs mount` returns must not read under the kernel's default.
                    await trio.to_thread.run_sync(
                        set_read_ahead_kb, mountpoint, options.read_ahead_kb,
                        abandon_on_cancel=True)
                    if tell(None):
                        announced.append(True)
                    else:
                        # Whoever ran `pagerfs mount` is gone (killed while it waited):
                        # nobody knows of this mount, so it must not stay.
                        log.warning("nobody is waiting for this mount any more: unmounting")
                        pyfuse3.terminate()

                nursery.start_soon(announce)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()

    announced: list[bool] = []
    told: list[bool] = []

    def tell(error: str | None) -> bool:
        """Report readiness (or why not) once; False if nobody is there to hear it."""
        if told:
            return False
        told.append(True)
        try:
            ready(error)
        except OSError:  # the pipe's reader is gone
            return False
        return True

    clean = False
    try:
        trio.run(main)
        clean = True
        if not announced:  # unmounted from outside before the window was set
            tell("the mount went away before it was ready")
    except BaseException as err:
        log.critical("FUSE loop died:\n%s", traceback.format_exc())
        if not announced:
            tell(f"the FUSE loop failed to start: {err}")
    finally:
        # A clean end unmounts, and so does a failure before anyone was told the mount
        # was ready; a crash of a mount in use leaves it to answer ENOTCONN.
        pyfuse3.close(unmount=clean or not announced)
        pager.stop(timeout=2.0)
        image.close()
    return 0 if clean else 1


def daemonize(image, image_path: str, mountpoint: str, options: MountOptions,
              trace_path: str | None, log_path: str | None, debug: bool, faults=()) -> None:
    """Fork a background daemon that serves the open image; return once it serves, or
    raise MountError. The caller must have no threads running (fork)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(read_end)
        status = 2
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            os.chdir("/")
            _setup_logging(False, log_path, debug)

            def ready(error: str | None) -> None:
                os.write(write_end, b"ok\n" if error is None else error.encode() + b"\n")
                os.close(write_end)

            status = serve(image, image_path, mountpoint, options, trace_path, ready, faults)
        finally:
            os._exit(status)
    os.close(write_end)
    image.close()  # the daemon has its own copy of the descriptor
    chunks = []
    while chunk := os.read(read_end, 4096):
        chunks.append(chunk)
    os.close(read_end)
    message = b"".join(chunks).decode(errors="replace").strip()
    if message != "ok":
        os.waitpid(pid, 0)
        raise MountError(message or "the daemon died before the mount was ready")


def foreground(image, image_path: str, mountpoint: str, options: MountOptions,
               trace_path: str | None, log_path: str | None, debug: bool, faults=()) -> int:
    _setup_logging(True, log_path, debug)
    failure: list[str] = []

    def ready(error: str | None) -> None:
        if error:
            failure.append(error)

    status = serve(image, image_path, mountpoint, options, trace_path, ready, faults)
    # A clean end before readiness is a stop the user asked for (Ctrl-C as the mount
    # came up): nobody waits to be told, so it is no failure of the mount.
    if failure and status != 0:
        raise MountError(failure[0])
    return status
