"""Where the pagerfs daemon's time goes during a cold sequential read: py-spy samples
the running daemon (all threads, from outside, so the daemon runs unmodified), and the
samples are split by what the innermost frame is doing.

The split is by the leaf frame's layer (pagerfs.store / .zircon / .pager / .fuse, trio's
thread handoff, pyfuse3 and the event loop) and, inside the store, by the source line it
is on (lz4, SHA-256, pread), since py-spy shows a C call as the Python line making it.
"""

from __future__ import annotations

import collections
import json
import linecache
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchlib import measure
from benchlib.stats import percentile
from benchlib.systems import PAGERFS, BenchError

RATE = 250  # samples per second per thread
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise BenchError("py-spy not found (it is in the bench extra: run tools/setup)")
    return found


def parse_raw(text: str) -> list[tuple[str, list[tuple[str, str, int]], int]]:
    """py-spy's raw (collapsed) output -> [(thread name, [(func, file, line) root first], count)]."""
    stacks = []
    for line in text.splitlines():
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            continue
        parts = body.split(";")
        thread = parts[0].split(": ", 1)[-1] if parts[0].startswith("thread") else parts[0]
        frames = []
        for p in parts[1:]:
            m = FRAME.match(p)
            if m:
                frames.append((m["func"], m["file"], int(m["line"])))
        stacks.append((thread, frames, int(count)))
    return stacks


def source_line(file: str, line: int, roots: list[Path]) -> str:
    for root in roots:
        path = root / file
        if path.exists():
            return linecache.getline(str(path), line).strip()
    return ""


def store_work(text: str, func: str) -> str:
    t = text.lower()
    if "read_block(" in t or "decode_block(" in t or "check_pages(" in t:
        return "store: native codec (pread, lz4, SHA-256)"
    if "lz4" in t or "decompress" in t:
        return "store: lz4 decompress"
    if "sha256" in t or "hashlib" in t or "digest" in t:
        return "store: SHA-256 verify"
    if "pread" in t or "os.read" in t:
        return "store: pread of the image"
    return f"store: other ({func})"


# Innermost frames that mean "this thread is blocked, not working".
WAITS = (
    ("threading.py", "Condition.wait", "waiting: pager thread idle on the port"),
    ("pagerfs/zircon/port.py", "Port.wait", "waiting: pager thread idle on the port"),
    ("pagerfs/zircon/vmo.py", "PagerVmo.fetch", "waiting: reader parked for the pager"),
    ("trio/_core/_io_epoll.py", "EpollIOManager.get_events", "waiting: event loop in epoll"),
    ("trio/_core/_thread_cache.py", "WorkerThread._work", "waiting: trio worker idle"),
)


def waiting(frames: list[tuple[str, str, int]], roots: list[Path]) -> str | None:
    if not frames:
        return None
    func, file, line = frames[-1]
    for wfile, wfunc, label in WAITS:
        if file.endswith(wfile) and func == wfunc:
            text = source_line(file, line, roots)
            if wfunc != "PagerVmo.fetch" or "acquire" in text:
                return label
    return None


def category(thread: str, frames: list[tuple[str, str, int]], roots: list[Path]) -> str:
    """What a sample is doing, judged from its innermost frame that is ours or trio's."""
    wait = waiting(frames, roots)
    if wait:
        return wait
    for func, file, line in reversed(frames):
        if file.startswith("pagerfs/store/"):
            return store_work(source_line(file, line, roots), func)
        if file.startswith("pagerfs/zircon/"):
            return "kernel model (pagerfs.zircon)"
        if file.startswith("pagerfs/pager/"):
            return "user pager (pagerfs.pager)"
        if file.startswith("pagerfs/fuse/"):
            return "FUSE handlers (pagerfs.fuse)"
        if file.startswith(("trio/_threads", "trio/_core/_thread_cache", "trio/_core/_wakeup", "outcome/")):
            return "trio cross-thread wake-up (run_sync_soon, workers)"
        if file.startswith(("trio/", "pyfuse3", "_pyfuse3")):
            return "pyfuse3 + trio event loop"
    return "other (interpreter, threading)"


def thread_kind(name: str) -> str:
    return re.sub(r"[- ]?\d+$", "", name) or name


def summarize(stacks, roots: list[Path]) -> dict:
    by_cat: collections.Counter = collections.Counter()
    by_thread: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    by_leaf: collections.Counter = collections.Counter()
    total = 0
    for thread, frames, count in stacks:
        total += count
        cat = category(thread, frames, roots)
        by_cat[cat] += count
        by_thread[thread_kind(thread)][cat] += count
        ours = [f for f in frames if f[1].startswith("pagerfs/")]
        if ours and not cat.startswith("waiting"):
            func, file, line = ours[-1]
            by_leaf[f"{file}:{line} {func}: {source_line(file, line, roots)[:70]}"] += count
    return {"samples": total, "by_category": dict(by_cat.most_common()),
            "by_thread": {k: dict(v.most_common()) for k, v in by_thread.items()},
            "top_lines": dict(by_leaf.most_common(15))}


