"""Shared fixtures for the store tests: real trees on disk, images built from them,
and a way to run the `pagerfs` command in-process or as a subprocess."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pagerfs.cli import main
from pagerfs.store import format as fmt

REPO = Path(__file__).resolve().parents[2]
PYTHON_LIB = Path("/usr/lib/python3.11")


@dataclass
class Run:
    rc: int
    out: bytes
    err: bytes


def _in_process(args: list[str]) -> Run:
    out, err = io.BytesIO(), io.BytesIO()
    new_out = io.TextIOWrapper(out, encoding="utf-8", errors="surrogateescape", write_through=True)
    new_err = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True)
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = new_out, new_err
    try:
        try:
            rc = main(args)
        except SystemExit as exit:  # argparse's usage errors
            rc = exit.code
        new_out.flush()
        new_err.flush()
    finally:
        sys.stdout, sys.stderr = old
    return Run(rc, out.getvalue(), err.getvalue())


@pytest.fixture
def image(pristine, tmp_path) -> Path:
    """A copy of the test module's `pristine` image, for the test to damage."""
    copy = tmp_path / "img"
    shutil.copyfile(pristine, copy)
    return copy


@pytest.fixture
def cli():
    """`pagerfs ARGS` in this process: any exception escaping main() fails the test."""
    return _in_process


@pytest.fixture
def cli_subprocess():
    def run(args: list[str | bytes], timeout: float = 60) -> Run:
        p = subprocess.run([sys.executable, "-m", "pagerfs", *args], capture_output=True,
                           timeout=timeout, cwd=REPO)
        return Run(p.returncode, p.stdout, p.stderr)
    return run


def _write(path: Path | bytes, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def text_bytes(rng: random.Random, n: int) -> bytes:
    words = [b"pager", b"vmo", b"chunk", b"zircon", b"supply", b"fault", b"page", b"\n"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


def make_edge_tree(root: Path) -> None:
    """The edge cases of the issue: sizes around a page, zeros, links, odd names."""
    rng = random.Random(7)
    root.mkdir()
    _write(root / "empty", b"")
    _write(root / "exactly-4096", rng.randbytes(4096))
    _write(root / "exactly-4097", rng.randbytes(4097))
    with open(root / "zeros-64M", "wb") as f:
        f.truncate(64 << 20)
    _write(root / "random-700K", rng.randbytes(700 * 1024 + 123))
    _write(root / "text-300K", text_bytes(rng, 300 * 1024 + 5))
    _write(root / "same-as-text", (root / "text-300K").read_bytes())  # stored once
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "emptydir").mkdir()
    _write(root / "sub" / "small.txt", b"hello pager\n")
    _write(root / "sub" / "deeper" / "tiny", b"x")
    os.chmod(root / "sub" / "small.txt", 0o640)
    os.utime(root / "sub" / "small.txt", ns=(1, 1234567890123456789))
    os.symlink("small.txt", root / "sub" / "link-rel")
    os.symlink("/etc/passwd", root / "link-abs")
    os.symlink("does/not/exist", root / "link-dangling")
    os.symlink("sub", root / "link-to-dir")
    os.link(root / "sub" / "small.txt", root / "hardlink-a")
    os.link(root / "sub" / "small.txt", root / "sub" / "deeper" / "hardlink-b")
    for name in (b"caf\xe9", b"\xff\xfe-not-utf8", "snow☃".encode()):
        _write(os.path.join(bytes(root), name), b"name " + name)
    os.mkdir(os.path.join(bytes(root), b"dir-\xe9"))
    _write(os.path.join(bytes(root), b"dir-\xe9", b"inner"), rng.randbytes(5000))
    os.mkfifo(root / "a-fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "a-socket"))
    try:
        os.mknod(root / "a-device", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pass  # not root: the FIFO and the socket still cover skipping


def make_system_tree(root: Path, budget: int = 4 << 20) -> None:
    """A few MB of real files: some packages of the system's Python library."""
    picks = ["json", "email", "html", "http", "urllib", "xml", "argparse.py", "typing.py",
             "LICENSE.txt", "collections", "asyncio"]
    root.mkdir()
    used = 0
    for name in picks:
        src = PYTHON_LIB / name
        if not src.exists() or used > budget:
            continue
        if src.is_dir():
            shutil.copytree(src, root / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, root / name)
        used = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="session")
def edge_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("edge") / "tree"
    make_edge_tree(root)
    return root


@pytest.fixture(scope="session")
def system_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("system") / "tree"
    make_system_tree(root)
    return root


def source_files(root: Path) -> list[bytes]:
    """Relative paths (bytes) of the regular files under root."""
    broot = bytes(root)
    found = []
    for d, _, files in os.walk(broot):
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                found.append(os.path.relpath(p, broot))
    return sorted(found)


@pytest.fixture
def files_of():
    return source_files


def fsverity_digests(paths: list[bytes]) -> dict[bytes, bytes]:
    """What the real `fsverity digest` prints for each path."""
    out = subprocess.run([b"fsverity", b"digest", *paths], capture_output=True, check=True).stdout
    digests = {}
    for line in out.splitlines():
        algo_hex, path = line.split(b" ", 1)
        assert algo_hex.startswith(b"sha256:")
        digests[path] = bytes.fromhex(algo_hex[7:].decode())
    return digests


@pytest.fixture
def real_fsverity():
    if shutil.which("fsverity") is None:
        pytest.skip("the fsverity tool (Debian package fsverity) is not installed")
    return fsverity_digests


def reseal(image: Path, tables: dict[str, bytes]) -> None:
    """Replace (uncompressed) tables and store them again, every checksum recomputed, as
    a forger would."""
    raw = image.read_bytes()
    header = fmt.unpack_header(raw[: fmt.HEADER_SIZE])
    stored, entries = fmt.pack_tables({**tables_of(image), **tables}, header.data_end)
    new = dataclasses.replace(header, tables=entries, image_size=header.data_end + len(stored))
    image.write_bytes(fmt.pack_header(new) + raw[fmt.HEADER_SIZE : header.data_end] + stored)


def tables_of(image: Path) -> dict[str, bytes]:
    """The image's tables, uncompressed."""
    raw = image.read_bytes()
    header = fmt.unpack_header(raw[: fmt.HEADER_SIZE])
    return {n: fmt.unpack_table(raw[t.offset : t.offset + t.stored], t.length)
            for n, t in header.tables.items()}


@pytest.fixture
def forge():
    return reseal, tables_of
