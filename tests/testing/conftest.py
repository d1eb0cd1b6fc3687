"""Fixtures for the tests of pagerfs.testing itself."""

import os

import pytest

from pagerfs import testing


@pytest.fixture
def fuse():
    """Skip where FUSE cannot work; fail instead under PAGERFS_REQUIRE_FUSE=1."""
    reason = testing.fuse_missing_reason()
    if reason and os.environ.get("PAGERFS_REQUIRE_FUSE") == "1":
        pytest.fail(f"PAGERFS_REQUIRE_FUSE=1 but {reason}")
    if reason:
        pytest.skip(reason)
