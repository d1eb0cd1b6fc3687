"""tools/bench: pagerfs against squashfuse_ll + mksquashfs -comp lz4, one machine, one run.

Each round measures every probe on both file systems back to back (A B), so the two
figures of a pair see the same machine state; the table reports the median over rounds
with the min–max, and the ratio pagerfs/peer of the medians. "Cold" means a fresh mount
(no daemon-side cache survives) and a dropped kernel page cache.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchlib import datasets, measure, report, sparse, trees
from benchlib.stats import percentile
from benchlib.systems import (LABELS, PAGERFS, SQUASHFS, SYSTEMS, BenchError, Mount, Mounts, build_image,
                              pagerfs_cmd)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = Path("/var/tmp/pagerfs-bench")
MiB = 2**20

# Five full rounds, not three: on a shared 2-core machine single rounds swing by 2-3x.
FULL = {"big": 512 * MiB, "tree": 20_000, "reads": 2000, "rounds": 5, "tiny": 50_000}
QUICK = {"big": 64 * MiB, "tree": 2_000, "reads": 300, "rounds": 3, "tiny": 4_000}
# The tree workloads take 10-80 s each, long enough that one interleaved pair is a fair
# figure, and five of them would add half an hour: by default they run in one round.
TREE_ROUNDS = 1
# The big-file probes, then the tree workloads: "systree" (tar and grep -r of a real
# tree) and "tiny" (ls -l of a wide directory, find | xargs cat, tails' image size);
# "sparse", the build of a 1 TiB sparse file (pagerfs only, about a second: every round).
PROBES = ("build", "seq", "walk_random", "memory", "systree", "tiny", "sparse")
BIG_PROBES = PROBES[:4]
EVERY_ROUND = (*BIG_PROBES, "sparse")
WARM_READS = 3  # re-reads per round; the round's warm figure is their median
WARM_ATTEMPTS = 4  # tries when another program keeps dropping the caches


class Stopped(Exception):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, so that the mounts come down."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def parse_size(text: str) -> int:
    """`512M`, `64MiB`, `1G`, `4096`: a byte count (binary units)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 4096, 64M, 1G)")
    return int(m.group(1)) * 1024 ** "bkmgt".index((m.group(2) or "b").lower())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small data set (64 MiB file, 2,000-file tree): under a minute")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5; 3 with --quick)")
    p.add_argument("--out", type=Path, default=REPO / "bench-results", help="directory for the JSON, PNG and table")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"data sets and images (default {DEFAULT_CACHE})")
    p.add_argument("--big-size", type=parse_size, help="size of the large file (default 512M; 64M with --quick)")
    p.add_argument("--tree-files", type=int, help="files in the metadata tree (default 20000; 2000 with --quick)")
    p.add_argument("--random-reads", type=int, help="4 KiB preads per cold random run (default 2000; 300 with --quick)")
    p.add_argument("--page-budget", type=parse_size, help="pagerfs page budget for the memory probe (default: large file / 4)")
    p.add_argument("--tar-root", action="append", help="where the large file's system files come from (default /usr/lib)")
    p.add_argument("--sys-root", action="append",
                   help="a directory the real tree is copied from (repeatable; default /usr/share, /usr/include, "
                        "/usr/lib/python3*; only the first Python library with --quick)")
    p.add_argument("--tiny-files", type=int, help="files in the tiny tree, all in one directory "
                                                  "(default 50000; 4000 with --quick)")
    p.add_argument("--tree-rounds", type=int, default=TREE_ROUNDS,
                   help=f"rounds that run the tree workloads, the first ones (default {TREE_ROUNDS})")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated tree and the random offsets")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of: pagerfs,squashfs")
    p.add_argument("--mkimage-opt", action="append", default=[], help="extra argument for `pagerfs mkimage` (repeatable)")
    p.add_argument("--mount-opt", action="append", default=[],
                   help="extra -o option for `pagerfs mount`, e.g. pager_threads=2 (repeatable)")
    p.add_argument("--read-ahead-kb", type=int, metavar="KIB",
                   help="set both mounts' readahead window (sysfs read_ahead_kb; the kernel's default is 128)")
    p.add_argument("--only", default=",".join(PROBES),
                   help=f"comma-separated subset of the probes: {','.join(PROBES)} (default: all)")
    p.add_argument("--replot", type=Path, metavar="JSON",
                   help="redraw the table and chart of a saved result (next to it), measure nothing")
    p.add_argument("--profile", action="store_true",
                   help="afterwards, profile the pagerfs daemon (py-spy, and perf if installed) "
                        "through cold reads; see docs/BENCHMARKS.md")
    p.add_argument("--profile-only", action="store_true", help="only the profile (builds the image if missing)")
    args = p.parse_args(argv)
    if args.profile_only:
        args.profile = True
        args.systems = PAGERFS
    size = QUICK if args.quick else FULL
    args.rounds = args.rounds if args.rounds is not None else size["rounds"]
    args.big_size = args.big_size or size["big"]
    args.tree_files = args.tree_files or size["tree"]
    args.random_reads = args.random_reads or size["reads"]
    args.page_budget = args.page_budget or args.big_size // 4
    args.tar_root = tuple(args.tar_root or ["/usr/lib"])
    args.sys_root = tuple(args.sys_root or trees.default_roots(args.quick))
    args.tiny_files = args.tiny_files or size["tiny"]
    args.systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    if not args.systems or any(s not in SYSTEMS for s in args.systems):
        p.error(f"--systems takes a comma-separated subset of {','.join(SYSTEMS)}")
    args.only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    if not args.only or any(x not in PROBES for x in args.only):
        p.error(f"--only takes a comma-separated subset of {','.join(PROBES)}")
    if args.tiny_files < 2:
        p.error("--tiny-files must be at least 2")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.big_size < 4 * args.page_budget:
        p.error("the large file must be at least 4x the page budget")
    return args


