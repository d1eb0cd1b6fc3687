"""testing.build: images of test trees, built once and shared by content."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from pagerfs import __version__
from pagerfs.testing.errors import PagerfsError

# Trees written from a mapping get this mtime, so that one mapping always gives the
# same image, whenever it is built.
_FIXED_MTIME_NS = 946_684_800 * 10**9  # 2000-01-01


@dataclasses.dataclass(frozen=True)
class Image:
    """A built image: `.path` of the image file, `.source` the tree it was built from
    (None when it was built from a mapping)."""

    path: Path
    source: Path | None = None

    def __fspath__(self) -> str:
        return str(self.path)


def default_cache_dir() -> Path:
    return Path(os.environ.get("PAGERFS_CACHE") or Path.home() / ".cache" / "pagerfs" / "images")


def _write_tree(files: dict, root: Path) -> None:
    for rel, data in files.items():
        parts = Path(rel).parts
        if not parts or Path(rel).is_absolute() or ".." in parts:
            raise PagerfsError(f"{rel!r}: expected a relative path inside the tree")
        if not isinstance(data, (bytes, bytearray, memoryview, str)):
            raise PagerfsError(f"{rel!r}: expected bytes or str, not {type(data).__name__}")
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else bytes(data))
    for path in [*root.rglob("*"), root]:
        os.utime(path, ns=(_FIXED_MTIME_NS, _FIXED_MTIME_NS), follow_symlinks=False)


def tree_digest(root: Path, chunk_size: int | None) -> str:
    """A hash of what an image of the tree holds: paths, types, modes, file bytes and
    link targets, with the chunk size, pagerfs's version and its image format's (an
    image of an older format would be refused). Times and owners are not part of it
    (an image found in the cache has those of the tree it was built from)."""
    from pagerfs.store.format import VERSION

    h = hashlib.sha256(f"pagerfs {__version__} format {VERSION} chunk {chunk_size}\0".encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            h.update(os.fsencode(os.path.relpath(path, root)) + b"\0")
            h.update(f"{st.st_mode:o}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.fsencode(os.readlink(path)) + b"\0")
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()[:32]


def build(src, *, chunk_size: int | None = None, cache_dir=None) -> Image:
    """An image of `src`: a directory, or a {relative path: bytes or str} mapping
    (written to a temporary tree). Images are cached by content under `cache_dir`
    (default $PAGERFS_CACHE or ~/.cache/pagerfs/images), so tests that build the same
    tree share one build. Raises PagerfsError with one line if it cannot be built."""
    from pagerfs.store import DEFAULT_CHUNK_SIZE, BuildError, build_image

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    what = "a mapping" if isinstance(src, dict) else src
    temp = None
    try:
        if isinstance(src, dict):
            temp = Path(tempfile.mkdtemp(prefix="pagerfs-tree-"))
            _write_tree(src, temp)
            root, source = temp, None
        else:
            root = source = Path(src).resolve()
            if not root.is_dir():
                raise PagerfsError(f"{src}: not a directory")
        image = cache / f"{tree_digest(root, chunk_size)}.img"
        if not image.exists():
            cache.mkdir(parents=True, exist_ok=True)
            # Built beside its final name and renamed there (build_image is atomic),
            # so concurrent test processes building one tree never see half an image.
            build_image(str(root), str(image), chunk_size=chunk_size or DEFAULT_CHUNK_SIZE)
        return Image(image, source)
    except BuildError as err:
        raise PagerfsError(f"cannot build an image of {what}: {err}") from None
    except OSError as err:
        raise PagerfsError(f"cannot build an image of {what}: "
                           f"{err.filename + ': ' if err.filename else ''}{err.strerror}") from None
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
