"""Sweeps of real programs over real mounts: the tree they read, its image, and a way
to run `pagerfs sweep` as a user would."""

from __future__ import annotations

import gzip
import json
import os
import random
import sqlite3
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROGRAMS = Path(__file__).resolve().parent / "programs"
PAGE = 4096


def _write_tree(root: Path) -> Path:
    rng = random.Random(11)
    root.mkdir(parents=True)
    # 4 pages, the last one short: incompressible, so each page is its own bytes.
    (root / "data.bin").write_bytes(rng.randbytes(3 * PAGE + 1000))
    (root / "notes.txt").write_text("not read by most programs\n")
    (root / "data.bin.gz").write_bytes(gzip.compress(rng.randbytes(2 * PAGE + 500), mtime=0))
    members = root / "members"
    members.mkdir()
    (members / "a").write_bytes(rng.randbytes(5000))
    (members / "b").write_bytes(rng.randbytes(3000))
    with tarfile.open(root / "archive.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in ("a", "b"):
            info = tar.gettarinfo(members / name, arcname=name)
            info.mtime = 0
            with open(members / name, "rb") as f:
                tar.addfile(info, f)
    db = sqlite3.connect(root / "table.db")
    db.execute("pragma page_size = 4096")
    db.execute("create table t (k integer primary key, v blob)")
    db.executemany("insert into t values (?, ?)",
                   [(i, bytes([i % 251]) * 300) for i in range(40)])
    db.commit()
    db.execute("vacuum")
    db.close()
    return root


@pytest.fixture(scope="session")
def fuse():
    from pagerfs import testing

    reason = testing.fuse_missing_reason()
    if reason:
        if os.environ.get("PAGERFS_REQUIRE_FUSE") == "1":
            pytest.fail(f"PAGERFS_REQUIRE_FUSE=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def tree(tmp_path_factory) -> Path:
    return _write_tree(tmp_path_factory.mktemp("sweep-src") / "tree")


@pytest.fixture(scope="session")
def image(tree, tmp_path_factory, fuse) -> Path:
    from pagerfs import testing

    return testing.build(tree, cache_dir=tmp_path_factory.mktemp("sweep-img")).path


def pagerfs_mounts(under: Path) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f
                if " fuse.pagerfs " in line and line.split()[1].startswith(f"{under}/")]


def sweep(*args, json_path: Path | None = None, timeout: float = 120,
          tmpdir: Path | None = None):
    """Run `pagerfs sweep` as a user would; the parsed JSON (if json_path) in .doc.
    With `tmpdir`, its mounts and temporary files go there (TMPDIR)."""
    extra = ["--json", str(json_path)] if json_path else []
    argv = [str(a) for a in args]
    if "--" in argv:
        i = argv.index("--")
        argv[i:i] = extra
    else:
        argv += extra
    env = dict(os.environ, **({"TMPDIR": str(tmpdir)} if tmpdir else {}))
    done = subprocess.run([sys.executable, "-m", "pagerfs", "sweep", *argv],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    doc = None
    if json_path and json_path.exists():
        doc = json.loads(json_path.read_text())
    return types.SimpleNamespace(status=done.returncode, out=done.stdout, err=done.stderr,
                                 doc=doc)


def verdicts(doc) -> dict[tuple[str, int], str]:
    """{(file, first page): verdict} of a sweep's runs."""
    return {(r["file"], r["pages"][0]): r["verdict"] for r in doc["runs"]}


@pytest.fixture
def run_sweep(image, tmp_path):
    """sweep(args..., "--", cmd...) on the shared image, with --jobs 2 and the JSON."""
    counter = iter(range(1000))

    def go(*args, target=None):
        n = next(counter)
        tmpdir = tmp_path / f"tmp{n}"
        tmpdir.mkdir()
        result = sweep(target or image, "--jobs", "2", *args,
                       json_path=tmp_path / f"sweep{n}.json", tmpdir=tmpdir)
        assert pagerfs_mounts(tmpdir) == [], "the sweep left a mount behind"
        assert os.listdir(tmpdir) == [], "the sweep left files behind"
        return result

    return go


@pytest.fixture(scope="session")
def helpers_sweep():
    return types.SimpleNamespace(PROGRAMS=PROGRAMS, PAGE=PAGE, sweep=sweep,
                                 verdicts=verdicts, pagerfs_mounts=pagerfs_mounts)
