"""pagerfs from a test suite: build images, mount them, break pages, assert.

    from pagerfs import testing

    image = testing.build({"data.json": '{"a": 1}'})
    with testing.mount(image, faults=[("data.json", "pages=0 error=IO")]) as m:
        with pytest.raises(OSError):
            json.load(open(m / "data.json"))
        assert m.fired("data.json")

The pytest plugin (pagerfs.testing.plugin, registered as a pytest11 entry point) gives
the same as the fixtures `pagerfs` and `pagerfs_image`. See the README, "Testing your
program with pagerfs".
"""

from pagerfs.testing.errors import (FuseUnavailable, MountError, OpenFilesWarning,
                                    PagerfsError, RuleError)
from pagerfs.testing.images import Image, build
from pagerfs.testing.mounts import FaultHandle, Mount, fuse_missing_reason, mount
from pagerfs.testing.rules import Rule

__all__ = [
    "FaultHandle", "FuseUnavailable", "Image", "Mount", "MountError", "OpenFilesWarning",
    "PagerfsError", "Rule", "RuleError", "build", "fuse_missing_reason", "mount",
]
