"""The tree workloads (issue 9): what most users mount is a tree of many files, not one
big file. Two data sets, both built once and cached beside the others:

- the *system tree*: a copy (hard links where the file system allows, else a copy) of
  real directories every Debian machine has (by default /usr/share, /usr/include and
  the Python library /usr/lib/python3*), over 50,000 files of every kind and size;
- the *tiny tree*: generated, N tiny files (1 B to 1 KiB, text-like, seeded) in one
  directory, for `ls -l` of a wide directory, `find | xargs cat` of every file, and
  the image size of tails alone.

The timed probes run the real Unix tools in the mount and time the whole command; each
checks what the tool saw (bytes, lines, exit status), so a fast wrong answer fails.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

RECIPE_VERSION = 3
FIXED_MTIME = 1_600_000_000
TINY_MAX_LOG2 = 10  # tiny file sizes are log-uniform in [1, 1 KiB)
# A string no file of the tree holds, so grep reads every byte of every file (a match
# would let it stop early on a binary file) and exits 1.
NO_MATCH = "pagerfs-bench: no such string, 7f3c9a21"
C_LOCALE = {**os.environ, "LC_ALL": "C"}  # the same grep and sort rules on every machine


class TreeError(Exception):
    """A tree workload saw something other than the tree (wrong bytes, a tool failed)."""


def default_roots(quick: bool) -> tuple[str, ...]:
    """The system directories the tree is copied from: all of them on a fresh Debian 12
    with tools/setup's packages. --quick takes only the Python library."""
    pythons = sorted(p for p in glob.glob("/usr/lib/python3*") if os.path.isdir(p))
    if quick:
        return tuple(pythons[:1])
    return ("/usr/share", "/usr/include", *pythons)


@dataclass(frozen=True)
class Tree:
    """A cached source tree: `src` is what both images are built from."""

    name: str
    src: Path
    files: int
    bytes: int
    entries: int  # files, directories and symlinks under src, src itself included
    wide_dir: str = ""  # tiny tree: the directory of many entries listed by `ls -l`
    wide_entries: int = 0

    @property
    def home(self) -> Path:
        return self.src.parent


def _count(src: Path) -> tuple[int, int, int]:
    files = size = entries = 0
    for dirpath, dirnames, filenames in os.walk(src):
        entries += 1 + sum(1 for d in dirnames if os.path.islink(os.path.join(dirpath, d)))
        for name in filenames:
            entries += 1
            st = os.lstat(os.path.join(dirpath, name))
            if not os.path.islink(os.path.join(dirpath, name)):
                files += 1
                size += st.st_size
    return files, size, entries


def _cached(home: Path, spec: dict) -> dict | None:
    stamp = home / "ready.json"
    if stamp.exists():
        meta = json.loads(stamp.read_text())
        if meta.get("spec") == spec:
            return meta
    return None


def _fresh(home: Path) -> Path:
    if home.exists():
        shutil.rmtree(home)
    src = home / "src"
    src.mkdir(parents=True)
    return src


def system_tree(cache: Path, roots: tuple[str, ...], log=print) -> Tree:
    """The system tree for `roots`, copied once: each root becomes src/<path with _>.
    Only regular files, directories and symlinks are kept (both builders skip the rest
    anyway, one with a warning, one without), and unreadable files are left out."""
    spec = {"roots": list(roots), "recipe": RECIPE_VERSION}
    name = "systree-" + hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:10]
    home = cache / name
    meta = _cached(home, spec)
    if meta is None:
        log(f"copying the system tree {', '.join(roots)} to {home} (once; cached for later runs)")
        src = _fresh(home)
        for root in roots:
            dest = src / root.strip("/").replace("/", "_")
            # Hard links cost no data copy (the files are the same inodes); across file
            # systems, a real copy.
            proc = subprocess.run(["cp", "-a", "-l", root, str(dest)], capture_output=True)
            if proc.returncode != 0:
                shutil.rmtree(dest, ignore_errors=True)
                proc = subprocess.run(["cp", "-a", root, str(dest)], capture_output=True)
            if proc.returncode != 0 and not dest.exists():
                raise TreeError(f"cannot copy {root}: {proc.stderr.decode(errors='replace').strip()[:200]}")
        _prune(src)
        files, size, entries = _count(src)
        meta = {"spec": spec, "files": files, "bytes": size, "entries": entries}
        (home / "ready.json").write_text(json.dumps(meta, indent=1))
    return Tree(name, home / "src", meta["files"], meta["bytes"], meta["entries"])


def _prune(src: Path) -> None:
    """Removes what the tools would trip over differently: special files, and files or
    directories this process cannot read (tar and grep would report them)."""
    for dirpath, dirnames, filenames in os.walk(src):
        for d in list(dirnames):
            p = os.path.join(dirpath, d)
            if not os.path.islink(p) and not os.access(p, os.R_OK | os.X_OK):
                shutil.rmtree(p, ignore_errors=True)
                dirnames.remove(d)
        for f in filenames:
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            kind = st.st_mode & 0o170000
            if kind not in (0o100000, 0o120000) or (kind == 0o100000 and not os.access(p, os.R_OK)):
                os.unlink(p)


