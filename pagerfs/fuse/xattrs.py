"""The control channel: extended attributes that ordinary tools can drive.

    setfattr -n user.pagerfs.fault -v 'pages=A-B error=E ...' FILE   add a fault rule
    setfattr -x user.pagerfs.fault FILE                              remove all rules
    setfattr -n user.pagerfs.unfault -v 'RULE' or 'id=N' FILE        remove one rule
    getfattr -n user.pagerfs.faults FILE                             the rules, one a line
    getfattr -n user.pagerfs.stats FILE-or-mount-root                JSON counters
                         (a file's include its rules: id, text, requests fired on)
    getfattr -n user.pagerfs.digest FILE                             sha256:<fs-verity hex>

They are not listed by listxattr: they describe the mount, not the files, and `cp -a`
or `tar --xattrs` should not copy them.
"""

from __future__ import annotations

import json
import os

from pagerfs.fuse.core import PAGE, FileSystem
from pagerfs.fuse.errors import NoAttribute, NotSupported, ReadOnly
from pagerfs.pager.faults import FaultRuleError, check_fits, format_rule, parse_rule

FAULT = b"user.pagerfs.fault"
UNFAULT = b"user.pagerfs.unfault"
FAULTS = b"user.pagerfs.faults"
STATS = b"user.pagerfs.stats"
DIGEST = b"user.pagerfs.digest"


def get(fs: FileSystem, ino: int, name: bytes) -> bytes:
    if name == STATS:
        return json.dumps(stats(fs, ino), sort_keys=True).encode() + b"\n"
    if name == FAULTS:
        _regular(fs, ino)
        return "".join(format_rule(r) + "\n" for r in fs.pager.faults(ino)).encode()
    if name == DIGEST:
        _regular(fs, ino)
        return b"sha256:" + fs.image.fsverity_digest(ino).hex().encode()
    raise NoAttribute(name)


def set(fs: FileSystem, ino: int, name: bytes, value: bytes) -> bool:
    """Apply one setxattr; True when the file's cached pages must be invalidated."""
    if name == UNFAULT:
        return _unfault(fs, ino, value)
    if name != FAULT:
        raise ReadOnly()
    _regular(fs, ino)
    rule = parse_rule(value)
    check_fits(rule, fs.image.stat(ino).size, PAGE)
    fs.pager.add_fault(ino, rule)
    return True


def _unfault(fs: FileSystem, ino: int, value: bytes) -> bool:
    """Remove one rule: `id=N` (as the file's stats list it), or a rule's text (the
    newest rule with that text)."""
    _regular(fs, ino)
    states = fs.pager.fault_states(ino)
    text = value.decode("ascii", errors="replace").strip()
    if text.startswith("id="):
        if not text[3:].isdigit():
            raise FaultRuleError(f"{text!r}: expected id=N")
        wanted = [s for s in states if s.id == int(text[3:])]
    else:
        rule = parse_rule(text)
        wanted = [s for s in states if s.rule == rule]
    if not wanted:
        raise NoAttribute(UNFAULT)
    return fs.pager.remove_fault(ino, wanted[-1].id)


def remove(fs: FileSystem, ino: int, name: bytes) -> bool:
    if name != FAULT:
        raise ReadOnly()
    _regular(fs, ino)
    if not fs.pager.faults(ino):
        raise NoAttribute(name)
    fs.pager.clear_faults(ino)
    return True


def stats(fs: FileSystem, ino: int) -> dict:
    """One file's counters, or on the mount root the totals and the pager's state."""
    if ino == fs.image.root:
        out = fs.pager.stats.snapshot()
        out.update(committed_pages=fs.pager.committed_pages(),
                   budget_pages=(fs.pager.budget or 0) // PAGE,
                   open_files=fs.pager.open_files(), open_handles=fs.open_handles(),
                   pid=os.getpid())
        out["failing_files"] = {os.fsdecode(fs.image.path_of(i)): by
                                for i, by in fs.pager.stats.failing().items()}
        return out
    _regular(fs, ino)
    out = fs.pager.stats.snapshot(ino)
    states = fs.pager.fault_states(ino)
    out.update(committed_pages=fs.pager.committed_pages(ino), fault_rules=len(states),
               rules=[{"id": s.id, "rule": format_rule(s.rule), "fired": s.fired}
                      for s in states])
    return out


def _regular(fs: FileSystem, ino: int) -> None:
    if not fs.is_regular(ino):
        raise NotSupported()
