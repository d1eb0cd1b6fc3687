"""Shared helpers for tests that mount a real image with `pagerfs mount`.

Mount tests skip where FUSE cannot work (no /dev/fuse, no fusermount3), and fail instead
when PAGERFS_REQUIRE_FUSE=1, as CI sets it.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pagerfs import testing
from pagerfs.testing import plugin

REPO = Path(__file__).resolve().parents[2]
PAGE = 4096
CHUNK = 64 * 1024  # images in these tests use 64 KiB chunks: 16 pages


def fuse_missing_reason() -> str | None:
    """pagerfs.testing's reason, plus the attr tools these tests drive."""
    reason = testing.fuse_missing_reason()
    if reason is None and not shutil.which("setfattr"):
        return "setfattr is not installed (Debian package attr)"
    return reason


def require_fuse() -> None:
    reason = fuse_missing_reason()
    if reason is not None:
        plugin.no_fuse(reason)


def pagerfs_cli(*args: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run the real command line, as a user would."""
    done = subprocess.run([sys.executable, "-m", "pagerfs", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"pagerfs {' '.join(map(str, args))} -> {done.returncode}\n"
                             f"{done.stdout}{done.stderr}")
    return done


def run(*args, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, timeout=timeout, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} -> {done.returncode}\n"
                             f"{done.stdout!r}\n{done.stderr!r}")
    return done


def pattern(n: int, seed: int) -> bytes:
    """Bytes that compress somewhat and differ on every page (so misplaced pages show)."""
    rng = random.Random(seed)
    out = bytearray()
    page = 0
    while len(out) < n:
        out += f"page {page:08d} seed {seed} ".encode() * 8
        out += rng.randbytes(PAGE // 2)
        out += bytes(PAGE - (len(out) % PAGE or PAGE))
        page += 1
    return bytes(out[:n])


def make_tree(root: Path) -> Path:
    """A small tree with the shapes that matter: sizes around pages and chunks, an empty
    file, links, modes, owners and times."""
    root.mkdir(parents=True)
    (root / "hello.txt").write_text("hello, pager\n")
    (root / "empty").write_bytes(b"")
    (root / "one-page").write_bytes(pattern(PAGE, 1))
    (root / "odd-size.bin").write_bytes(pattern(3 * CHUNK + 1234, 2))
    (root / "big.bin").write_bytes(pattern(40 * PAGE * 4 + 100, 3))  # 160 pages, 10 chunks
    (root / "zeros").write_bytes(bytes(200 * 1024))
    sub = root / "dir" / "sub"
    sub.mkdir(parents=True)
    (sub / "deep.txt").write_text("deep\n" * 1000)
    (root / "dir" / "private").write_bytes(b"secret\n")
    os.chmod(root / "dir" / "private", 0o600)
    os.chown(root / "dir" / "private", 1234, 5678)
    os.chmod(root / "dir" / "sub", 0o750)
    (root / "link").symlink_to("hello.txt")
    (root / "dir" / "dangling").symlink_to("../nowhere")
    os.link(root / "hello.txt", root / "dir" / "hardlink")
    (root / "name with spaces é").write_text("spaces\n")
    for path in [*root.rglob("*"), root]:
        os.utime(path, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789),
                 follow_symlinks=False)
    return root


@contextlib.contextmanager
def mounted(image: Path, where: Path, *options: str, trace: bool = False,
            report_death: bool = False):
    """A pagerfs.testing mount at `where`. `options` are command-line words (`-o`,
    `a,b`). Tests through helpers.mounted take the daemon's life in their own hands
    (kill it, unmount it themselves), so its death is reported only with report_death."""
    require_fuse()
    opts = [word for word in options if word != "-o"]
    log = where.with_name(where.name + ".log")
    m = testing.mount(image, where, options=opts, trace=trace, log=log)
    try:
        assert os.path.ismount(where)
        yield m
    finally:
        m.close(check=report_death)
    # The daemon logs only what nobody expected (a bug answered with EIO or BAD_STATE).
    assert not m.daemon_errors, "\n".join(m.daemon_errors)


def build_image(src: Path, image: Path, chunk: int = CHUNK) -> Path:
    pagerfs_cli("mkimage", "--chunk-size", str(chunk), src, image)
    return image


@pytest.fixture(scope="session")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("src") / "tree")


@pytest.fixture(scope="session")
def image(tree, tmp_path_factory) -> Path:
    return testing.build(tree, chunk_size=CHUNK, cache_dir=tmp_path_factory.mktemp("img")).path


@pytest.fixture(scope="module")
def mnt(image, tmp_path_factory):
    """One shared mount per test module: for tests that only read."""
    with mounted(image, tmp_path_factory.mktemp("mnt") / "m", report_death=True) as mount:
        yield mount


@pytest.fixture
def fresh_mount(image, tmp_path):
    """A mount of its own, for tests that arm faults or change the mount's state."""
    with mounted(image, tmp_path / "m", trace=True, report_death=True) as mount:
        yield mount


def drop_page_cache(path: Path) -> None:
    """Make the next read of this file ask the filesystem again."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture(scope="session")
def helpers():
    """This module's helpers, for test modules (conftest is not importable by name
    under --import-mode=importlib)."""
    import types

    return types.SimpleNamespace(
        pagerfs=pagerfs_cli, run=run, pattern=pattern, make_tree=make_tree, mounted=mounted,
        build_image=build_image, drop_page_cache=drop_page_cache, PAGE=PAGE, CHUNK=CHUNK,
        require_fuse=require_fuse, REPO=REPO)
