"""The pytest plugin (entry point pytest11 "pagerfs"): fixtures `pagerfs` and
`pagerfs_image`.

    def test_reader_reports_eio(pagerfs, pagerfs_image):
        image = pagerfs_image({"data.bin": bytes(100_000)})
        m = pagerfs.mount(image, faults=[("data.bin", "pages=2 error=IO")])
        with pytest.raises(OSError):
            (m / "data.bin").read_bytes()
        assert m.fired("data.bin")

A test using `pagerfs` is skipped, with the reason, where FUSE is missing, unless
PAGERFS_REQUIRE_FUSE=1 (then it fails). Mounts are closed at teardown; a daemon that
died during the test is reported there as an error, and the next test mounts afresh.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from pagerfs import testing


def no_fuse(reason: str) -> None:
    """Skip the running test because FUSE cannot work here, or fail it where
    PAGERFS_REQUIRE_FUSE=1 says FUSE must."""
    if os.environ.get("PAGERFS_REQUIRE_FUSE") == "1":
        pytest.fail(f"PAGERFS_REQUIRE_FUSE=1 but {reason}", pytrace=False)
    pytest.skip(reason)


class MountManager:
    """The `pagerfs` fixture: mounts made through it are closed at teardown."""

    def __init__(self) -> None:
        self.mounts: list[testing.Mount] = []

    def mount(self, image, mountpoint=None, **options) -> testing.Mount:
        """testing.mount(...), closed at the end of the test."""
        try:
            m = testing.mount(image, mountpoint, **options)
        except testing.FuseUnavailable as err:
            no_fuse(err.reason)
        self.mounts.append(m)
        return m

    def close(self) -> list[str]:
        """Close every mount, newest first; the problems found, one line each."""
        problems = []
        while self.mounts:
            try:
                self.mounts.pop().close()
            except testing.PagerfsError as err:
                problems.append(str(err))
        return problems


@pytest.fixture
def pagerfs():
    """Mount pagerfs images for one test: `pagerfs.mount(image, ...)` takes the
    arguments of pagerfs.testing.mount and returns a testing.Mount."""
    reason = testing.fuse_missing_reason()
    if reason:
        no_fuse(reason)
    manager = MountManager()
    yield manager
    problems = manager.close()
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def pagerfs_image():
    """`pagerfs_image(tree_or_mapping, chunk_size=None)`: testing.build, each
    mapping built once per session (and images shared by content across sessions)."""
    built: dict[tuple, testing.Image] = {}

    def image(src, *, chunk_size=None, cache_dir=None) -> testing.Image:
        if not isinstance(src, dict):
            return testing.build(src, chunk_size=chunk_size, cache_dir=cache_dir)
        h = hashlib.sha256()
        for rel, data in sorted(src.items()):
            data = data.encode() if isinstance(data, str) else data
            h.update(repr((rel, len(data))).encode() + bytes(data))
        key = (h.hexdigest(), chunk_size, cache_dir)
        if key not in built:
            built[key] = testing.build(src, chunk_size=chunk_size, cache_dir=cache_dir)
        return built[key]

    return image
