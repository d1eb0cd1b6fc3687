"""The daemon's life: clear refusals, clean ends on signals, ENOTCONN after a crash,
`pagerfs umount` for both, and a page budget that bounds its memory."""

import contextlib
import errno
import os
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.fuse


def one_line_error(done, *needles):
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pagerfs: "), done.stderr
    for needle in needles:
        assert needle in lines[0]


def wait_exit(pid, timeout=20.0):
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        assert select.select([fd], [], [], timeout)[0], f"pid {pid} still running"
    finally:
        os.close(fd)


def test_refusals_are_one_line_and_exit_2(image, tmp_path, helpers):
    helpers.require_fuse()
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    (tmp_path / "junk.img").write_bytes(os.urandom(10000))
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (("mount", image, full), "not empty"),
        (("mount", image, tmp_path / "missing"), "no such directory"),
        (("mount", image, tmp_path / "file"), "not a directory"),
        (("mount", tmp_path / "junk.img", empty), "not a usable image"),
        (("mount", tmp_path / "nothing.img", empty), "nothing.img"),
        (("mount", image, empty, "-o", "bogus"), "unknown mount option"),
        (("mount", image, empty, "-o", "page_budget=1M"), "page_budget"),
        (("mount", image, empty, "-o", "read_ahead=1G"), "read_ahead"),
        (("mount", image, empty, "-o", "read_ahead_kb=lots"), "read_ahead_kb"),
        (("mount", image, empty, "--trace", tmp_path / "no" / "such" / "dir"), "cannot write"),
        (("umount", empty), "not mounted"),
        (("umount", "/proc"), "not a pagerfs mount"),
        (("stats", tmp_path / "file"), "not a pagerfs"),
        (("fault", "add", tmp_path / "file", "pages=0", "error=IO"), "not a regular file in a pagerfs"),
        (("fault", "list", tmp_path / "file"), "not a regular file in a pagerfs"),
    ]
    for args, needle in cases:
        one_line_error(helpers.pagerfs(*args, check=False), needle)
    assert not os.path.ismount(empty) and os.listdir(full) == ["x"]
    assert os.listxattr(tmp_path / "file") == []  # nothing was stored outside a mount


def test_mount_without_dev_fuse_is_refused(image, tmp_path, helpers):
    helpers.require_fuse()
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is missing")
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a private mount namespace here (unshare -m)")
    (tmp_path / "m").mkdir()
    # A private mount namespace whose /dev lacks the fuse device; the host is untouched.
    script = ('mount -t tmpfs none /dev && mknod -m 666 /dev/null c 1 3 && '
              'mknod -m 666 /dev/urandom c 1 9 && exec "$@"')
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                           sys.executable, "-m", "pagerfs", "mount", str(image), str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=60, cwd=helpers.REPO)
    one_line_error(done, "/dev/fuse")


def test_mounting_twice_on_one_place_is_refused(mnt, helpers):
    one_line_error(helpers.pagerfs("mount", mnt.image, mnt.path, check=False), "already mounted")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_unmount_cleanly(image, tmp_path, helpers, signum):
    with helpers.mounted(image, tmp_path / "m") as mount:
        pid = mount.pid
        assert (mount.path / "hello.txt").read_text() == "hello, pager\n"
        os.kill(pid, signum)
        wait_exit(pid)
        assert not os.path.ismount(mount.path)
        assert os.listdir(mount.path) == []  # the plain, empty directory again


def test_crash_leaves_enotconn_and_umount_clears_it(image, tmp_path, helpers):
    with helpers.mounted(image, tmp_path / "m") as mount:
        pid = mount.pid
        os.kill(pid, signal.SIGKILL)
        wait_exit(pid)
        with pytest.raises(OSError) as info:
            os.listdir(mount.path)
        assert info.value.errno == errno.ENOTCONN
        helpers.pagerfs("umount", mount.path)
        assert not os.path.ismount(mount.path) and os.listdir(mount.path) == []


def test_umount_waits_for_the_daemon_and_refuses_when_busy(image, tmp_path, helpers):
    with helpers.mounted(image, tmp_path / "m") as mount:
        pid = mount.pid
        with open(mount.path / "hello.txt") as busy:
            done = helpers.pagerfs("umount", mount.path, check=False)
            one_line_error(done, "busy")
            assert busy.read() == "hello, pager\n"
        helpers.pagerfs("umount", mount.path)
        assert not os.path.ismount(mount.path)
        wait_exit(pid, timeout=0)  # umount returned only once the daemon was gone


@contextlib.contextmanager
def foreground_mount(image, where, helpers, poll: float):
    """`pagerfs mount -f`, yielded once the mount appears (-f has no readiness signal
    but the mount itself); killed and detached on the way out if still there."""
    proc = subprocess.Popen([sys.executable, "-m", "pagerfs", "mount", "-f", str(image),
                             str(where)], stderr=subprocess.PIPE, text=True, cwd=helpers.REPO)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(where):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(poll)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
        if os.path.ismount(where):
            subprocess.run(["fusermount3", "-uz", str(where)])


