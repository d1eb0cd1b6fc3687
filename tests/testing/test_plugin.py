"""The pytest plugin, as a user's suite sees it: an inner pytest run in a child process
with nothing but the installed pagerfs (entry point pytest11) and a test file."""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.fuse

SUITE = '''
import os, signal, json
import pytest

def test_reads_and_faults(pagerfs, pagerfs_image):
    image = pagerfs_image({"a.txt": "hello", "b.json": json.dumps([1, 2])})
    assert pagerfs_image({"b.json": json.dumps([1, 2]), "a.txt": "hello"}) is image
    m = pagerfs.mount(image, faults=[("b.json", "pages=0 error=IO")])
    assert (m / "a.txt").read_text() == "hello"
    with pytest.raises(OSError):
        json.loads((m / "b.json").read_text())
    assert m.fired("b.json")

def test_daemon_killed(pagerfs, pagerfs_image):
    m = pagerfs.mount(pagerfs_image({"a.txt": "hello"}))
    os.kill(m.pid, signal.SIGKILL)

def test_next_mount_is_fresh(pagerfs, pagerfs_image):
    m = pagerfs.mount(pagerfs_image({"a.txt": "hello"}))
    assert (m / "a.txt").read_text() == "hello"

LEFT_OPEN = []

def test_forgets_to_close(pagerfs, pagerfs_image):
    m = pagerfs.mount(pagerfs_image({"a.txt": "hello"}))
    LEFT_OPEN.append(open(m / "a.txt"))
'''


def inner_pytest(tmp_path, suite, env_extra=(), conftest=""):
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(suite))
    (tmp_path / "conftest.py").write_text(textwrap.dedent(conftest))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "PAGERFS_REQUIRE"))}
    env.update(PAGERFS_CACHE=str(tmp_path / "cache"), **dict(env_extra))
    return subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "-p", "no:randomly", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


def mounts_under(prefix):
    with open("/proc/self/mounts") as f:
        return [line for line in f if " fuse.pagerfs " in line and str(prefix) in line]


def test_fixtures_mount_report_a_dead_daemon_and_name_open_files(tmp_path, fuse):
    done = inner_pytest(tmp_path, SUITE)
    out = done.stdout
    assert "4 passed, 1 warning, 1 error" in out, out + done.stderr
    assert "ERROR at teardown of test_daemon_killed" in out
    assert "died during the test; the mount was cleared" in out
    assert "OpenFilesWarning" in out and "files still open at unmount: a.txt" in out
    report = out.split("ERROR at teardown of test_daemon_killed")[1].split("=====")[0]
    assert "Traceback" not in report and ".py:" not in report  # one message, no plumbing
    assert not mounts_under(tmp_path)


NO_FUSE = '''
import pagerfs.testing
pagerfs.testing.fuse_missing_reason = lambda: "/dev/fuse is missing (modprobe fuse)"
'''


@pytest.mark.parametrize("require, outcome", [("", "1 skipped"), ("1", "1 error")])
def test_without_fuse_tests_skip_with_the_reason_unless_required(tmp_path, require, outcome):
    done = inner_pytest(tmp_path, "def test_needs_fuse(pagerfs):\n    raise AssertionError('ran')\n",
                        {"PAGERFS_REQUIRE_FUSE": require}, conftest=NO_FUSE)
    assert outcome in done.stdout, done.stdout + done.stderr
    assert "/dev/fuse is missing (modprobe fuse)" in done.stdout
    assert "ran" not in done.stdout
