"""`pagerfs mount -o faults=FILE`: rules in force before the first read, refusals that
name FILE:LINE and leave nothing mounted, and rules taken away one at a time."""

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.fuse

FILE = "big.bin"  # 161 pages


def dd_page(path, k):
    return subprocess.run(["dd", f"if={path}", "bs=4096", f"skip={k}", "count=1",
                           "status=none"], capture_output=True)


def file_stats(path):
    return json.loads(os.getxattr(path, "user.pagerfs.stats"))


def test_rules_from_the_file_fail_the_very_first_read(image, tmp_path, helpers):
    faults = tmp_path / "faults"
    faults.write_text("# pages of big.bin that fail\n\n"
                      f"{FILE}: pages=3-4 error=IO_DATA_INTEGRITY\n"
                      "/dir/sub/deep.txt: pages=0 error=IO count=2  # one EIO\n")
    with helpers.mounted(image, tmp_path / "m", "-o", f"faults={faults}") as mount:
        big = mount.path / FILE
        assert os.getxattr(big, "user.pagerfs.faults") == b"pages=3-4 error=IO_DATA_INTEGRITY\n"
        done = dd_page(big, 3)
        assert done.returncode != 0 and b"Input/output error" in done.stderr
        assert dd_page(big, 2).stdout == helpers.pattern(40 * 4096 * 4 + 100, 3)[2 * 4096:3 * 4096]
        stats = file_stats(big)
        assert stats["pages_failed"] == {"IO_DATA_INTEGRITY": 2}  # one read, retried once
        assert [r["fired"] for r in stats["rules"]] == [2]
        deep = mount.path / "dir" / "sub" / "deep.txt"
        with pytest.raises(OSError):
            deep.read_bytes()
        assert deep.read_text() == "deep\n" * 1000  # count=2 spent by the first read


@pytest.mark.parametrize("line, needle", [
    ("nowhere.bin: pages=0 error=IO", "nowhere.bin: not in the image"),
    ("hello.txt/x: pages=0 error=IO", "not in the image"),
    ("dir: pages=0 error=IO", "dir: a directory"),
    ("link: pages=0 error=IO", "link: a symbolic link"),
    (f"{FILE}: pages=161 error=IO", "the file has 161 pages"),
    ("empty: pages=0 error=IO", "the file is empty"),
    (f"{FILE} pages=1 error=IO", "expected 'PATH: RULE'"),
    (f"{FILE}: pages=1 error=EIO", "error='EIO'"),
])
def test_a_bad_line_refuses_the_mount_naming_file_and_line(image, tmp_path, helpers, line, needle):
    helpers.require_fuse()
    faults = tmp_path / "faults"
    faults.write_text(f"hello.txt: pages=0 error=IO\n{line}\n")
    where = tmp_path / "m"
    where.mkdir()
    done = helpers.pagerfs("mount", image, where, "-o", f"faults={faults}", check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"pagerfs: {faults}:2: ") and needle in done.stderr
    assert not os.path.ismount(where)
    with open("/proc/self/mounts") as f:
        assert str(where) not in f.read()


def test_a_missing_faults_file_is_one_line(image, tmp_path, helpers):
    helpers.require_fuse()
    (tmp_path / "m").mkdir()
    done = helpers.pagerfs("mount", image, tmp_path / "m", "-o", "faults=" + str(tmp_path / "no"),
                           check=False)
    assert done.returncode == 2
    assert done.stderr == f"pagerfs: {tmp_path / 'no'}: cannot read faults: No such file or directory\n"
    assert not os.path.ismount(tmp_path / "m")


