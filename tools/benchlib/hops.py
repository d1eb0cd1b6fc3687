"""Where one cold random 4 KiB read spends its time, hop by hop.

The pagerfs daemon is started in the foreground through this module, which first wraps
a few of its functions (from outside: no pagerfs file changes) so that each records a
time stamp on entry or exit. A client then does the bench's cold random preads one at
a time; each read that became a page request is cut into the hops between the stamps
that fall inside it. The wrapped names are internal: a stage whose function has gone
is skipped, and the table shows what is left.

Run as `python -m benchlib.hops mount -f IMAGE MNT` (the daemon side), with
HOPS_EVENTS naming the file the stamps are written to when it exits.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

from benchlib import measure
from benchlib.systems import BenchError, force_unmount, is_mounted

# (module, attribute path, stamp on entry, stamp on exit), in the order a miss meets them.
STAGES = (
    ("pagerfs.fuse.operations", "Operations.read", "FUSE handler entered (trio thread)",
     "FUSE handler done (trio thread)"),
    ("pagerfs.zircon.port", "Port.queue", None, "page request queued on the port"),
    ("pagerfs.pager.user_pager", "UserPager._handle", "pager thread has the packet", "request served"),
    ("pagerfs.store.reader", "Image.read_chunk", "store: read chunk", "store: chunk verified"),
    ("pagerfs.store.reader", "Image.read_chunk_pages", "store: read chunk", "store: chunk verified"),
    # The native codec's one call per block: pread, lz4 and SHA-256 without the GIL.
    ("pagerfs.store.reader", "Image._load_block", "store: codec call", "store: codec done"),
    ("pagerfs.fuse.operations", "_Reply.__call__", "bytes handed back (pager thread)", None),
)
# The true order of stamps within one miss (entries and exits interleave; a name seen
# more than once, like SHA-256 of several pages, counts at its last time).
SEQUENCE = [
    "FUSE handler entered (trio thread)", "page request queued on the port",
    "pager thread has the packet", "store: read chunk", "store: codec call",
    "store: codec done", "store: chunk verified", "bytes handed back (pager thread)", "request served",
    "FUSE handler done (trio thread)",
]

_events: list[tuple[int, str]] = []


def _mark(name: str) -> None:
    _events.append((time.perf_counter_ns(), name))


def _stamped(fn, before: str | None, after: str | None):
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def awrapper(*a, **k):
            if before:
                _mark(before)
            try:
                return await fn(*a, **k)
            finally:
                if after:
                    _mark(after)
        return awrapper

    @functools.wraps(fn)
    def wrapper(*a, **k):
        if before:
            _mark(before)
        try:
            return fn(*a, **k)
        finally:
            if after:
                _mark(after)
    return wrapper


def install() -> list[str]:
    """Wraps every stage that exists; returns the names of those that do not."""
    import importlib
    missing = []
    for module_name, path, before, after in STAGES:
        module = importlib.import_module(module_name)
        *owners, attr = path.split(".")
        owner = module
        try:
            for name in owners:
                child = getattr(owner, name)
                if isinstance(child, types.ModuleType):
                    # A module the store uses (os, lz4.block, hashlib): give the store
                    # its own stand-in, so the real module stays untouched.
                    stand_in = types.SimpleNamespace(**{k: getattr(child, k) for k in dir(child)
                                                        if not k.startswith("__")})
                    setattr(owner, name, stand_in)
                    child = stand_in
                owner = child
            setattr(owner, attr, _stamped(getattr(owner, attr), before, after))
        except AttributeError:
            missing.append(f"{module_name}.{path}")
    return missing


def daemon_main(argv: list[str]) -> int:
    missing = install()
    from pagerfs.cli import main
    try:
        return main(argv)
    finally:
        with open(os.environ["HOPS_EVENTS"], "w") as f:
            json.dump({"events": _events, "missing": missing}, f)


def split(events: list[tuple[int, str]], windows: list[tuple[int, int]]) -> dict[str, list[float]]:
    """µs per hop, over the client reads that became exactly one page request."""
    hops: dict[str, list[float]] = {}
    events = sorted(events)
    j = 0
    for c0, c1 in windows:
        while j < len(events) and events[j][0] < c0:
            j += 1
        inside = []
        k = j
        while k < len(events) and events[k][0] <= c1:
            inside.append(events[k])
            k += 1
        names = [n for _, n in inside]
        if names.count("page request queued on the port") != 1 or names.count(SEQUENCE[0]) != 1:
            continue
        at = {n: t for t, n in inside}
        marks = [(c0, "client pread()")] + [(at[s], s) for s in SEQUENCE if s in at] + [(c1, "client pread() returns")]
        for (t0, a), (t1, b) in zip(marks, marks[1:]):
            hops.setdefault(f"{a} → {b}", []).append((t1 - t0) / 1000)
        hops.setdefault("total", []).append((c1 - c0) / 1000)
    return hops


def measure_hops(image: Path, mnt: Path, offsets: list[int], out: Path) -> dict:
    mnt.mkdir(parents=True, exist_ok=True)
    events_path = out / "hops-events.json"
    env = dict(os.environ, HOPS_EVENTS=str(events_path),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    daemon = subprocess.Popen([sys.executable, "-m", "benchlib.hops", "mount", "-f", str(image), str(mnt)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(mnt):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"hops: the wrapped daemon did not mount: {daemon.stderr.read().decode()[-200:]}")
            time.sleep(0.02)
        measure.drop_caches()
        windows = []
        fd = os.open(mnt / "big.tar", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            for off in offsets:
                t0 = time.perf_counter_ns()
                os.pread(fd, measure.PAGE, off)
                windows.append((t0, time.perf_counter_ns()))
        finally:
            os.close(fd)
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        daemon.wait(timeout=30)
    finally:
        if is_mounted(mnt):
            force_unmount(mnt)
        if daemon.poll() is None:
            daemon.terminate()
            daemon.wait(timeout=30)
    data = json.loads(events_path.read_text())
    events_path.unlink()
    hops = split([tuple(e) for e in data["events"]], windows)
    return {"reads": len(windows), "misses": len(hops.get("total", [])), "missing_stages": data["missing"],
            "median_us": {k: round(statistics.median(v), 1) for k, v in hops.items()}}


def describe(result: dict) -> list[str]:
    lines = [f"== one cold random 4 KiB read, hop by hop: median µs over the {result['misses']} of "
             f"{result['reads']} reads that became a page request (stamps cost ~1 µs each)"]
    for k, v in result["median_us"].items():
        if k != "total":
            lines.append(f"  {v:7.1f}  {k}")
    lines.append(f"  {result['median_us'].get('total', 0):7.1f}  total, as the client saw it")
    if result["missing_stages"]:
        lines.append(f"  (not stamped, gone from pagerfs: {', '.join(result['missing_stages'])})")
    return lines + [""]


if __name__ == "__main__":
    sys.exit(daemon_main(sys.argv[1:]))