def log(msg: str) -> None:
    print(msg, flush=True)


def preflight(systems: tuple[str, ...]) -> None:
    if not measure.can_drop_caches():
        raise BenchError("cannot write /proc/sys/vm/drop_caches (run as root)")
    if not os.path.exists("/dev/fuse"):
        raise BenchError("/dev/fuse is missing")
    for tool in ["tar", "fusermount3"] + (["mksquashfs", "squashfuse_ll"] if SQUASHFS in systems else []):
        if not shutil.which(tool):
            raise BenchError(f"{tool} not found (tools/setup installs it)")
    if PAGERFS in systems:
        for sub in ("mkimage", "mount", "umount"):
            proc = subprocess.run([*pagerfs_cmd(), sub, "--help"], capture_output=True)
            if proc.returncode != 0:
                raise BenchError(f"`pagerfs {sub}` is not available (or use --systems squashfs)")


def warm_source(ds: datasets.DataSet) -> None:
    """Pulls the source into the page cache so both builders start from the same warm
    state and the build time measures the builder, not the disk."""
    for dirpath, _, files in os.walk(ds.src):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                while f.read(1 << 20):
                    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"hostname": platform.node(), "kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(),
            "mem_gib": round(mem / 2**30, 1), "python": platform.python_version()}


def versions() -> dict:
    def out(cmd: list[str]) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            return ((p.stdout or p.stderr).strip().splitlines() or [""])[0]
        except OSError:
            return ""
    def deb(package: str) -> str:
        return out(["dpkg-query", "-W", "-f=${Version}", package])

    dirty = out(["git", "status", "--porcelain", "--", "pagerfs"]) != ""
    return {"pagerfs_commit": out(["git", "rev-parse", "--short", "HEAD"]) + ("+dirty" if dirty else ""),
            "squashfs-tools": deb("squashfs-tools"), "squashfuse": deb("squashfuse"), "fuse3": deb("fuse3"),
            "pyfuse3": _dist_version("pyfuse3"), "lz4": _dist_version("lz4")}


