"""The bench's data sets, built deterministically and cached outside the repository.

Both file systems are built from one source directory holding
- `big.tar`: a tar of real system files (default /usr/lib), cut to an exact size, and
- `tree/`: a generated tree of many small files of varied sizes and compressibility,
so every image, mount and run sees the same bytes. "Deterministic" means: the same
parameters on the same machine give the same bytes (the tar depends on the machine's
installed files; the tree depends on nothing but the seed).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

# Bumped whenever the recipe changes, so a cache built by an older recipe is not reused.
RECIPE_VERSION = 1

FIXED_MTIME = 1_600_000_000  # any constant; makes tree metadata identical across builds
FILES_PER_DIR = 50
SUBDIRS_PER_DIR = 20
MAX_SIZE_LOG2 = 15  # tree file sizes are log-uniform in [0, 32 KiB)


@dataclass(frozen=True)
class DataSetSpec:
    big_bytes: int
    tree_files: int
    seed: int
    tar_roots: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"big{self.big_bytes // 2**20}M-tree{self.tree_files}-seed{self.seed}-v{RECIPE_VERSION}"


@dataclass(frozen=True)
class DataSet:
    spec: DataSetSpec
    src: Path  # the directory both images are built from
    big_rel: str  # path of the large file inside src
    tree_rel: str
    big_sha256: str
    tree_digest: str
    tree_entries: int  # files + directories under tree/, itself included

    @property
    def big_path(self) -> Path:
        return self.src / self.big_rel


# ---------------------------------------------------------------- the large file


def system_files(roots: tuple[str, ...]) -> list[tuple[str, str, int]]:
    """(root, path relative to root, size) of every non-empty regular file under the
    roots, in sorted order, not following symlinks nor crossing into other mounts."""
    found: list[tuple[str, str, int]] = []
    for root in roots:
        root_dev = os.lstat(root).st_dev
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == root_dev)
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                try:
                    st = os.lstat(full)
                except OSError:
                    continue
                if os.path.isfile(full) and not os.path.islink(full) and st.st_size > 0 and os.access(full, os.R_OK):
                    found.append((root, os.path.relpath(full, root), st.st_size))
    return found


def choose_files(files: list[tuple[str, str, int]], target: int) -> list[tuple[str, str, int]]:
    """A spread sample of the files worth about `target` bytes: a stride chosen by a hash
    of each path (so the pick is scattered over the whole tree, not just its first
    directory) and taken in sorted order until the target is met."""
    total = sum(size for _, _, size in files)
    stride = max(1, int(total // max(target * 1.25, 1)))
    picked: list[tuple[str, str, int]] = []
    got = 0
    for item in files:
        if zlib.crc32(item[1].encode("utf-8", "surrogateescape")) % stride == 0:
            picked.append(item)
            got += item[2]
            if got >= target:
                return picked
    return files  # the sample fell short: take everything (the tar is then repeated)


def tar_command(root: str, list_file: Path) -> list[str]:
    # Every knob that would make two tars of the same files differ is pinned.
    # tar's -C, --null and --no-recursion are positional: they must precede the list.
    return ["tar", "--create", "--file=-", "--format=gnu", "--sort=name", "--mtime=@0", "--owner=0",
            "--group=0", "--numeric-owner", "-C", root, "--no-recursion", "--null", f"--files-from={list_file}"]


def write_big_file(dest: Path, roots: tuple[str, ...], size: int, scratch: Path) -> str:
    """Writes exactly `size` bytes of tar of system files to dest; returns its SHA-256.
    When the files are fewer than `size` bytes, the tar stream is repeated."""
    chosen = choose_files(system_files(roots), size)
    if not chosen:
        raise RuntimeError(f"no readable files under {', '.join(roots)}")
    by_root: dict[str, list[str]] = {}
    for root, rel, _ in chosen:
        by_root.setdefault(root, []).append(rel)
    lists: list[tuple[str, Path]] = []
    for i, (root, rels) in enumerate(sorted(by_root.items())):
        lst = scratch / f"files-{i}.lst"
        lst.write_bytes(b"".join(r.encode("utf-8", "surrogateescape") + b"\0" for r in sorted(rels)))
        lists.append((root, lst))
    digest = hashlib.sha256()
    written = 0
    with open(dest, "wb") as out:
        while written < size:
            for root, lst in lists:
                errors = scratch / "tar.err"
                with open(errors, "wb") as err:  # a file, not a pipe: tar must never block on it
                    proc = subprocess.Popen(tar_command(root, lst), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=err)
                assert proc.stdout is not None
                while written < size:
                    block = proc.stdout.read(min(1 << 20, size - written))
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    written += len(block)
                proc.stdout.close()
                rc = proc.wait()
                stderr = errors.read_bytes()
                # tar killed by SIGPIPE because we stopped reading at `size` is expected.
                if rc not in (0, -13, 141) and written < size:
                    raise RuntimeError(f"tar failed ({rc}): {stderr.decode(errors='replace').strip()[:200]}")
                if written >= size:
                    break
    return digest.hexdigest()


# ---------------------------------------------------------------- the small-file tree


def tree_layout(nfiles: int) -> list[str]:
    """Relative paths of the tree's files: d000/s00/f00000.dat ..., sorted."""
    paths = []
    per_top = FILES_PER_DIR * SUBDIRS_PER_DIR
    for i in range(nfiles):
        top, rest = divmod(i, per_top)
        sub, _ = divmod(rest, FILES_PER_DIR)
        ext = ("txt", "dat", "bin", "log")[i % 4]
        paths.append(f"d{top:03d}/s{sub:02d}/f{i:05d}.{ext}")
    return paths