def tiny_sizes(nfiles: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [int(2 ** rng.uniform(0, TINY_MAX_LOG2)) for _ in range(nfiles)]


def tiny_tree(cache: Path, nfiles: int, seed: int, log=print) -> Tree:
    """nfiles tiny files in src/a; a pure function of (nfiles, seed)."""
    spec = {"files": nfiles, "seed": seed, "recipe": RECIPE_VERSION}
    name = f"tiny{nfiles}-seed{seed}-v{RECIPE_VERSION}"
    home = cache / name
    meta = _cached(home, spec)
    if meta is None:
        log(f"writing {nfiles} tiny files to {home} (once; cached for later runs)")
        src = _fresh(home)
        rng = random.Random(seed + 1)
        words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
                 for _ in range(300)]
        (src / "a").mkdir()
        for i, size in enumerate(tiny_sizes(nfiles, seed)):
            text = b""
            while len(text) < size:
                text += rng.choice(words) + b" "
            text = text[:size]
            path = src / "a" / f"f{i:06d}.txt"
            path.write_bytes(text)
            os.utime(path, (FIXED_MTIME, FIXED_MTIME))
        for d in (src / "a", src):
            os.utime(d, (FIXED_MTIME, FIXED_MTIME))
        meta = {"spec": spec, "files": nfiles, "bytes": sum(tiny_sizes(nfiles, seed)), "entries": nfiles + 2,
                "wide_entries": nfiles}
        (home / "ready.json").write_text(json.dumps(meta, indent=1))
    return Tree(name, home / "src", meta["files"], meta["bytes"], meta["entries"], "a", meta["wide_entries"])


def warm(tree: Tree) -> None:
    """Reads every regular file once (symlinks are not followed: some dangle), so that
    both builders start from the same warm page cache and time the builder, not the disk."""
    buf = bytearray(1 << 20)
    for dirpath, _, filenames in os.walk(tree.src):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            with open(path, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


# ---------------------------------------------------------------- the timed probes


def _drain(cmd: list[str], cwd: Path, digest: bool = False) -> tuple[int, float, int, str]:
    """Runs cmd in cwd reading its stdout to the end; (bytes, seconds, exit status,
    SHA-256 of the output if asked). Output goes to a pipe, never /dev/null: GNU tar
    skips reading the files when its archive is /dev/null."""
    h = hashlib.sha256() if digest else None
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    total = 0
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=C_LOCALE)
    assert proc.stdout is not None
    while n := proc.stdout.readinto(view):
        total += n
        if h is not None:
            h.update(view[:n])
    err = proc.stderr.read() if proc.stderr else b""
    rc = proc.wait()
    secs = time.perf_counter() - start
    if err.strip() and rc not in (0, 1):
        raise TreeError(f"{' '.join(cmd)}: {err.decode(errors='replace').strip().splitlines()[-1][:200]}")
    return total, secs, rc, h.hexdigest() if h else ""


TAR = ["tar", "cf", "-", "."]


def tar_tree(root: Path, digest: bool = False) -> tuple[int, float, str]:
    """`tar cf - .` in root; (bytes of the archive, seconds, its SHA-256 if asked)."""
    n, secs, rc, dig = _drain(TAR, root, digest)
    if rc != 0:
        raise TreeError(f"tar exited with status {rc} in {root}")
    return n, secs, dig


def grep_tree(root: Path) -> float:
    """`grep -r` of a string that is nowhere, so every byte is read; seconds."""
    _, secs, rc, _ = _drain(["grep", "-r", "-F", NO_MATCH, "."], root)
    if rc != 1:
        raise TreeError(f"grep -r exited with status {rc} in {root} (1 means: read all, found nothing)")
    return secs


def ls_long(directory: Path) -> tuple[int, float]:
    """`ls -l` of one directory: lists it and lstat()s every entry; (lines, seconds)."""
    start = time.perf_counter()
    proc = subprocess.run(["ls", "-l", "."], cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=C_LOCALE)
    secs = time.perf_counter() - start
    if proc.returncode != 0:
        raise TreeError(f"ls -l {directory}: {proc.stderr.decode(errors='replace').strip()[:200]}")
    return proc.stdout.count(b"\n"), secs


def cat_all(root: Path) -> tuple[int, float]:
    """`find . -type f -print0 | xargs -0 cat`: opens and reads every file; (bytes, seconds)."""
    n, secs, rc, _ = _drain(["sh", "-c", "find . -type f -print0 | xargs -0 cat"], root)
    if rc != 0:
        raise TreeError(f"find | xargs cat exited with status {rc} in {root}")
    return n, secs
