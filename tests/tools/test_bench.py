"""The bench's pure parts: its statistics, its table and verdicts, and that its data sets
are the same bytes every time. Nothing here is timed or mounted."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

from benchlib import datasets, measure, report, sparse, stats, trees  # noqa: E402
from benchlib.run import parse_size  # noqa: E402
from benchlib.systems import PAGERFS, SQUASHFS  # noqa: E402

MiB = 2**20


# ------------------------------------------------------------------ statistics


def test_percentile_interpolates_between_ranks():
    values = [40, 10, 30, 20]  # sorted: 10 20 30 40
    assert stats.percentile(values, 0) == 10
    assert stats.percentile(values, 100) == 40
    # rank (4-1)*0.5 = 1.5: halfway between 20 and 30
    assert stats.percentile(values, 50) == 25
    # rank (4-1)*0.99 = 2.97: 30 + 0.97*10
    assert stats.percentile(values, 99) == pytest.approx(39.7)


def test_median_of_odd_count_is_the_middle_sample():
    assert stats.median([5.0, 1.0, 9.0]) == 5.0
    assert stats.median([7]) == 7.0


def test_percentile_rejects_nonsense():
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_summary_keeps_median_range_and_samples():
    s = stats.summarize([3.0, 1.0, 2.0])
    assert (s.median, s.lo, s.hi) == (2.0, 1.0, 3.0)
    assert s.samples == (3.0, 1.0, 2.0)
    assert stats.ratio(3.0, 2.0) == 1.5
    assert stats.ratio(3.0, 0.0) is None


# ------------------------------------------------------------------ figures, verdicts, table


def samples_for(ours: dict[str, list[float]], peer: dict[str, list[float]]):
    return {PAGERFS: ours, SQUASHFS: peer}


def row(rows, key):
    return next(r for r in rows if r.metric.key == key)


def test_ratio_targets_compare_the_medians_in_the_right_direction():
    rows = report.make_rows(samples_for(
        {"seq_cold_mbps": [900, 1000, 1100], "rand_p50_us": [100, 160, 200], "walk_s": [1.0, 3.0, 5.0]},
        {"seq_cold_mbps": [800, 1000, 1200], "rand_p50_us": [100, 100, 100], "walk_s": [1.0, 1.0, 2.0]},
    ), page_budget=128 * MiB)
    seq = row(rows, "seq_cold_mbps")
    assert seq.ratio == 1.0 and seq.met is True  # higher is better: >= 1.0 passes at 1.0
    rand = row(rows, "rand_p50_us")
    assert rand.ratio == pytest.approx(1.6) and rand.met is False  # lower is better: 1.6 > 1.5
    walk = row(rows, "walk_s")
    assert walk.ratio == 3.0 and walk.met is False
    # per-round ratios pair round i with round i
    assert walk.round_ratios == (1.0, 3.0, 2.5)


def test_warm_reread_target_is_within_one_point_oh_five_times():
    def warm(ours):
        rows = report.make_rows(samples_for({"seq_warm_mbps": [ours]}, {"seq_warm_mbps": [1050.0]}), 64 * MiB)
        return row(rows, "seq_warm_mbps").met
    assert warm(1000.0) is True  # 1.05x slower exactly
    assert warm(990.0) is False


def test_memory_target_is_budget_plus_64_mib_whatever_the_peer_uses():
    budget = 128 * MiB
    rows = report.make_rows(samples_for({"rss_peak_mib": [150, 192, 260]}, {"rss_peak_mib": [2, 2, 2]}), budget)
    assert row(rows, "rss_peak_mib").met is True  # median 192 <= 128 + 64
    rows = report.make_rows(samples_for({"rss_peak_mib": [193, 193, 193]}, {}), budget)
    rss = row(rows, "rss_peak_mib")
    assert rss.met is False and rss.ratio is None


def test_missing_system_gives_no_ratio_and_no_verdict():
    rows = report.make_rows(samples_for({}, {"build_s": [1.0, 2.0, 3.0]}), 64 * MiB)
    build = row(rows, "build_s")
    assert build.ours is None and build.ratio is None and build.met is None
    assert build.peer.median == 2.0


def test_table_has_a_line_per_figure_with_median_range_ratio_and_verdict():
    rows = report.make_rows(samples_for(
        {"image_mib": [106.0, 106.0, 106.0], "build_s": [2.0, 2.5, 3.0]},
        {"image_mib": [100.0, 100.0, 100.0], "build_s": [4.0, 5.0, 6.0]},
    ), 64 * MiB)
    text = report.table(rows)
    lines = text.splitlines()
    assert len(lines) == 2 + len(report.metrics(64 * MiB))
    assert len({len(line) for line in lines}) == 1  # columns line up
    size_line = next(line for line in lines if "image size" in line)
    cells = [c.strip() for c in size_line.strip("|").split("|")]
    assert cells[2] == "106 [106–106]" and cells[4] == "1.06" and cells[6] == "NO"
    build_line = next(line for line in lines if "image build time" in line)
    cells = [c.strip() for c in build_line.strip("|").split("|")]
    assert cells[2] == "2.50 [2.00–3.00]" and cells[3] == "5.00 [4.00–6.00]"
    assert cells[4] == "0.50" and cells[6] == "yes"


def test_fmt_keeps_about_three_significant_figures():
    assert report.fmt(1234.5) == "1,234"
    assert report.fmt(12.345) == "12.3"
    assert report.fmt(1.2345) == "1.23"
    assert report.fmt(0.012345) == "0.012"


def test_json_round_trips_to_the_same_table(tmp_path):
    samples = samples_for({"walk_s": [1.0, 2.0, 4.0]}, {"walk_s": [1.0, 1.0, 1.0]})
    rows = report.make_rows(samples, 64 * MiB)
    path = tmp_path / "r.json"
    report.save_json(rows, {"config": {"page_budget": 64 * MiB}}, path)
    data = json.loads(path.read_text())
    fig = next(f for f in data["figures"] if f["key"] == "walk_s")
    assert fig["ratio"] == 2.0 and fig[PAGERFS]["min"] == 1.0 and fig[PAGERFS]["max"] == 4.0
    again, budget = report.samples_from_json(data)
    assert report.table(report.make_rows(again, budget)) == report.table(rows)


def test_chart_is_a_png(tmp_path):
    rows = report.make_rows(samples_for(
        {"seq_cold_mbps": [500, 600, 700], "rss_peak_mib": [90, 95, 99]},
        {"seq_cold_mbps": [600, 600, 600], "rss_peak_mib": [2, 2, 2]},
    ), 64 * MiB)
    out = tmp_path / "c.png"
    report.draw_chart(rows, "test", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parse_size_uses_binary_units():
    assert parse_size("4096") == 4096
    assert parse_size("64M") == 64 * MiB
    assert parse_size("1GiB") == 2**30
    assert parse_size("8k") == 8192


# ------------------------------------------------------------------ data sets


def test_random_offsets_are_seeded_distinct_aligned_and_inside_the_file():
    size = 10 * MiB + 123
    a = measure.random_offsets(size, 500, seed=7)
    assert a == measure.random_offsets(size, 500, seed=7)
    assert a != measure.random_offsets(size, 500, seed=8)
    assert len(set(a)) == 500
    assert all(off % 4096 == 0 and off + 4096 <= size for off in a)


def test_tree_is_the_same_bytes_for_the_same_seed(tmp_path):
    d1, n1 = datasets.write_tree(tmp_path / "a", 300, seed=3)
    d2, n2 = datasets.write_tree(tmp_path / "b", 300, seed=3)
    d3, _ = datasets.write_tree(tmp_path / "c", 300, seed=4)
    assert (d1, n1) == (d2, n2) and d1 != d3
    # the digest describes what is on disk, not just what the generator meant to write
    assert datasets.tree_digest_of(tmp_path / "a") == d1
    files = sorted(p for p in (tmp_path / "a").rglob("*") if p.is_file())
    dirs = [p for p in (tmp_path / "a").rglob("*") if p.is_dir()]
    assert len(files) == 300 and n1 == 300 + len(dirs) + 1
    sizes = [p.stat().st_size for p in files]
    assert min(sizes) < 64 and max(sizes) > 8192  # varied sizes, not one size
    for p in files[:20] + dirs:
        assert p.stat().st_mtime == datasets.FIXED_MTIME
    assert {p.read_bytes() for p in files[:5]} == {(tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()
                                                 for p in files[:5]}


def test_tree_layout_has_at_most_fifty_files_per_directory():
    paths = datasets.tree_layout(2500)
    per_dir: dict[str, int] = {}
    for p in paths:
        per_dir[os.path.dirname(p)] = per_dir.get(os.path.dirname(p), 0) + 1
    assert len(paths) == len(set(paths)) == 2500
    assert max(per_dir.values()) == datasets.FILES_PER_DIR


def make_system_root(root: Path) -> None:
    """A stand-in for /usr/lib: nested files of several sizes."""
    for i in range(40):
        p = root / f"lib{i % 4}" / f"f{i:02d}.so"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(bytes([i]) * (1000 + 997 * i))


def test_big_file_is_exact_size_and_the_same_bytes_whatever_the_mtimes(tmp_path):
    root = tmp_path / "root"
    make_system_root(root)
    (tmp_path / "s1").mkdir()
    (tmp_path / "s2").mkdir()
    size = 300_000
    sha1 = datasets.write_big_file(tmp_path / "big1", (str(root),), size, tmp_path / "s1")
    for p in root.rglob("*"):
        os.utime(p, (12345, 12345))  # tar must not record the source's times or owners
    sha2 = datasets.write_big_file(tmp_path / "big2", (str(root),), size, tmp_path / "s2")
    assert (tmp_path / "big1").stat().st_size == size
    assert sha1 == sha2
    assert (tmp_path / "big1").read_bytes() == (tmp_path / "big2").read_bytes()
    assert (tmp_path / "big1").read_bytes()[257:262] == b"ustar"  # a real tar header


def test_big_file_repeats_the_tar_when_the_files_are_too_few(tmp_path):
    root = tmp_path / "root"
    (root / "x").mkdir(parents=True)
    (root / "x" / "only").write_bytes(b"z" * 5000)
    (tmp_path / "s").mkdir()
    datasets.write_big_file(tmp_path / "big", (str(root),), 100_000, tmp_path / "s")
    data = (tmp_path / "big").read_bytes()
    assert len(data) == 100_000
    assert data.count(b"x/only\0") >= 2


def test_tiny_tree_is_the_same_bytes_for_the_same_seed_in_one_wide_directory(tmp_path):
    def contents(cache):
        t = trees.tiny_tree(cache, 41, 3, log=lambda m: None)
        files = {str(p.relative_to(t.src)): p.read_bytes() for p in sorted(t.src.rglob("*")) if p.is_file()}
        return t, files
    t1, one = contents(tmp_path / "c1")
    t2, two = contents(tmp_path / "c2")
    assert one == two and len(one) == 41 == t1.files
    assert sum(map(len, one.values())) == t1.bytes == sum(trees.tiny_sizes(41, 3))
    assert max(map(len, one.values())) < 1024
    assert sum(1 for k in one if k.startswith("a/")) == t1.wide_entries == 41
    assert trees.tiny_tree(tmp_path / "c1", 41, 3, log=lambda m: None) == t1  # from the cache


def test_system_tree_is_a_copy_without_special_files(tmp_path):
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"abc")
    (root / "dangling").symlink_to("nowhere")
    os.mkfifo(root / "fifo")
    t = trees.system_tree(tmp_path / "cache", (str(root),), log=lambda m: None)
    copied = t.src / str(root).strip("/").replace("/", "_")
    assert (copied / "d" / "f").read_bytes() == b"abc"
    assert os.readlink(copied / "dangling") == "nowhere" and not (copied / "fifo").exists()
    assert (t.files, t.bytes) == (1, 3)


def test_sparse_file_is_a_tebibyte_of_hole_around_three_seeded_extents(tmp_path):
    sf = sparse.prepare(tmp_path, seed=5)
    path = sf.src / sf.rel
    st = path.stat()
    assert st.st_size == 2**40 and st.st_blocks * 512 < 8 * MiB
    assert sparse.check_mounted(path, sf) is None  # the source passes the mount's check
    assert sparse.prepare(tmp_path, seed=5) == sf and sparse.prepare(tmp_path / "b", seed=6) != sf
    with open(path, "r+b") as f:  # one wrong byte in the middle extent, one byte in a hole
        os.pwrite(f.fileno(), b"x", 2**39 + 7)
    assert sparse.check_mounted(path, sf) == f"wrong bytes at offset {2**39}"


def test_sparse_check_sees_a_hole_that_is_not_zeros(tmp_path):
    sf = sparse.prepare(tmp_path, seed=5)
    with open(sf.src / sf.rel, "r+b") as f:
        os.pwrite(f.fileno(), b"x", sparse.EXTENT + 100)
    assert sparse.check_mounted(sf.src / sf.rel, sf) == f"the hole at offset {sparse.EXTENT} is not zeros"


def test_prepare_reuses_a_complete_cache_and_rebuilds_an_incomplete_one(tmp_path):
    root = tmp_path / "root"
    make_system_root(root)
    spec = datasets.DataSetSpec(big_bytes=200_000, tree_files=120, seed=5, tar_roots=(str(root),))
    ds = datasets.prepare(spec, tmp_path / "cache", log=lambda m: None)
    assert ds.big_path.stat().st_size == 200_000
    assert datasets.tree_digest_of(ds.src / ds.tree_rel) == ds.tree_digest
    marker = ds.src / "tree" / "marker"
    marker.write_bytes(b"")  # a cache hit must not rebuild (the marker survives)
    again = datasets.prepare(spec, tmp_path / "cache", log=lambda m: None)
    assert again == ds and marker.exists()
    (tmp_path / "cache" / spec.name / "ready.json").unlink()  # as if a build was interrupted
    rebuilt = datasets.prepare(spec, tmp_path / "cache", log=lambda m: None)
    assert not marker.exists() and rebuilt.big_sha256 == ds.big_sha256


# ------------------------------------------------------------------ profile parsing


def test_py_spy_raw_lines_parse_to_thread_frames_and_count():
    from benchlib import profile
    text = ("thread (1534): pager-2;Thread.run (threading.py:982);Image._load_block "
            "(pagerfs/store/reader.py:364) 7\n"
            "thread (99): MainThread;run (trio/_core/_run.py:2532) 3\n")
    stacks = profile.parse_raw(text)
    assert stacks[0] == ("pager-2", [("Thread.run", "threading.py", 982),
                                     ("Image._load_block", "pagerfs/store/reader.py", 364)], 7)
    assert stacks[1][0] == "MainThread" and stacks[1][2] == 3


def test_samples_are_split_by_what_the_innermost_frame_does(tmp_path):
    from benchlib import profile
    store = tmp_path / "pagerfs" / "store"
    store.mkdir(parents=True)
    (store / "r.py").write_text("data = lz4.block.decompress(x)\nok = hashlib.sha256(d).digest()\n"
                                "data = os.pread(fd, n, off)\n")
    (tmp_path / "pagerfs" / "zircon").mkdir()
    (tmp_path / "pagerfs" / "zircon" / "vmo.py").write_text("x = 1\nparked.acquire()\n")
    roots = [tmp_path]
    at = lambda file, line, func="f": [("Thread.run", "threading.py", 1), (func, file, line)]  # noqa: E731
    assert profile.category("t", at("pagerfs/store/r.py", 1), roots) == "store: lz4 decompress"
    assert profile.category("t", at("pagerfs/store/r.py", 2), roots) == "store: SHA-256 verify"
    assert profile.category("t", at("pagerfs/store/r.py", 3), roots) == "store: pread of the image"
    assert profile.category("t", at("pagerfs/zircon/vmo.py", 2, "PagerVmo.fetch"), roots) == \
        "waiting: reader parked for the pager"
    assert profile.category("t", at("pagerfs/zircon/vmo.py", 1, "PagerVmo.fetch"), roots) == \
        "kernel model (pagerfs.zircon)"
    assert profile.category("t", [("get_events", "x.py", 1)], roots) == "other (interpreter, threading)"
    summary = profile.summarize([("pager-1", at("pagerfs/store/r.py", 1), 3),
                                 ("pager-2", at("pagerfs/store/r.py", 2), 1)], roots)
    assert summary["samples"] == 4
    assert summary["by_thread"] == {"pager": {"store: lz4 decompress": 3, "store: SHA-256 verify": 1}}


# ------------------------------------------------------------------ the commands both sides run


def test_both_images_are_built_the_way_the_issue_fixes():
    from benchlib import systems
    src, img = Path("/s"), Path("/i.img")
    sq = systems.build_command(SQUASHFS, src, img)
    assert sq[:3] == ["mksquashfs", "/s", "/i.img"]
    assert sq[sq.index("-comp") + 1] == "lz4" and "-noappend" in sq
    pf = systems.build_command(PAGERFS, src, img, ("--chunk-size=65536",))
    assert pf[-4:] == ["mkimage", "--chunk-size=65536", "/s", "/i.img"]
    mount = systems.mount_command(PAGERFS, img, Path("/m"), 128 * MiB, ("pager_threads=2",))
    assert mount[-7:] == ["mount", "-o", f"page_budget={128 * MiB}", "-o", "pager_threads=2", "/i.img", "/m"]
    assert systems.mount_command(SQUASHFS, img, Path("/m")) == ["squashfuse_ll", "/i.img", "/m"]


def test_daemon_is_found_by_the_mountpoint_in_its_command_line(tmp_path):
    import subprocess
    from benchlib import systems
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()", str(mnt)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        # Until the child has exec'd, its /proc cmdline is still pytest's.
        assert child.stdout.readline() == b"up\n"
        assert systems.daemon_pids(mnt) == [child.pid]
        assert systems.daemon_pids(tmp_path) == []
        assert systems.peak_rss_bytes(child.pid) > 1 << 20  # an interpreter is > 1 MiB
    finally:
        child.stdin.close()
        child.wait()
        child.stdout.close()
    assert systems.daemon_pids(mnt) == []


def test_hops_cut_each_missing_read_at_its_stamps_and_skip_hits():
    from benchlib import hops
    S = hops.SEQUENCE
    assert S[1] == "page request queued on the port"
    events = [(1010, S[0]), (1020, S[1]), (1030, S[2]), (1100, S[-2]),
              (1150, S[-1]),  # a miss inside the window (1000, 1200)
              (2010, S[0]), (2050, S[-1])]  # a hit: no page request
    out = hops.split(events, [(1000, 1200), (2000, 2100)])
    assert out["total"] == [0.2]  # only the miss, in µs
    assert out[f"client pread() → {S[0]}"] == [0.01]
    assert out[f"{S[1]} → {S[2]}"] == [0.01]
    assert out[f"{S[-1]} → client pread() returns"] == [0.05]


def test_hops_wrappers_stamp_around_the_real_call():
    from benchlib import hops
    hops._events.clear()
    wrapped = hops._stamped(lambda x: x * 2, "in", "out")
    assert wrapped(21) == 42
    assert [n for _, n in hops._events] == ["in", "out"]
    hops._events.clear()
