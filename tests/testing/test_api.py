"""pagerfs.testing against real mounts: rules before the first read, handles that name
one rule, fire counts, the trace, and every way a test can go wrong at teardown."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pagerfs import testing

pytestmark = pytest.mark.fuse

PAGE = 4096
BIG = bytes(range(256)) * (PAGE * 25 // 256)  # 25 pages, each unlike its neighbours


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return testing.build({"big.bin": BIG, "data.json": json.dumps({"n": list(range(2000))}),
                          "dir/small.txt": "small\n"},
                         cache_dir=tmp_path_factory.mktemp("cache"))


def mounted_paths():
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if " fuse.pagerfs " in line]


def test_build_is_cached_by_content(tmp_path):
    one = testing.build({"a.txt": "A", "sub/b.bin": b"\0\1"}, cache_dir=tmp_path)
    built = one.path.stat().st_mtime_ns
    again = testing.build({"sub/b.bin": b"\0\1", "a.txt": "A"}, cache_dir=tmp_path)
    assert again.path == one.path and again.path.stat().st_mtime_ns == built
    assert testing.build({"a.txt": "B", "sub/b.bin": b"\0\1"}, cache_dir=tmp_path).path != one.path
    other_chunks = testing.build({"a.txt": "A", "sub/b.bin": b"\0\1"}, cache_dir=tmp_path,
                                 chunk_size=65536)
    assert other_chunks.path != one.path and one.source is None
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("A")
    (tree / "sub" / "b.bin").write_bytes(b"\0\1")
    from_tree = testing.build(tree, cache_dir=tmp_path)
    assert from_tree.path == one.path and from_tree.source == tree  # same content, same image


@pytest.mark.parametrize("src, needle", [
    ({"/etc/passwd": "x"}, "relative path"),
    ({"../up": "x"}, "relative path"),
    ({"n": 3}, "expected bytes or str"),
    ("/nonexistent/tree", "not a directory"),
])
def test_build_refuses_bad_sources_in_one_line(tmp_path, src, needle):
    with pytest.raises(testing.PagerfsError) as info:
        testing.build(src, cache_dir=tmp_path)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_rules_given_at_mount_act_on_the_first_read(image, fuse):
    with testing.mount(image, faults=[("data.json", "pages=0 error=IO"),
                                      testing.Rule("big.bin", range(3, 5))]) as m:
        with pytest.raises(OSError) as info:
            json.loads((m / "data.json").read_text())
        assert info.value.errno == errno.EIO
        assert m.fired("data.json") and not m.fired("big.bin")
        assert m.rules("big.bin") == ["pages=3-4 error=IO"]
        with open(m / "big.bin", "rb") as f:
            assert f.read(3 * PAGE) == BIG[:3 * PAGE]
            with pytest.raises(OSError):
                f.read(PAGE)
        assert m.fired(testing.Rule("big.bin", "3-4"))
        m.clear()
        assert m.rules("data.json") == [] and json.loads((m / "data.json").read_text())["n"][-1] == 1999


def test_fault_handles_fire_counts_and_the_trace(image, fuse):
    with testing.mount(image, trace=True) as m:
        mark = m.mark()
        never = m.fault("big.bin", pages=24)
        hit = m.fault("big.bin", pages=range(2, 4), error="IO_DATA_INTEGRITY")
        with open(m / "big.bin", "rb") as f:
            f.seek(2 * PAGE)
            with pytest.raises(OSError):
                f.read(PAGE)
        assert m.fired(hit) and not m.fired(never)
        assert hit.fired_count() >= 1 and never.fired_count() == 0
        ino = os.stat(m / "big.bin").st_ino
        packets = [e for e in m.trace(mark) if e["event"] == "packet" and e["ino"] == ino]
        assert packets and any(e["offset"] // PAGE <= 2 < (e["offset"] + e["length"]) // PAGE
                               for e in packets)
        assert m.trace(m.mark()) == []
        count = hit.fired_count()
        hit.remove()
        assert m.rules("big.bin") == ["pages=24 error=IO"]
        assert m.fired(hit) and hit.fired_count() == count  # still known once removed
        with open(m / "big.bin", "rb") as f:
            assert f.read(24 * PAGE) == BIG[:24 * PAGE]
        assert m.stats("big.bin")["pages_failed"]["IO_DATA_INTEGRITY"] >= count
        assert m.stats()["pid"] == m.pid


def test_a_mount_without_trace_says_so(image, fuse):
    with testing.mount(image) as m:
        with pytest.raises(testing.PagerfsError, match="trace=True"):
            m.mark()


@pytest.mark.parametrize("rel, pages, needle", [
    ("nowhere.bin", 0, "nowhere.bin: not in the image"),
    ("dir", 0, "dir: a directory"),
    ("big.bin", 25, "pages past the end of the file (25 pages)"),
    ("big.bin", range(5, 5), "non-empty range"),
])
def test_bad_live_rules_raise_rule_error(image, fuse, rel, pages, needle):
    with testing.mount(image) as m:
        with pytest.raises(testing.RuleError) as info:
            m.fault(rel, pages=pages)
        assert needle in str(info.value)
        assert m.rules("big.bin") == []


@pytest.mark.parametrize("faults, needle", [
    ([("nowhere.bin", "pages=0 error=IO")], "nowhere.bin: pages=0 error=IO: not in the image"),
    ([("dir", "pages=0 error=IO")], "dir: pages=0 error=IO: a directory"),
    ([("big.bin", "pages=0 error=IO"), ("big.bin", "pages=30 error=IO")],
     "big.bin: pages=30 error=IO: pages=30: the file has 25 pages"),
    ([("big.bin", "pages=0 error=EIO")], "error='EIO'"),
])
def test_bad_rules_at_mount_raise_rule_error_and_mount_nothing(image, fuse, faults, needle,
                                                              tmp_path):
    with pytest.raises(testing.RuleError) as info:
        testing.mount(image, tmp_path, faults=faults)
    assert needle in str(info.value)
    assert str(tmp_path) not in mounted_paths() and os.listdir(tmp_path) == []


def test_a_faults_file_and_a_symlink_in_it(image, fuse, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(BIG)
    (tree / "l").symlink_to("f")
    img = testing.build(tree, cache_dir=tmp_path / "cache")
    faults = tmp_path / "faults"
    faults.write_text("# the first page of f\nf: pages=0 error=IO\n")
    with testing.mount(img, faults=faults) as m:
        assert m.rules("f") == ["pages=0 error=IO"]
        with pytest.raises(testing.RuleError, match="l: a symbolic link"):
            m.fault("l", pages=0)
    faults.write_text("l: pages=0 error=IO\n")
    with pytest.raises(testing.RuleError, match=f"{faults}:1: l: a symbolic link"):
        testing.mount(img, faults=faults)


def test_a_mount_point_in_use_is_refused(image, fuse, tmp_path):
    with testing.mount(image) as m:
        with pytest.raises(testing.MountError, match="already mounted"):
            testing.mount(image, m.path)
        with pytest.raises(testing.MountError, match="not a usable image"):
            testing.mount(m / "big.bin", tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(testing.MountError, match="file: cannot be a mount point"):
        testing.mount(image, tmp_path / "file")


def test_files_left_open_are_named_and_the_mount_goes_lazily(image, fuse):
    m = testing.mount(image)
    held = open(m / "dir" / "small.txt")
    with pytest.warns(testing.OpenFilesWarning, match=r"dir/small\.txt \(pid \d+ "):
        m.close()
    assert str(m.path) not in mounted_paths()
    assert held.read() == "small\n"  # a lazy unmount: open files keep working
    held.close()
    from pagerfs.cli.unmount import wait_exit
    assert wait_exit(m.pid, 20)  # and the daemon goes once they are closed


def test_a_working_directory_inside_is_named_too(image, fuse):
    m = testing.mount(image)
    # The daemon cannot see a working directory (no file is open), only the busy
    # unmount and /proc can.
    sleeper = subprocess.Popen(["sleep", "60"], cwd=m / "dir")
    try:
        with pytest.warns(testing.OpenFilesWarning, match=rf"dir \(pid {sleeper.pid} sleep\)"):
            m.close()
        assert str(m.path) not in mounted_paths()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_daemon_killed_mid_test_is_reported_and_cleared(image, fuse):
    m = testing.mount(image)
    os.kill(m.pid, signal.SIGKILL)
    with pytest.raises(testing.MountError, match=f"daemon \\(pid {m.pid}\\) .* died"):
        m.close()
    assert str(m.path) not in mounted_paths() and not m.path.exists()
    with testing.mount(image) as again:  # and the next mount is a fresh one
        assert (again / "dir" / "small.txt").read_text() == "small\n"


def test_a_stopped_daemon_is_killed(image, fuse):
    m = testing.mount(image)
    os.kill(m.pid, signal.SIGSTOP)
    with pytest.raises(testing.MountError, match="did not answer; killed"):
        m.close()
    assert str(m.path) not in mounted_paths()
    from pagerfs.cli.unmount import wait_exit
    assert wait_exit(m.pid, 0)


def test_sigterm_sweeps_the_mounts_of_a_test_run(image, fuse, tmp_path):
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pagerfs import testing
        m = testing.mount({str(image.path)!r})
        print(m.path, m.pid, flush=True)
        time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        where, pid = child.stdout.readline().split()
        assert where in mounted_paths()
        child.terminate()
        assert child.wait(timeout=30) == -signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert where not in mounted_paths()
    from pagerfs.cli.unmount import wait_exit
    assert wait_exit(int(pid), 10)


def test_no_fuse_is_its_own_error(image, monkeypatch):
    from pagerfs.testing import mounts

    monkeypatch.setattr(mounts, "fuse_missing_reason", lambda: "/dev/fuse is missing")
    with pytest.raises(testing.FuseUnavailable) as info:
        testing.mount(image)
    assert info.value.reason == "/dev/fuse is missing"
    assert isinstance(info.value, testing.MountError)


def test_a_forked_child_leaves_its_parents_mounts_alone(image, fuse):
    # The child inherits the atexit hook and the table of mounts; its exit must not
    # unmount what its parent is using.
    script = textwrap.dedent(f"""
        import os, sys
        from pagerfs import testing
        m = testing.mount({str(image.path)!r})
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # runs the atexit hooks, in the child
        os.waitpid(pid, 0)
        print((m / "dir" / "small.txt").read_text(), end="")
        m.close()
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout == "small\n", done.stderr
