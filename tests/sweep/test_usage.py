"""Bad usage of `pagerfs sweep`: one line, exit status 2, before anything is mounted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def sweep(*args):
    return subprocess.run([sys.executable, "-m", "pagerfs", "sweep", *map(str, args)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.mark.parametrize("args, message", [
    (("x.img", "--jobs", "0", "--", "true"), "argument --jobs: not a positive number: '0'"),
    (("x.img", "--group", "0", "--", "true"), "argument --group: not a positive number: '0'"),
    (("x.img", "--timeout", "-1", "--", "true"), "argument --timeout: -1: expected more"),
    (("x.img", "--sample", "many", "--", "true"), "argument --sample: not a positive number: 'many'"),
    (("x.img", "--error", "IO,lost", "--", "true"), "--error lost: expected one of IO,"),
    (("x.img", "--probability", "1.5", "--", "true"), "--probability 1.5: expected more"),
    (("x.img",), "sweep needs a command"),
    ((), "sweep needs IMAGE_OR_DIR"),
    (("--replay", "s.json"), "--replay needs --case N"),
    (("x.img", "--case", "3", "--", "true"), "--case goes with --replay"),
    (("--replay", "s.json", "--case", "1", "x.img"), "--replay takes no IMAGE"),
    (("x.img", "--jobs", "2", "--output", "/tmp/r", "--", "true"),
     "--output /tmp/r: with --jobs 2 the runs would share it"),
    (("/nonexistent/x.img", "--", "true"), "/nonexistent/x.img: no such file or directory"),
    (("--replay", "/nonexistent/s.json", "--case", "1"), "No such file"),
    (("x.img", "--json", "/nonexistent/dir/s.json", "--", "true"), "cannot write"),
])
def test_bad_usage_is_one_line_and_exit_2(args, message):
    done = sweep(*args)
    assert done.returncode == 2, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pagerfs: "), done.stderr
    assert message in lines[0]
    assert done.stdout == ""


def test_options_after_the_double_dash_are_the_programs_own(tmp_path):
    # `--jobs 0` after -- belongs to CMD, so the usage is fine and the (missing) image is
    # what is refused.
    done = sweep(tmp_path / "none.img", "--", "sh", "-c", "true", "--jobs", "0")
    assert done.returncode == 2 and "none.img: no such file or directory" in done.stderr


def test_replay_of_a_file_that_is_not_a_sweep(tmp_path):
    bad = tmp_path / "s.json"
    bad.write_text('{"schema": "something/else"}')
    done = sweep("--replay", bad, "--case", "1")
    assert done.returncode == 2
    assert done.stderr == f"pagerfs: {bad}: not a pagerfs-sweep/1 document (schema 'something/else')\n"
