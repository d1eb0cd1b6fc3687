"""Running the program: exit status, signal, timeout, and nothing left behind."""

from __future__ import annotations

import os
import sys

import pytest

from pagerfs.sweep import process


def inv(*argv, timeout=30.0, outputs=(), redact=()):
    return process.Invocation(tuple(map(str, argv)), dict(os.environ), tuple(outputs),
                              timeout, redact)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(b")") + 2:].split()[0] == b"Z"


def test_exit_status_stdout_digest_and_stderr_excerpt():
    a = process.run(inv("sh", "-c", "echo out; echo 'err at /mnt/x' >&2; exit 3",
                        redact=(("/mnt/x", "{}"),)))
    assert (a.exit_status, a.signal, a.timed_out) == (3, None, False)
    assert a.stderr == "err at {}\n"
    b = process.run(inv("sh", "-c", "echo out"))
    c = process.run(inv("sh", "-c", "echo other"))
    assert b.digest != c.digest and b.digest == process.run(inv("echo", "out")).digest


def test_a_signal_is_a_signal_not_an_exit_status():
    o = process.run(inv("sh", "-c", "kill -BUS $$"))
    assert (o.exit_status, o.signal, o.timed_out) == (None, 7, False)


def test_output_files_count_in_the_digest_and_stale_ones_are_removed(tmp_path):
    out = tmp_path / "result"
    write = inv("sh", "-c", f"echo 1 > {out}", outputs=[out])
    first = process.run(write)
    out.write_text("stale\n")
    missing = process.run(inv("true", outputs=[out]))
    assert not out.exists()  # the stale file did not stand in for this run's output
    assert missing.digest != first.digest == process.run(write).digest


def test_timeout_kills_a_group_that_ignores_sigterm_and_leaves_children(tmp_path):
    pids = tmp_path / "pids"
    script = ("import os, signal, subprocess, sys, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "child = subprocess.Popen(['sleep', '1000'])\n"
              f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
              "while True: time.sleep(1000)\n")
    o = process.run(inv(sys.executable, "-c", script, timeout=1.0))
    assert o.timed_out and o.exit_status is None and o.signal is None
    assert all(gone(int(p)) for p in pids.read_text().split())


def test_children_left_behind_by_a_program_that_exits_are_killed(tmp_path):
    pid = tmp_path / "pid"
    o = process.run(inv("sh", "-c", f"sleep 1000 & echo $! > {pid}"))
    assert o.exit_status == 0
    assert gone(int(pid.read_text()))


def test_a_missing_command_is_one_clear_error():
    with pytest.raises(process.ProgramError, match="no-such-program-x: command not found"):
        process.run(inv("no-such-program-x"))


def test_expand_replaces_the_mount_point_and_the_output_directory():
    assert process.expand(["{}/a", "x{out}/r", "{}"], "/m", "/o") == ("/m/a", "x/o/r", "/m")


def test_a_run_started_after_the_sweep_stopped_is_killed_at_once():
    table = process.ProcessTable()
    table.kill_all()
    o = process.run(inv("sleep", "600", timeout=600), table)
    assert o.signal == 9 and not o.timed_out