def test_foreground_mount_serves_until_interrupted(image, tmp_path, helpers):
    helpers.require_fuse()
    where = tmp_path / "m"
    where.mkdir()
    with foreground_mount(image, where, helpers, poll=0.02) as proc:
        assert (where / "hello.txt").read_text() == "hello, pager\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not os.path.ismount(where)


def test_ctrl_c_as_a_foreground_mount_comes_up_is_a_clean_stop(image, tmp_path, helpers):
    """SIGINT the moment the mount appears, before the daemon has set its read-ahead
    window and called itself ready: the user asked it to stop, so it unmounts and
    exits 0 rather than reporting a failed mount."""
    helpers.require_fuse()
    where = tmp_path / "m"
    where.mkdir()
    for _ in range(5):
        with foreground_mount(image, where, helpers, poll=0.001) as proc:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0, proc.stderr.read()
            assert not os.path.ismount(where)


def vm_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_page_budget_bounds_committed_pages_and_memory(tmp_path, helpers):
    helpers.require_fuse()
    src = tmp_path / "src"
    src.mkdir()
    size = 96 * 2**20
    with open(src / "large", "wb") as f:
        for i in range(size // 2**20):
            f.write(helpers.pattern(2**20, 100 + i))
    image = helpers.build_image(src, tmp_path / "large.img", chunk=128 * 1024)
    budget = 16 * 2**20
    with helpers.mounted(image, tmp_path / "m", "-o", "page_budget=16M") as mount:
        pid = mount.pid
        base = vm_rss(pid)
        with open(mount.path / "large", "rb") as f:
            total = 0
            for i in range(size // 2**20):
                assert f.read(2**20) == helpers.pattern(2**20, 100 + i), i
                total += 2**20
            stats = mount.stats("large")
            # The whole file went through, yet at most the budget is committed.
            assert stats["pages_supplied"] >= size // 4096
            assert stats["committed_pages"] * 4096 <= budget
            assert mount.stats()["budget_pages"] * 4096 == budget
            grown = vm_rss(pid) - base
        assert total == size
        assert grown < budget + 48 * 2**20, f"daemon grew by {grown / 2**20:.0f} MiB"
        # Evicted pages come back through the pager when read again.
        with open(mount.path / "large", "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            assert f.read(2**20) == helpers.pattern(2**20, 100)


def test_umount_of_a_daemon_that_does_not_answer(image, tmp_path, helpers):
    with helpers.mounted(image, tmp_path / "m") as mount:
        pid = mount.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            one_line_error(helpers.pagerfs("umount", mount.path, check=False), "--lazy")
            helpers.pagerfs("umount", "--lazy", mount.path)
            assert not os.path.ismount(mount.path)
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_exit(pid)  # once resumed, it finds its session gone and ends


def test_sigterm_does_not_wait_out_a_slow_pager_rule(image, tmp_path, helpers):
    with helpers.mounted(image, tmp_path / "m", trace=True) as mount:
        pid = mount.pid
        path = mount.path / "big.bin"
        ino = os.stat(path).st_ino
        subprocess.run(["setfattr", "-n", "user.pagerfs.fault", "-v",
                        "pages=0-200 error=none delay_ms=60000", str(path)], check=True)
        reader = subprocess.Popen(["cat", str(path)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not any(e.get("ino") == ino for e in mount.trace()):  # the pager is asleep
                assert time.monotonic() < deadline
                time.sleep(0.01)
            os.kill(pid, signal.SIGTERM)
            wait_exit(pid, timeout=20)  # not the 60 s the rule asks for
            reader.wait(timeout=20)
        finally:
            if reader.poll() is None:
                reader.kill()
            reader.wait()
        assert not os.path.ismount(mount.path)


def test_malloc_arenas_are_capped_where_glibc_allows_it():
    import platform
    # In a child: the cap is process-wide and must come before the threads it governs.
    code = "from pagerfs.fuse.daemon import limit_malloc_arenas as f; print(f())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == str(platform.libc_ver()[0] == "glibc")


def test_a_mount_nobody_waits_for_any_more_does_not_stay(image, tmp_path, helpers):
    """`pagerfs mount` killed while it waited for the daemon: the daemon's readiness
    report finds no reader, and it unmounts rather than serve a mount nobody knows of."""
    helpers.require_fuse()
    where = tmp_path / "m"
    where.mkdir()
    script = (
        "import sys\n"
        "from pagerfs.fuse import daemon\n"
        "from pagerfs.store import Image\n"
        "def ready(error):\n"
        "    if error is None:\n"
        "        raise BrokenPipeError(32, 'Broken pipe')\n"
        "image, where = sys.argv[1], sys.argv[2]\n"
        "sys.exit(daemon.serve(Image.open(image), image, where,\n"
        "                      daemon.parse_options([]), None, ready))\n")
    try:
        done = subprocess.run([sys.executable, "-c", script, str(image), str(where)],
                              capture_output=True, text=True, timeout=60, cwd=helpers.REPO)
        assert done.returncode == 0, done.stderr  # a clean end
        assert not os.path.ismount(where) and os.listdir(where) == []
    finally:
        if os.path.ismount(where):
            subprocess.run(["fusermount3", "-uz", str(where)])
