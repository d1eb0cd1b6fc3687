"""`pagerfs mount -o faults=FILE`: fault rules read and checked before the mount exists.

Rules installed this way are armed before the FUSE session starts, so no read of the
mount can race them (as a `setfattr` after `mount` returned would). Every mistake is
refused before anything is mounted, with one line naming FILE:LINE.
"""

from __future__ import annotations

import stat as statmod

from pagerfs.fuse.core import PAGE, st_mode
from pagerfs.pager.faults import FaultRule, FaultRuleError, check_fits, parse_faults_file


class FaultsFileError(Exception):
    """A faults file that cannot be used, in one line: `FILE:LINE: reason`."""


def load(image, path: str) -> list[tuple[int, FaultRule]]:
    """[(inode, rule)] from the faults file at `path`, each checked against the image:
    the path must name a regular file in it, and the rule must fit that file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise FaultsFileError(f"{path}: cannot read faults: {reason}") from None
    try:
        entries = parse_faults_file(text)
    except FaultRuleError as err:
        raise FaultsFileError(f"{path}:{err}") from None
    rules = []
    for line, rel, rule in entries:
        where = f"{path}:{line}: {rel}"
        try:
            ino = image.resolve(rel)
        except (FileNotFoundError, NotADirectoryError):
            raise FaultsFileError(f"{where}: not in the image") from None
        mode = st_mode(image.stat(ino))
        if statmod.S_ISDIR(mode):
            raise FaultsFileError(f"{where}: a directory; rules apply to regular files")
        if statmod.S_ISLNK(mode):
            raise FaultsFileError(f"{where}: a symbolic link; name the file it points to")
        if not statmod.S_ISREG(mode):
            raise FaultsFileError(f"{where}: not a regular file")
        try:
            check_fits(rule, image.stat(ino).size, PAGE)
        except FaultRuleError as err:
            raise FaultsFileError(f"{where}: {err}") from None
        rules.append((ino, rule))
    return rules