def test_unfault_takes_one_rule_away_and_fire_counts_tell_rules_apart(fresh_mount):
    big = fresh_mount.path / FILE
    for rule in ("pages=1 error=IO", "pages=150 error=IO", "pages=1 error=IO"):
        os.setxattr(big, "user.pagerfs.fault", rule.encode())
    assert dd_page(big, 1).returncode != 0
    rules = file_stats(big)["rules"]
    assert [r["rule"] for r in rules] == ["pages=1 error=IO", "pages=150 error=IO",
                                         "pages=1 error=IO"]
    fired = [r["fired"] for r in rules]
    assert fired[0] > 0 and fired[1] == 0 and fired[2] > 0
    os.setxattr(big, "user.pagerfs.unfault", f"id={rules[1]['id']}".encode())
    os.setxattr(big, "user.pagerfs.unfault", b"pages=1 error=IO")  # the newest of the two
    assert [r["id"] for r in file_stats(big)["rules"]] == [rules[0]["id"]]
    with pytest.raises(OSError) as info:
        os.setxattr(big, "user.pagerfs.unfault", b"pages=7 error=IO")
    assert info.value.errno == 61  # ENODATA: no such rule
    os.setxattr(big, "user.pagerfs.unfault", f"id={rules[0]['id']}".encode())
    assert dd_page(big, 1).returncode == 0  # the last rule gone, the page reads again
    assert file_stats(big)["rule_firings"] == fired[0] + fired[2]


def test_umount_waits_for_files_closed_while_it_runs(image, tmp_path, helpers, monkeypatch):
    """The kernel sends RELEASE after close() returned and the mount is busy until the
    daemon answered it: umount retries while the daemon's open handles fall."""
    import threading

    from pagerfs.cli import unmount

    busy_seen = threading.Event()
    settle = unmount._releases_settle

    def seen_busy(*args):
        busy_seen.set()
        return settle(*args)

    monkeypatch.setattr(unmount, "_releases_settle", seen_busy)
    with helpers.mounted(image, tmp_path / "m") as mount:
        fds = [os.open(mount.path / p, os.O_RDONLY) for p in ("big.bin", "dir", "dir/sub")]
        assert mount.stats()["open_handles"] == 3
        failure = []

        def run():
            try:
                unmount.unmount(str(mount.path))
            except Exception as err:  # reported below, in the test's thread
                failure.append(err)

        thread = threading.Thread(target=run)
        thread.start()
        try:
            assert busy_seen.wait(20)  # it found the mount busy and is waiting
        finally:
            for fd in fds:
                os.close(fd)
        thread.join(20)
        assert not thread.is_alive() and failure == []
        assert not os.path.ismount(mount.path)


def test_umount_names_what_keeps_the_mount_busy(fresh_mount, helpers):
    with open(fresh_mount.path / "hello.txt") as held:
        done = helpers.pagerfs("umount", fresh_mount.path, check=False)
        assert done.returncode == 2 and held.read() == "hello, pager\n"
    assert done.stderr.startswith(f"pagerfs: {fresh_mount.path}: busy, held by hello.txt (pid {os.getpid()} ")


def test_fault_remove_and_list_fired_from_the_command_line(fresh_mount, helpers):
    big = fresh_mount.path / FILE
    for rule in ("pages=1 error=IO", "pages=150 error=IO"):
        helpers.pagerfs("fault", "add", big, rule)
    assert dd_page(big, 1).returncode != 0
    listed = helpers.pagerfs("fault", "list", "--fired", big).stdout.splitlines()
    ids = [line.split()[0] for line in listed]
    assert [line.split(None, 2)[1:] for line in listed] == [
        [f"fired={file_stats(big)['rules'][0]['fired']}", "pages=1 error=IO"],
        ["fired=0", "pages=150 error=IO"]]
    assert file_stats(big)["rules"][0]["fired"] > 0
    helpers.pagerfs("fault", "remove", big, ids[1])
    helpers.pagerfs("fault", "remove", big, "pages=1", "error=IO")
    assert helpers.pagerfs("fault", "list", big).stdout == ""
    done = helpers.pagerfs("fault", "remove", big, "pages=1 error=IO", check=False)
    assert done.returncode == 2 and done.stderr == f"pagerfs: {big}: no rule 'pages=1 error=IO'\n"