def package_roots() -> list[Path]:
    import trio
    repo = Path(__file__).resolve().parents[2]
    return [repo, Path(trio.__file__).resolve().parents[1]]


def proc_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def sampled_read(bench, out: Path, stem: str, mode: list[str]) -> dict:
    """One fresh mount, dropped caches, one cold sequential read under py-spy."""
    raw = out / f"{stem}.raw"
    m = bench.mount(PAGERFS)
    try:
        path = m.mnt / bench.ds.big_rel
        measure.drop_caches()
        spy = subprocess.Popen([py_spy(), "record", "-p", str(m.pid), "--threads", "--format", "raw",
                                "-r", str(RATE), "-o", str(raw), "--nonblocking", *mode],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            time.sleep(1.0)  # py-spy attaches asynchronously; let it start sampling
            u0, s0 = proc_times(m.pid)
            n, secs = measure.sequential_read(path)
            u1, s1 = proc_times(m.pid)
        finally:
            spy.send_signal(signal.SIGINT)
            spy_out, _ = spy.communicate(timeout=60)
        stats = json.loads(os.getxattr(m.mnt, "user.pagerfs.stats"))
    finally:
        bench.mounts.unmount(m)
    if not raw.exists():
        raise BenchError(f"py-spy wrote nothing: {spy_out.decode(errors='replace').strip()[-200:]}")
    result = summarize(parse_raw(raw.read_text()), package_roots())
    result.update({"read_bytes": n, "read_s": round(secs, 3), "mbps": round(n / secs / 1e6, 1),
                   "daemon_user_s": round(u1 - u0, 3), "daemon_sys_s": round(s1 - s0, 3),
                   "daemon_cores": round((u1 - u0 + s1 - s0) / secs, 2),
                   "pager_stats": stats, "raw": str(raw), "py_spy_mode": mode})
    return result


def describe(title: str, r: dict) -> list[str]:
    pct = lambda v: f"{v / max(r['samples'], 1):6.1%}"  # noqa: E731
    lines = [f"== {title}",
             f"cold sequential read of {r['read_bytes'] / 2**20:.0f} MiB under py-spy {' '.join(r['py_spy_mode'])}: "
             f"{r['read_s']:.2f} s ({r['mbps']:.0f} MB/s); daemon CPU user {r['daemon_user_s']:.2f} s + "
             f"sys {r['daemon_sys_s']:.2f} s = {r['daemon_cores']:.2f} cores",
             f"{r['samples']} samples at {RATE} Hz (1 s of idle lead-in included)", "", "by what the innermost frame does:"]
    lines += [f"  {pct(v)}  {k}" for k, v in r["by_category"].items()]
    lines += ["", "by thread (share of all samples):"]
    for kind, cats in r["by_thread"].items():
        lines.append(f"  {pct(sum(cats.values()))}  {kind}: " +
                     ", ".join(f"{k} {v / max(sum(cats.values()), 1):.0%}" for k, v in list(cats.items())[:4]))
    lines += ["", "innermost pagerfs line (not waiting):"]
    lines += [f"  {pct(v)}  {k}" for k, v in r["top_lines"].items()]
    return lines + [""]


# (dso or symbol substring, bucket), first match wins; for `perf report --sort dso,sym`.
NATIVE_BUCKETS = (
    ("libcrypto", "SHA-256 (libcrypto)"),
    ("_block.cpython", "lz4 (python-lz4)"),
    ("liblz4", "lz4 (liblz4)"),
    ("_codec.cpython", "store codec (pagerfs C, around lz4 and SHA-256)"),
    ("libpython", "Python interpreter (all Python code)"),
    ("_copy_to_iter", "kernel: copy to user (pread of the image)"),
    ("_copy_from_iter", "kernel: copy from user (FUSE replies)"),
    ("memcpy", "memory copies (kernel and libc)"),
    ("memmove", "memory copies (kernel and libc)"),
    ("finish_task_switch", "kernel: scheduling, futex, locks (thread handoffs)"),
    ("spin", "kernel: scheduling, futex, locks (thread handoffs)"),
    ("futex", "kernel: scheduling, futex, locks (thread handoffs)"),
    ("schedule", "kernel: scheduling, futex, locks (thread handoffs)"),
    ("fault", "kernel: page faults"),
    ("clear_page", "kernel: page faults"),
    ("[k]", "kernel: other"),
    ("libc", "libc: other (malloc, ...)"),
)


def native_bucket(line: str) -> str:
    for key, bucket in NATIVE_BUCKETS:
        if key in line:
            return bucket
    return "other native"


def perf_profile(bench, out: Path, stem: str, workload: str = "seq") -> dict | None:
    """perf's view (if perf is installed): every CPU cycle of the daemon, C included —
    what py-spy cannot see (SHA-256, lz4, copies, the kernel's share). `workload` is
    "seq" (one cold sequential read) or "random" (the bench's cold random preads)."""
    perf = shutil.which("perf")
    if not perf:
        return None
    data = out / f"{stem}.perf"
    m = bench.mount(PAGERFS)
    try:
        path = m.mnt / bench.ds.big_rel
        measure.drop_caches()
        rec = subprocess.Popen([perf, "record", "-F", "999", "-p", str(m.pid), "-o", str(data)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)
            u0, s0 = proc_times(m.pid)
            if workload == "seq":
                n, secs = measure.sequential_read(path)
            else:
                start = time.perf_counter()
                lat = measure.random_preads(path, bench.offsets)
                secs = time.perf_counter() - start
                n = len(lat) * measure.PAGE
            u1, s1 = proc_times(m.pid)
        finally:
            rec.send_signal(signal.SIGINT)
            _, err = rec.communicate(timeout=60)
    finally:
        bench.mounts.unmount(m)
    rep = subprocess.run([perf, "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,sym",
                          "--percent-limit", "0"], capture_output=True, text=True)
    buckets: collections.Counter = collections.Counter()
    for line in rep.stdout.splitlines():
        mm = re.match(r"\s*([\d.]+)%\s+(.*)", line)
        if mm:
            buckets[native_bucket(mm[2])] += float(mm[1])
    if not buckets:
        return None
    result = {"workload": workload, "read_s": round(secs, 3), "mbps": round(n / secs / 1e6, 1),
              "daemon_user_s": round(u1 - u0, 3), "daemon_sys_s": round(s1 - s0, 3), "data": str(data),
              "by_bucket": {k: round(v, 1) for k, v in buckets.most_common()}}
    if workload != "seq":
        result["p50_us"] = round(percentile(lat, 50), 1)
        result["cpu_us_per_read"] = round((u1 - u0 + s1 - s0) / len(lat) * 1e6, 1)
    return result


def profile_cold_read(bench, out: Path) -> dict:
    """Two sampled cold reads: who holds the GIL (where the Python CPU goes), and every
    thread including the blocked ones (where the wall-clock time goes). Writes the raw
    stacks (flamegraph.pl input) and a summary beside the results."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    results = {
        "gil": sampled_read(bench, out, f"profile-{stamp}-gil", ["--gil"]),
        "wall": sampled_read(bench, out, f"profile-{stamp}-wall", ["--idle"]),
    }
    lines = describe("CPU: samples of the thread holding the GIL", results["gil"])
    lines += describe("wall clock: every thread, blocked ones included", results["wall"])
    native = perf_profile(bench, out, f"profile-{stamp}-seq")
    if native:
        results["perf"] = native
        lines += [f"== perf, cold sequential read: all on-CPU time of the daemon, C and kernel included "
                  f"(read at {native['mbps']:.0f} MB/s under perf; daemon CPU user "
                  f"{native['daemon_user_s']:.2f} s + sys {native['daemon_sys_s']:.2f} s)"]
        lines += [f"  {v:5.1f}%  {k}" for k, v in native["by_bucket"].items()]
        lines.append("")
    rand = perf_profile(bench, out, f"profile-{stamp}-random", "random")
    if rand:
        results["perf_random"] = rand
        lines += [f"== perf, cold random 4 KiB preads ({len(bench.offsets)}): p50 {rand['p50_us']:.0f} µs under perf; "
                  f"daemon CPU {rand['cpu_us_per_read']:.0f} µs per read"]
        lines += [f"  {v:5.1f}%  {k}" for k, v in rand["by_bucket"].items()]
        lines.append("")
    from benchlib import hops
    results["hops"] = hops.measure_hops(bench.images[PAGERFS], bench.mnts[PAGERFS], bench.offsets, out)
    lines += hops.describe(results["hops"])
    lines.append(f"pager stats after the read: {json.dumps(results['wall']['pager_stats'])}")
    summary_path = out / f"profile-{stamp}.txt"
    summary_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    print(f"profile: {summary_path}", flush=True)
    results["summary"] = str(summary_path)
    return results
