"""testing.mount: a pagerfs mount for the length of a test, and never longer.

pyfuse3 serves one mount per process, so each mount's daemon is a process of its own,
started with the real command line (`pagerfs mount`, which returns once the mount
answers; run by pagerfs.testing.starter, through a forkserver). Every mount this process made is remembered until it is closed; an
atexit hook and SIGTERM/SIGINT handlers close what is left, so that a test run that is
killed or interrupted does not leave mounts or daemons behind.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

from pagerfs.cli import unmount as _unmount
from pagerfs.cli.common import FAULT, FAULTS, STATS, UNFAULT, CommandError
from pagerfs.testing.errors import (FuseUnavailable, MountError, OpenFilesWarning,
                                    PagerfsError, RuleError)
from pagerfs.testing.images import Image
from pagerfs.testing.rules import Rule, as_rule
from pagerfs.testing.starter import starter

# How long a clean daemon may take to exit after its unmount before it is killed.
_EXIT_WAIT = 5.0


def fuse_missing_reason() -> str | None:
    """Why FUSE mounts cannot work here, or None if they can."""
    try:
        st = os.stat("/dev/fuse")
    except OSError:
        return "/dev/fuse is missing (modprobe fuse)"
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(10, 229):
        return "/dev/fuse is not the FUSE device (10, 229)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable by this user"
    if not shutil.which("fusermount3"):
        return "fusermount3 is not installed (Debian package fuse3)"
    return None


# -- the last-resort sweep -------------------------------------------------------------

_live: dict[int, "Mount"] = {}
# Daemons still serving lazily detached mounts, by pidfd (a pid could be reused by the
# time the sweep runs; a pidfd names that very process).
_lingering: list[int] = []
# Reentrant: the SIGTERM/SIGINT sweep runs in the main thread, which may hold it.
_lock = threading.RLock()
_sweep_installed = False
# The process whose mounts these are: a child forked from it (which inherits these
# tables, the atexit hook and the signal handlers) must not unmount its parent's.
_owner = os.getpid()


def _sweep() -> None:
    """Close every mount still open and end every daemon left serving one."""
    if os.getpid() != _owner:
        return
    with _lock:
        mounts = list(_live.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mount in mounts:
            try:
                mount.close(check=False)
            except Exception:  # last resort: go on with the others
                pass
    with _lock:
        pidfds = list(_lingering)
        _lingering.clear()
    for pidfd in pidfds:
        _end(pidfd, signal.SIGTERM, 2.0)
        os.close(pidfd)
    starter.stop()


def _on_signal(signum, frame, previous) -> None:
    _sweep()
    if callable(previous):
        previous(signum, frame)  # e.g. Python's own SIGINT handler: KeyboardInterrupt
    elif previous != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_sweep() -> None:
    global _sweep_installed, _owner
    if _owner != os.getpid():  # a forked child: what the tables hold is its parent's
        with _lock:
            _live.clear()
            _lingering.clear()  # the parent's descriptors: left to the parent
        _owner = os.getpid()
    if _sweep_installed:
        return
    _sweep_installed = True
    atexit.register(_sweep)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; atexit still runs
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if previous is None:  # set from C: leave it alone
            continue
        signal.signal(signum, lambda n, f, p=previous: _on_signal(n, f, p))


def _end(pidfd: int, first: int, wait: float) -> None:
    """Signal a daemon (by pidfd) and wait for it; SIGKILL if it does not go."""
    for signum in (first, signal.SIGKILL):
        try:
            signal.pidfd_send_signal(pidfd, signum)
        except ProcessLookupError:
            return
        if select.select([pidfd], [], [], wait)[0]:
            return




def _detach(path: str) -> None:
    subprocess.run(["fusermount3", "-uz", path], capture_output=True)


# -- faults ----------------------------------------------------------------------------

class FaultHandle:
    """A rule armed by Mount.fault(); `.remove()` takes exactly that rule away."""

    def __init__(self, mount: "Mount", rule: Rule, rule_id: int):
        self.mount = mount
        self.rule = rule
        self.id = rule_id
        self._final_count: int | None = None  # its fire count, once it is gone

    @property
    def path(self) -> str:
        return os.fspath(self.rule.path)

    @property
    def removed(self) -> bool:
        return self._final_count is not None

    def fired_count(self) -> int:
        """Requests this rule acted on (failed, corrupted or delayed) so far."""
        if self._final_count is not None:
            return self._final_count
        for state in self.mount.stats(self.path)["rules"]:
            if state["id"] == self.id:
                return state["fired"]
        return 0

    def remove(self) -> None:
        if self.removed:
            return
        count = self.fired_count()
        try:
            os.setxattr(self.mount / self.path, UNFAULT, f"id={self.id}".encode())
        except OSError as err:
            if err.errno != errno.ENODATA:  # already gone with a clear()
                raise self.mount._failure(self.path, err) from None
        self._final_count = count

    def __repr__(self) -> str:
        return f"<FaultHandle {self.path}: {self.rule.text} (id {self.id})>"


# -- the mount -------------------------------------------------------------------------

class Mount:
    """A live pagerfs mount. Use as a context manager, or call close()."""

    def __init__(self, image: Path, path: Path, pid: int, state: Path, owns_path: bool,
                 trace_path: Path | None, log_path: Path):
        self.image = image
        self.path = path
        self.pid = pid
        self.trace_path = trace_path
        self.log_path = log_path
        # ERROR and CRITICAL lines of the daemon's log, collected at close().
        self.daemon_errors: list[str] = []
        self._state = state
        self._owns_path = owns_path
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:  # died already: close() reports it
            self._pidfd = None
        self._handles: list[FaultHandle] = []
        self._ruled: set[str] = set()
        self._closed = False

    def __truediv__(self, rel) -> Path:
        return self.path / os.fspath(rel).lstrip("/")

    def __fspath__(self) -> str:
        return str(self.path)

    def __enter__(self) -> "Mount":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pagerfs Mount of {self.image} on {self.path} (daemon {self.pid})>"

    # -- the control channel ------------------------------------------------------------

    def _failure(self, rel, err: OSError) -> PagerfsError:
        if err.errno == errno.ENOTCONN or not self.daemon_alive():
            return MountError(f"the pagerfs daemon of {self.path} (pid {self.pid}) is gone")
        if err.errno == errno.ENOENT:
            return RuleError(f"{rel}: not in the image")
        if err.errno == errno.ENOTSUP:
            return PagerfsError(f"{rel}: not a regular file of the mount")
        return PagerfsError(f"{rel}: {err.strerror}")

    def _regular(self, rel) -> tuple[str, Path, os.stat_result]:
        rel = os.fspath(rel).lstrip("/")
        target = self / rel
        try:
            st = os.lstat(target)
        except (FileNotFoundError, NotADirectoryError):
            raise RuleError(f"{rel}: not in the image") from None
        except OSError as err:
            raise self._failure(rel, err) from None
        if stat.S_ISDIR(st.st_mode):
            raise RuleError(f"{rel}: a directory; rules apply to regular files")
        if stat.S_ISLNK(st.st_mode):
            raise RuleError(f"{rel}: a symbolic link; name the file it points to")
        return rel, target, st

    def fault(self, rel, pages=None, error: str = "IO", count: int | None = None,
              probability: float | None = None, seed: int | None = None,
              delay_ms: int | None = None) -> FaultHandle:
        """Arm a rule on the file at `rel` (or arm a testing.Rule given as `rel`); the
        file's pages are dropped, so the next access really asks the pager. Raises
        RuleError for a malformed rule, a path that is not a regular file of the image
        or pages past its end."""
        if isinstance(rel, Rule):
            rule = rel
        else:
            if pages is None:
                raise RuleError(f"{rel}: which pages? (pages=3, pages=range(2, 5))")
            rule = Rule(rel, pages, error, count, probability, seed, delay_ms)
        path, target, st = self._regular(rule.path)
        rule = Rule(path, rule.pages, rule.error, rule.count, rule.probability, rule.seed,
                    rule.delay_ms)
        try:
            os.setxattr(target, FAULT, rule.text.encode(), follow_symlinks=False)
        except OSError as err:
            if err.errno == errno.EINVAL:
                pages_in_file = -(-st.st_size // 4096)
                raise RuleError(f"{path}: {rule.text}: pages past the end of the file "
                                f"({pages_in_file} pages)") from None
            raise self._failure(path, err) from None
        ids = [s["id"] for s in self.stats(path)["rules"] if s["rule"] == rule.text]
        handle = FaultHandle(self, rule, max(ids))
        self._handles.append(handle)
        self._ruled.add(path)
        return handle

    def clear(self, rel=None) -> None:
        """Remove every rule of one file, or (rel None) of every file this mount has
        armed rules on (with fault() or faults=)."""
        paths = [os.fspath(rel).lstrip("/")] if rel is not None else sorted(self._ruled)
        for path in paths:
            for handle in self._handles:
                if handle.path == path and not handle.removed:
                    handle._final_count = handle.fired_count()
            try:
                os.removexattr(self / path, FAULT)
            except OSError as err:
                if err.errno != errno.ENODATA:  # no rules: already clear
                    raise self._failure(path, err) from None

    def rules(self, rel) -> list[str]:
        """The file's rules, one text each, as user.pagerfs.faults lists them."""
        path, target, _ = self._regular(rel)
        try:
            return os.getxattr(target, FAULTS).decode().splitlines()
        except OSError as err:
            raise self._failure(path, err) from None

    def stats(self, rel=None) -> dict:
        """user.pagerfs.stats: the mount's totals, or one file's counters and rules."""
        target = self.path if rel is None else self / rel
        try:
            return json.loads(os.getxattr(target, STATS))
        except OSError as err:
            raise self._failure(rel or self.path, err) from None

    def fired(self, what) -> bool:
        """Did the rule fail (or corrupt, or delay) anything? `what` is a FaultHandle,
        a Rule (any of the file's rules with its text), or a path (any rule the file
        has had since the mount)."""
        if isinstance(what, FaultHandle):
            return what.fired_count() > 0
        if isinstance(what, Rule):
            path = os.fspath(what.path).lstrip("/")
            return any(s["fired"] for s in self.stats(path)["rules"] if s["rule"] == what.text)
        return self.stats(os.fspath(what).lstrip("/"))["rule_firings"] > 0

    # -- the trace ----------------------------------------------------------------------

    def mark(self) -> int:
        """A point in the trace, for trace(since=...)."""
        return self._trace_file().stat().st_size

    def trace(self, since: int = 0) -> list[dict]:
        """The trace's events since a mark (the pager's page request packets, supplies
        and FAILs, and the kernel's READs), each a dict with its "event"."""
        with open(self._trace_file(), "rb") as f:
            f.seek(since)
            data = f.read()
        return [json.loads(line) for line in data.split(b"\n")[:-1] if line]

    def _trace_file(self) -> Path:
        if self.trace_path is None:
            raise PagerfsError("this mount has no trace: mount it with trace=True")
        return self.trace_path

    # -- the end ------------------------------------------------------------------------

    def _kill(self) -> None:
        if self._pidfd is not None:
            _end(self._pidfd, signal.SIGKILL, _EXIT_WAIT)

    def _exited(self, wait: float) -> bool:
        return self._pidfd is None or bool(select.select([self._pidfd], [], [], wait)[0])

    def daemon_alive(self) -> bool:
        return not self._exited(0)

    def close(self, *, check: bool = True) -> None:
        """Unmount and end the daemon. Files still open: the mount is detached lazily
        (they keep working until closed) and an OpenFilesWarning names them. A daemon
        that does not answer is killed. With `check`, a daemon that had died raises
        MountError here, once the mount is cleared."""
        if self._closed:
            return
        self._closed = True
        with _lock:
            _live.pop(id(self), None)
        try:
            died, held = self._teardown()
        finally:
            self._collect_log()
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
            if self._owns_path:
                try:
                    self.path.rmdir()
                except OSError:
                    pass
            shutil.rmtree(self._state, ignore_errors=True)
        if held:
            what = ", ".join(f"{os.path.relpath(p, self.path)} (pid {pid} {cmd})" if pid
                             else "something this process cannot see" for pid, cmd, p in held[:10])
            warnings.warn(OpenFilesWarning(
                f"pagerfs: {self.path}: files still open at unmount: {what}; "
                f"unmounted lazily (they work until closed)"), stacklevel=2)
        if died and check:
            raise MountError(died)

    def _teardown(self) -> tuple[str | None, list]:
        where = str(self.path)
        # Asked rather than only looked up: a daemon killed a moment ago may not have
        # exited yet, but its mount already answers ENOTCONN.
        stats = _unmount.daemon_stats(where) if self.daemon_alive() else None
        if stats is None:
            if not self._exited(_EXIT_WAIT):
                self._kill()
            if _unmount.mount_type(where):
                _detach(where)
            return (f"the pagerfs daemon (pid {self.pid}) of {where} died during the test"
                    f"{self._last_words()}; the mount was cleared"), []
        if stats == _unmount.HUNG:
            self._kill()
            _detach(where)
            return f"the pagerfs daemon (pid {self.pid}) of {where} did not answer; killed", []
        # Scanning /proc costs more than the rest of an unmount: only when the daemon
        # says something is open (a working directory inside, which it cannot see,
        # shows up as a busy unmount below).
        held = _unmount.holders(where) if stats.get("open_handles", 1) else []
        if not held:
            try:
                _unmount.unmount(where)
            except CommandError as err:
                if "busy" in str(err):
                    # (None: held by something /proc does not show us, another namespace)
                    held = _unmount.holders(where) or [(None, "", where)]
                else:  # a daemon that does not answer, or does not exit
                    self._kill()
                    if _unmount.mount_type(where):
                        _detach(where)
                    return f"{err}; daemon {self.pid} killed", []
            else:
                if not self._exited(_EXIT_WAIT):
                    self._kill()
                return None, []
        _detach(where)
        with _lock:
            _lingering.append(os.dup(self._pidfd))
        return None, held

    def _last_words(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f" (its log ends: {lines[-1].strip()})" if lines else ""

    def _collect_log(self) -> None:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return
        self.daemon_errors = [line for line in text.splitlines()
                              if " ERROR " in line or " CRITICAL " in line]


def _faults_file(faults, state: Path) -> tuple[Path | None, list[Rule]]:
    """The faults file to mount with: the caller's, or one written from the rules."""
    if faults is None:
        return None, []
    if isinstance(faults, (str, os.PathLike)):
        return Path(faults).absolute(), []
    rules = [as_rule(item) for item in faults]
    path = state / "faults"
    path.write_text("".join(rule.line + "\n" for rule in rules))
    return path, rules


def _refusal(message: str, faults: Path | None, rules: list[Rule]) -> PagerfsError:
    """The error for a `pagerfs mount` that refused, from its one line."""
    message = message.removeprefix("pagerfs: ")
    if faults is not None and message.startswith(f"{faults}:"):
        if not rules:
            return RuleError(message)
        where, _, reason = message[len(f"{faults}:"):].partition(": ")
        if where.isdigit() and 1 <= int(where) <= len(rules):
            rule = rules[int(where) - 1]
            path = os.fspath(rule.path)
            reason = reason.removeprefix(f"{path}: ")
            return RuleError(f"{path}: {rule.text}: {reason}")
        return RuleError(message)
    return MountError(message)


def mount(image, mountpoint=None, *, faults=None, options=(), trace: bool = False,
          log=None, timeout: float = 10.0) -> Mount:
    """Mount an image (a testing.Image or an image file's path); returns once the mount
    answers. `faults`: rules armed before the first request, as an iterable of
    testing.Rule or (path, rule text), or the path of a faults file. `options`: extra
    `-o` options. `trace`: keep the daemon's trace, for Mount.trace(). `log`: where the
    daemon logs (default: a file removed at close()). Raises FuseUnavailable,
    MountError or RuleError with one line."""
    reason = fuse_missing_reason()
    if reason:
        raise FuseUnavailable(reason)
    image_path = Path(image.path if isinstance(image, Image) else image).resolve()
    if not image_path.is_file():
        raise MountError(f"{image_path}: no such image file")
    state = Path(tempfile.mkdtemp(prefix="pagerfs-mount-"))
    owns_path = mountpoint is None
    where = state / "mnt" if owns_path else Path(mountpoint).resolve()
    try:
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MountError(f"{where}: cannot be a mount point: {err.strerror}") from None
        faults_path, rules = _faults_file(faults, state)
        log_path = Path(log).resolve() if log is not None else state / "daemon.log"
        trace_path = state / "trace.jsonl" if trace else None
        command = ["mount", str(image_path), str(where), "--log", str(log_path)]
        for option in options:
            command += ["-o", option]
        if faults_path is not None:
            command += ["-o", f"faults={faults_path}"]
        if trace_path is not None:
            command += ["--trace", str(trace_path)]
        status, stderr = starter.run(command, timeout)
        if status == -signal.SIGKILL:
            _abandon(str(where))
            raise MountError(f"{image_path} on {where}: not ready after {timeout:g} s")
        if status != 0:
            lines = stderr.strip().splitlines()
            raise _refusal(lines[-1] if lines else f"pagerfs mount exited {status}",
                           faults_path, rules)
        stats = _unmount.daemon_stats(str(where), timeout)
        if not isinstance(stats, dict):
            _abandon(str(where))
            raise MountError(f"{image_path} on {where}: mounted, but the daemon does not answer")
        m = Mount(image_path, where, int(stats["pid"]), state, owns_path, trace_path, log_path)
    except BaseException:
        if owns_path:
            try:
                where.rmdir()
            except OSError:
                pass
        shutil.rmtree(state, ignore_errors=True)
        raise
    m._ruled.update(os.fspath(r.path).lstrip("/") for r in rules)
    _install_sweep()
    with _lock:
        _live[id(m)] = m
    return m


def _abandon(where: str) -> None:
    """A mount that came up wrong: kill its daemon if it answers, and detach it."""
    if _unmount.mount_type(where) is None:
        return
    stats = _unmount.daemon_stats(where, 1.0)
    if isinstance(stats, dict) and "pid" in stats:
        try:
            pidfd = os.pidfd_open(int(stats["pid"]))
        except ProcessLookupError:
            pidfd = None
        if pidfd is not None:
            _end(pidfd, signal.SIGKILL, _EXIT_WAIT)
            os.close(pidfd)
    _detach(where)