def text_corpus(rng: random.Random, size: int) -> bytes:
    """Compressible, text-like bytes: words from a small seeded vocabulary."""
    vocab = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(400)]
    parts: list[bytes] = []
    got = 0
    while got < size:
        line = b" ".join(rng.choice(vocab) for _ in range(rng.randint(4, 14))) + b"\n"
        parts.append(line)
        got += len(line)
    return b"".join(parts)[:size]


def tree_contents(nfiles: int, seed: int):
    """Yields (relative path, bytes) for each file, a pure function of (nfiles, seed):
    sizes log-uniform up to 32 KiB (many small, a few large), and per file either text
    (compresses well), random bytes (does not), or a mix."""
    rng = random.Random(seed)
    corpus = text_corpus(random.Random(seed + 1), 1 << 20)
    for rel in tree_layout(nfiles):
        size = int(2 ** rng.uniform(0, MAX_SIZE_LOG2)) - 1
        kind = rng.random()
        if kind < 0.5:
            start = rng.randrange(len(corpus) - size)
            data = corpus[start:start + size]
        elif kind < 0.8:
            data = rng.randbytes(size)
        else:
            half = size // 2
            start = rng.randrange(len(corpus) - half)
            data = corpus[start:start + half] + rng.randbytes(size - half)
        yield rel, data


def write_tree(dest: Path, nfiles: int, seed: int) -> tuple[str, int]:
    """Writes the tree under dest; returns (digest of paths and contents, entry count)."""
    digest = hashlib.sha256()
    dirs = {dest}
    for rel, data in tree_contents(nfiles, seed):
        path = dest / rel
        if path.parent not in dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            dirs.add(path.parent)
        path.write_bytes(data)
        os.chmod(path, 0o644)
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    # Directories last, deepest first, so creating children does not bump their mtimes.
    all_dirs = sorted({p for p in dest.rglob("*") if p.is_dir()} | {dest}, key=lambda p: -len(p.parts))
    for d in all_dirs:
        os.chmod(d, 0o755)
    for rel in tree_layout(nfiles):
        os.utime(dest / rel, (FIXED_MTIME, FIXED_MTIME))
    for d in all_dirs:
        os.utime(d, (FIXED_MTIME, FIXED_MTIME))
    return digest.hexdigest(), nfiles + len(all_dirs)


def tree_digest_of(root: Path) -> str:
    """The digest write_tree returns, recomputed from what is on disk (for tests and
    for checking a mount serves the tree it was built from)."""
    digest = hashlib.sha256()
    rels = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    for rel in rels:
        digest.update(rel.encode() + b"\0" + hashlib.sha256((root / rel).read_bytes()).digest())
    return digest.hexdigest()


# ---------------------------------------------------------------- the cache


def prepare(spec: DataSetSpec, cache: Path, log=print) -> DataSet:
    """The data set for spec, from the cache if a complete one is there, else built.
    A stamp written last marks a complete build; anything without it is rebuilt."""
    home = cache / spec.name
    stamp = home / "ready.json"
    if stamp.exists():
        meta = json.loads(stamp.read_text())
        if meta.get("spec") == _spec_json(spec):
            return DataSet(spec, home / "src", "big.tar", "tree", meta["big_sha256"], meta["tree_digest"],
                           meta["tree_entries"])
    log(f"building data set {spec.name} in {home} (once; cached for later runs)")
    if home.exists():
        shutil.rmtree(home)
    src = home / "src"
    scratch = home / "scratch"
    src.mkdir(parents=True)
    scratch.mkdir()
    big_sha = write_big_file(src / "big.tar", spec.tar_roots, spec.big_bytes, scratch)
    os.utime(src / "big.tar", (FIXED_MTIME, FIXED_MTIME))
    tree_dig, entries = write_tree(src / "tree", spec.tree_files, spec.seed)
    os.utime(src, (FIXED_MTIME, FIXED_MTIME))
    shutil.rmtree(scratch)
    meta = {"spec": _spec_json(spec), "big_sha256": big_sha, "tree_digest": tree_dig, "tree_entries": entries}
    stamp.write_text(json.dumps(meta, indent=1))
    return DataSet(spec, src, "big.tar", "tree", big_sha, tree_dig, entries)


def _spec_json(spec: DataSetSpec) -> dict:
    d = asdict(spec)
    d["tar_roots"] = list(spec.tar_roots)
    d["recipe"] = RECIPE_VERSION
    return d
