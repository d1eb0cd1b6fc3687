"""tools/demo, the README's main-job command, tells its story and cleans up."""

import os
import subprocess

import pytest

pytestmark = pytest.mark.fuse


def test_demo_runs_clean_and_leaves_nothing_mounted(helpers, tmp_path):
    helpers.require_fuse()
    env = dict(os.environ, TMPDIR=str(tmp_path))
    done = subprocess.run([str(helpers.REPO / "tools" / "demo")], capture_output=True, text=True,
                          timeout=110, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for claim in ["all 4 files identical", "dd bs=4096 skip=10 count=1: EIO",
                  "dd bs=4096 skip=13 count=1: ok", "killed by SIGBUS", "dd page 40: EIO",
                  "dd page 44: ok", "each failed page killed the reader with SIGBUS",
                  "every step showed what it claimed"]:
        assert claim in out, claim
    assert os.listdir(tmp_path) == []  # its work directory is gone
    with open("/proc/self/mounts") as f:
        assert str(tmp_path) not in f.read()
