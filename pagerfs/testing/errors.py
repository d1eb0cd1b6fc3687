"""The exceptions and warnings of pagerfs.testing: one clear message each."""

from __future__ import annotations


class PagerfsError(Exception):
    """Base of every error pagerfs.testing raises; str() is the whole story, one line."""


class RuleError(PagerfsError):
    """A fault rule that cannot be armed: malformed, or for a path that is not a regular
    file of the image, or for pages past the end of the file."""


class MountError(PagerfsError):
    """The image cannot be mounted (not an image, mount point in use), or the daemon
    died or hung."""


class FuseUnavailable(MountError):
    """This machine cannot mount FUSE; `.reason` says what is missing."""

    def __init__(self, reason: str):
        super().__init__(f"FUSE is not available: {reason}")
        self.reason = reason


class OpenFilesWarning(UserWarning):
    """Files were still open when a mount was closed: it was unmounted lazily."""