def _dist_version(name: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


class Bench:
    def __init__(self, args: argparse.Namespace, ds: datasets.DataSet | None, mounts: Mounts,
                 trees_of_run: dict[str, trees.Tree] | None = None):
        self.args = args
        self.ds = ds
        self.mounts = mounts
        # Images built with non-default mkimage options get their own name, so a later
        # --profile-only never picks up an image built another way; so do images of
        # another format version (a checkout of older code benchmarked on the same cache).
        from pagerfs.store.format import VERSION

        tag = "-" + hashlib.sha256(" ".join(args.mkimage_opt).encode()).hexdigest()[:8] if args.mkimage_opt else ""
        self.image_names = {s: f"{s}-v{VERSION}{tag}.img" if s == PAGERFS else f"{s}.img"
                            for s in SYSTEMS}
        base = args.cache / (ds.spec.name if ds else "none")
        self.images = {s: base / "images" / self.image_names[s] for s in SYSTEMS}
        self.mnts = {s: args.cache / "mnt" / s for s in SYSTEMS}
        self.samples: dict[str, dict[str, list[float]]] = {s: {} for s in args.systems}
        self.offsets = measure.random_offsets(args.big_size, args.random_reads, args.seed) if ds else []
        self.disturbed = 0  # warm reads redone because someone else dropped the caches
        self.checked: set[tuple[str, str]] = set()  # (system, what) verified once
        self.trees = trees_of_run or {}  # "systree", "tiny": those the run measures
        self.built: set[str] = set()  # trees whose images this run built
        self.seen: dict[str, tuple[str, object]] = {}  # see expect_same

    def record(self, system: str, key: str, value: float, shown: str) -> None:
        self.samples[system].setdefault(key, []).append(value)
        log(f"  {LABELS[system]:<14} {key:<14} {shown}")

    def mount(self, system: str, budget: int | None = None) -> Mount:
        return self.mounts.mount(system, self.images[system], self.mnts[system],
                                 budget if system == PAGERFS else None,
                                 tuple(self.args.mount_opt) if system == PAGERFS else (),
                                 self.args.read_ahead_kb)

    def build(self, system: str, record: bool = True) -> None:
        img = self.images[system]
        img.parent.mkdir(parents=True, exist_ok=True)
        warm_source(self.ds)
        extra = tuple(self.args.mkimage_opt) if system == PAGERFS else ()
        secs = build_image(system, self.ds.src, img, extra)
        if not record:
            return
        self.record(system, "build_s", secs, f"{secs:.2f} s")
        size = img.stat().st_size / MiB
        self.record(system, "image_mib", size, f"{size:.1f} MiB")

    def sequential(self, system: str) -> None:
        m = self.mount(system)
        try:
            path = m.mnt / self.ds.big_rel
            measure.drop_caches()
            drops = measure.drop_count()
            n, secs = measure.sequential_read(path)
            self.expect_size(system, n)
            self.record(system, "seq_cold_mbps", n / secs / 1e6, f"{n / secs / 1e6:.0f} MB/s cold")
            # A warm re-read takes ~0.1 s, so one stolen time slice halves it: the
            # round's figure is the median of WARM_READS re-reads.
            for attempt in range(WARM_ATTEMPTS):
                if attempt:
                    measure.sequential_read(path)  # warm it again, untimed
                    drops = measure.drop_count()
                rates = []
                for _ in range(WARM_READS):
                    n, secs = measure.sequential_read(path)
                    rates.append(n / secs / 1e6)
                if measure.drop_count() == drops:
                    break
                self.disturbed += 1
                log(f"  {LABELS[system]:<14} warm re-read disturbed by another program's drop_caches; again")
            warm = percentile(rates, 50)
            self.record(system, "seq_warm_mbps", warm, f"{warm:.0f} MB/s warm")
            if (system, "big") not in self.checked:
                # Once per system, untimed: a fast wrong answer is no answer.
                if sha256_file(path) != self.ds.big_sha256:
                    raise BenchError(f"{LABELS[system]} served the large file with the wrong bytes")
                self.checked.add((system, "big"))
        finally:
            self.mounts.unmount(m)

    def walk_and_random(self, system: str) -> None:
        m = self.mount(system)
        try:
            measure.drop_caches()
            entries, secs = measure.metadata_walk(m.mnt / self.ds.tree_rel)
            if entries != self.ds.tree_entries:
                raise BenchError(f"{LABELS[system]}: walk saw {entries} entries, the tree has {self.ds.tree_entries}")
            self.record(system, "walk_s", secs, f"{secs:.2f} s for {entries} entries")
            measure.drop_caches()
            lat = measure.random_preads(m.mnt / self.ds.big_rel, self.offsets)
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            self.record(system, "rand_p50_us", p50, f"p50 {p50:.0f} µs")
            self.record(system, "rand_p99_us", p99, f"p99 {p99:.0f} µs")
            if (system, "tree") not in self.checked:
                if datasets.tree_digest_of(m.mnt / self.ds.tree_rel) != self.ds.tree_digest:
                    raise BenchError(f"{LABELS[system]} served the tree with the wrong names or bytes")
                self.checked.add((system, "tree"))
        finally:
            self.mounts.unmount(m)

    def memory(self, system: str) -> None:
        m = self.mount(system, self.args.page_budget)
        try:
            measure.drop_caches()
            n, _ = measure.sequential_read(m.mnt / self.ds.big_rel)
            self.expect_size(system, n)
            rss = m.peak_rss() / MiB
            self.record(system, "rss_peak_mib", rss, f"peak RSS {rss:.0f} MiB")
        finally:
            self.mounts.unmount(m)

    # ---- the tree workloads (issue 9) -------------------------------------------

    def tree_image(self, tree: trees.Tree, system: str) -> Path:
        return tree.home / "images" / self.image_names[system]

    def build_tree(self, tree: trees.Tree, figure: str, record_time: bool) -> None:
        """Both images of a tree, built once per run (interleaved, source warm first):
        their size, and with record_time their build time, are one sample each."""
        for system in self.args.systems:
            img = self.tree_image(tree, system)
            img.parent.mkdir(parents=True, exist_ok=True)
            trees.warm(tree)
            extra = tuple(self.args.mkimage_opt) if system == PAGERFS else ()
            secs = build_image(system, tree.src, img, extra)
            if record_time:
                self.record(system, f"{figure}_build_s", secs, f"{secs:.2f} s to build")
            size = img.stat().st_size / MiB
            self.record(system, f"{figure}_image_mib", size, f"{size:.1f} MiB image")

    @contextlib.contextmanager
    def cold_mount(self, tree: trees.Tree, system: str):
        """A fresh mount of the tree's image, caches dropped; yields its path."""
        m = self.mounts.mount(system, self.tree_image(tree, system), self.mnts[system], None,
                              tuple(self.args.mount_opt) if system == PAGERFS else (), self.args.read_ahead_kb)
        try:
            measure.drop_caches()
            yield m.mnt
        finally:
            self.mounts.unmount(m)

    def tree_of_run(self, key: str, record_time: bool) -> trees.Tree:
        """The tree, its images built by this run (at its first use, timed)."""
        tree = self.trees[key]
        if key not in self.built:
            self.built.add(key)
            self.build_tree(tree, key, record_time)
        return tree

    def systree(self, system: str) -> None:
        tree = self.tree_of_run("systree", record_time=True)
        with self.cold_mount(tree, system) as mnt:
            n, secs, _ = trees.tar_tree(mnt)
            self.expect_same(system, "tar archive bytes", n)
            self.record(system, "systree_tar_s", secs, f"{secs:.2f} s tar cf - ({n / 1e6:.0f} MB)")
            if (system, "systree") not in self.checked:
                # Once per system, warm and untimed: both must give the same archive.
                self.expect_same(system, "tar archive SHA-256", trees.tar_tree(mnt, digest=True)[2])
                self.checked.add((system, "systree"))
        with self.cold_mount(tree, system) as mnt:
            secs = trees.grep_tree(mnt)
            self.record(system, "systree_grep_s", secs, f"{secs:.2f} s grep -r")

    def tiny(self, system: str) -> None:
        tree = self.tree_of_run("tiny", record_time=False)
        with self.cold_mount(tree, system) as mnt:
            lines, secs = trees.ls_long(mnt / tree.wide_dir)
            if lines != tree.wide_entries + 1:  # and the "total" line
                raise BenchError(f"{LABELS[system]}: ls -l printed {lines} lines for {tree.wide_entries} entries")
            self.record(system, "tiny_ls_s", secs, f"{secs:.2f} s ls -l of {tree.wide_entries} entries")
        with self.cold_mount(tree, system) as mnt:
            n, secs = trees.cat_all(mnt)
            if n != tree.bytes:
                raise BenchError(f"{LABELS[system]}: find | xargs cat read {n} bytes, the tree has {tree.bytes}")
            self.record(system, "tiny_cat_s", secs, f"{secs:.2f} s find | xargs cat of {tree.files} files")

    def sparse(self, system: str) -> None:
        if system != PAGERFS:
            return  # see benchlib/sparse.py: mksquashfs would read the whole TiB
        sf = sparse.prepare(self.args.cache, self.args.seed)
        img = sf.src.parent / "images" / self.image_names[PAGERFS]
        img.parent.mkdir(parents=True, exist_ok=True)
        extra = tuple(self.args.mkimage_opt)
        secs = build_image(PAGERFS, sf.src, img, extra)
        self.record(PAGERFS, "sparse_build_s", secs, f"{secs:.2f} s to build a 1 TiB sparse file")
        if (PAGERFS, "sparse") not in self.checked:
            m = self.mounts.mount(PAGERFS, img, self.mnts[PAGERFS], None, tuple(self.args.mount_opt),
                                  self.args.read_ahead_kb)
            try:
                wrong = sparse.check_mounted(m.mnt / sf.rel, sf)
            finally:
                self.mounts.unmount(m)
            if wrong:
                raise BenchError(f"{LABELS[PAGERFS]} served the sparse file wrong: {wrong}")
            self.checked.add((PAGERFS, "sparse"))

    def expect_same(self, system: str, what: str, value) -> None:
        """The first system to see `what` sets it; every other must see the same."""
        seen = self.seen.setdefault(what, (system, value))
        if seen[1] != value:
            raise BenchError(f"{LABELS[system]} gave {what} {value}, {LABELS[seen[0]]} {seen[1]}")

    def expect_size(self, system: str, n: int) -> None:
        if n != self.args.big_size:
            raise BenchError(f"{LABELS[system]}: read {n} bytes of the large file, expected {self.args.big_size}")

    def run(self) -> None:
        for rnd in range(self.args.rounds):
            log(f"round {rnd + 1}/{self.args.rounds}")
            probes = {"build": self.build, "seq": self.sequential, "walk_random": self.walk_and_random,
                      "memory": self.memory, "systree": self.systree, "tiny": self.tiny, "sparse": self.sparse}
            for name, probe in probes.items():
                if name not in self.args.only or (name not in EVERY_ROUND and rnd >= self.args.tree_rounds):
                    continue
                if name in BIG_PROBES[1:] and not all(self.images[s].exists() for s in self.args.systems):
                    for system in self.args.systems:  # nothing to mount yet: build once, untimed
                        if not self.images[system].exists():
                            self.build(system, record=False)
                for system in self.args.systems:
                    probe(system)


def title_of(context: dict) -> str:
    c = context["config"]
    probes = c.get("probes", PROBES)
    sets = []
    if any(p in probes for p in BIG_PROBES):
        sets.append(f"{c['big_bytes'] // MiB} MiB file, {c['tree_files']} files")
    for key, label in (("systree", "real tree"), ("tiny", "tiny tree")):
        t = (context.get("trees") or {}).get(key)
        if t:
            sets.append(f"{label} {t['files']:,} files")
    return (f"pagerfs vs squashfuse_ll, {context['date']}, {context['machine']['hostname']} "
            f"({context['machine']['cpus']} CPUs)\n{', '.join(sets)}, {c['rounds']} rounds")


def replot(path: Path) -> int:
    import json
    try:
        data = json.loads(path.read_text())
        samples, budget = report.samples_from_json(data)
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"pagerfs bench: {path}: not a saved bench result ({err})", file=sys.stderr)
        return 2
    rows = report.make_rows(samples, budget)
    title = title_of(data)
    stem = path.with_suffix("")
    Path(f"{stem}.md").write_text(f"{title.replace(chr(10), ', ')}\n\n{report.table(rows)}\n")
    report.draw_chart(rows, title, Path(f"{stem}.png"))
    log(report.table(rows))
    log(f"chart: {stem}.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        return replot(args.replot)

    def on_signal(signum, frame):
        raise Stopped(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    mounts = Mounts()
    started = time.monotonic()
    load_start = list(os.getloadavg())  # other work on the machine skews single figures
    try:
        preflight(args.systems)
        ds = None
        if args.profile or any(p in args.only for p in BIG_PROBES):
            spec = datasets.DataSetSpec(args.big_size, args.tree_files, args.seed, args.tar_root)
            ds = datasets.prepare(spec, args.cache, log)
            log(f"data set {spec.name}: {args.big_size / MiB:.0f} MiB file (sha256 {ds.big_sha256[:12]}…), "
                f"{ds.tree_entries} tree entries; systems {', '.join(LABELS[s] for s in args.systems)}")
        run_trees = {}
        if "systree" in args.only:
            run_trees["systree"] = t = trees.system_tree(args.cache, args.sys_root, log)
            log(f"system tree {', '.join(args.sys_root)}: {t.files} files, {t.bytes / 1e6:.0f} MB"
                + ("" if t.files >= 50_000 or args.quick else " (fewer than the 50,000 files issue 9 asks for)"))
        if "tiny" in args.only:
            run_trees["tiny"] = t = trees.tiny_tree(args.cache, args.tiny_files, args.seed, log)
            log(f"tiny tree: {t.files} files, {t.bytes / 1e6:.1f} MB, {t.wide_entries} in {t.wide_dir}/")
        bench = Bench(args, ds, mounts, run_trees)
        if args.profile_only:
            from benchlib import profile
            if not bench.images[PAGERFS].exists():
                bench.build(PAGERFS, record=False)
            profile.profile_cold_read(bench, args.out)
            return 0
        bench.run()
        prof = None
        if args.profile and PAGERFS in args.systems:
            from benchlib import profile
            prof = profile.profile_cold_read(bench, args.out)
        rows = report.make_rows(bench.samples, args.page_budget)
        now = dt.datetime.now(dt.timezone.utc)
        context = {
            "date": now.isoformat(timespec="seconds"),
            "machine": machine(),
            "versions": versions(),
            "config": {"rounds": args.rounds, "quick": args.quick, "big_bytes": args.big_size,
                       "tree_files": args.tree_files, "random_reads": args.random_reads,
                       "page_budget": args.page_budget, "seed": args.seed, "tar_roots": list(args.tar_root),
                       "sys_roots": list(args.sys_root), "tiny_files": args.tiny_files,
                       "tree_rounds": min(args.tree_rounds, args.rounds),
                       "mkimage_opts": args.mkimage_opt, "mount_opts": args.mount_opt, "probes": list(args.only),
                       "read_ahead_kb": args.read_ahead_kb,
                       "systems": list(args.systems)},
            "dataset": {"name": ds.spec.name, "big_sha256": ds.big_sha256, "tree_digest": ds.tree_digest,
                        "tree_entries": ds.tree_entries} if ds else None,
            "trees": {k: {"name": t.name, "files": t.files, "bytes": t.bytes, "entries": t.entries,
                          "wide_entries": t.wide_entries} for k, t in run_trees.items()},
            "elapsed_s": round(time.monotonic() - started, 1),
            "loadavg_start": load_start,
            "loadavg_end": list(os.getloadavg()),
            "profile": prof,
            "warm_reads_redone": bench.disturbed,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"bench-{now.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}"
        text = report.table(rows)
        title = title_of(context)
        Path(f"{stem}.md").write_text(f"{title.replace(chr(10), ', ')}\n\n{text}\n")
        report.save_json(rows, context, Path(f"{stem}.json"))
        report.draw_chart(rows, title, Path(f"{stem}.png"))
        log("")
        log(title.replace("\n", ", "))
        log(text)
        log(f"\nelapsed {context['elapsed_s']:.0f} s")
        log(f"JSON:  {stem}.json")
        log(f"chart: {stem}.png")
        log(f"table: {stem}.md")
        return 0
    except (BenchError, trees.TreeError) as err:
        print(f"pagerfs bench: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # A mount that dies mid-probe (ENOTCONN, EIO): the figure is lost, say which.
        print(f"pagerfs bench: {err.filename or ''}{': ' if err.filename else ''}{err.strerror or err}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pagerfs bench: interrupted", file=sys.stderr)
        return 130
    except Stopped as stop:
        print(f"pagerfs bench: stopped by {signal.Signals(stop.signum).name}", file=sys.stderr)
        return 128 + stop.signum
    finally:
        mounts.cleanup()
