"""`pagerfs mount`, `umount`, `stats` and `fault`: the commands of a live mount.

Exit statuses: 0 ok; 2 bad usage, or an image, mountpoint or dependency that cannot be
used (one `pagerfs: ...` line on stderr).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re

from pagerfs.cli import unmount
from pagerfs.cli.common import (EXIT_OK, EXIT_UNUSABLE, FAULT, FAULTS, STATS, UNFAULT,
                                CommandError)

MOUNT_HELP = """\
Mount options (-o, comma separated, may repeat):
  allow_other          let users other than the mounter read the mount
  page_budget=SIZE     most memory the committed pages of all open files may use
                       (default 256M, at least 16M); clean pages past it are evicted
                       and asked for again from the pager when next needed
  pager_threads=N      user pager threads serving page requests (default 4)
  read_ahead=SIZE      how far ahead the pager supplies a sequentially read file
                       (default 2M, 0 turns it off, at most 64M)
  read_ahead_kb=N      the kernel's read-ahead window on this mount, set as root
                       (default 1024; 0 turns it off: each READ is one page)
  faults=FILE          fault rules armed before the mount answers its first request:
                       one 'PATH: RULE' a line (PATH from the image's root, RULE as
                       for 'pagerfs fault add'), '#' comments, blank lines. A path not
                       in the image, a directory, a symlink, pages past the end of the
                       file or a bad rule refuses the mount: 'pagerfs: FILE:LINE: ...'
  default_permissions, noatime, nodev, nosuid   passed to FUSE
"""


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "mount", help="mount an image (read-only) and serve it in the background",
        description="Mount IMAGE on MOUNTPOINT. Returns once the mount is ready; the "
                    "daemon stays in the background (unless -f).",
        epilog=MOUNT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image")
    p.add_argument("mountpoint")
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                   help="mount options, see below")
    p.add_argument("--trace", metavar="FILE",
                   help="append one JSON line per READ, page request, supply and FAIL to FILE")
    p.add_argument("--log", metavar="FILE",
                   help="write the daemon's log to FILE (default: stderr with -f, else syslog)")
    p.add_argument("--debug", action="store_true", help="log at debug level")
    p.set_defaults(run=run_mount)

    p = sub.add_parser("umount", help="unmount a pagerfs mount (also one whose daemon died)",
                       description="Unmount MOUNTPOINT and wait for its daemon to exit. A mount "
                                   "busy only with files just closed (the kernel sends their "
                                   "RELEASE after close() returned) is retried for up to "
                                   f"{unmount.RELEASE_WAIT:g} s; a mount that stays busy is "
                                   "refused, naming what holds it.")
    p.add_argument("mountpoint")
    p.add_argument("-l", "--lazy", action="store_true",
                   help="detach now even if files are open (they keep working until closed)")
    p.set_defaults(run=run_umount)

    p = sub.add_parser("stats", help="print the pager's counters of a mount or one file")
    p.add_argument("path", help="the mount point (totals) or a file in the mount")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.set_defaults(run=run_stats)

    p = sub.add_parser("fault", help="add, list, remove or clear fault rules of a file in a mount",
                       description="Fault rules, as with setfattr/getfattr on "
                                   "user.pagerfs.fault(s). RULE is "
                                   "'pages=A-B error=E [count=N] [probability=P seed=S] "
                                   "[delay_ms=D]', E one of IO, IO_DATA_INTEGRITY, "
                                   "BAD_STATE, corrupt, none.")
    fsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = fsub.add_parser("add", help="add a rule")
    a.add_argument("file")
    a.add_argument("rule", nargs="+", help="the rule, as one or several words")
    a.set_defaults(run=run_fault_add)
    a = fsub.add_parser("list", help="list the file's rules")
    a.add_argument("file")
    a.add_argument("--fired", action="store_true",
                   help="with each rule its id and how many requests it acted on")
    a.set_defaults(run=run_fault_list)
    a = fsub.add_parser("remove", help="remove one rule: the newest with this text, or id=N")
    a.add_argument("file")
    a.add_argument("rule", nargs="+", help="the rule's text, or id=N as 'list --fired' shows")
    a.set_defaults(run=run_fault_remove)
    a = fsub.add_parser("clear", help="remove all the file's rules")
    a.add_argument("file")
    a.set_defaults(run=run_fault_clear)


# -- mount ----------------------------------------------------------------------------

def run_mount(args) -> int:
    from pagerfs.fuse import daemon, faults_file

    image = os.path.realpath(args.image)
    mountpoint = os.path.realpath(args.mountpoint)
    for path in (args.trace, args.log):
        if path:
            try:
                open(path, "a").close()
            except OSError as err:
                raise CommandError(f"{path}: cannot write: {err.strerror}") from None
    from pagerfs.store import FormatError, Image

    try:
        options = daemon.parse_options(args.options)
        daemon.preflight(mountpoint)
    except daemon.MountError as err:
        raise CommandError(str(err), EXIT_UNUSABLE) from None
    try:
        img = Image.open(image)
    except FormatError as err:
        raise CommandError(f"{args.image}: not a usable image: {err}") from None
    except OSError as err:
        raise CommandError(f"{args.image}: {err.strerror}") from None
    try:
        faults = faults_file.load(img, options.faults) if options.faults else []
    except faults_file.FaultsFileError as err:
        img.close()
        raise CommandError(str(err), EXIT_UNUSABLE) from None
    try:
        if args.foreground:
            return daemon.foreground(img, image, mountpoint, options, args.trace, args.log,
                                     args.debug, faults)
        daemon.daemonize(img, image, mountpoint, options,
                         args.trace and os.path.abspath(args.trace),
                         args.log and os.path.abspath(args.log), args.debug, faults)
    except daemon.MountError as err:
        raise CommandError(str(err), EXIT_UNUSABLE) from None
    return EXIT_OK


# -- umount ---------------------------------------------------------------------------

def run_umount(args) -> int:
    unmount.unmount(args.mountpoint, lazy=args.lazy)
    return EXIT_OK


# -- stats and faults -----------------------------------------------------------------

def _xattr_error(path: str, err: OSError, what: str) -> CommandError:
    if err.errno in (errno.ENOTSUP, errno.ENODATA) and what == "stats":
        return CommandError(f"{path}: not a pagerfs mount or file")
    if err.errno == errno.ENOTSUP:
        return CommandError(f"{path}: not a regular file in a pagerfs mount")
    if err.errno == errno.ENOTCONN:
        return CommandError(f"{path}: the mount's daemon is gone (pagerfs umount it)")
    if err.errno == errno.EINVAL:
        return CommandError(f"{path}: rule refused (pages beyond the end of the file?)")
    return CommandError(f"{path}: {err.strerror}")


def _fmt_count(key: str, value) -> str:
    if key == "pid" or not isinstance(value, int):
        return str(value)
    if key in ("committed_pages", "budget_pages"):
        return f"{value:,} ({value * 4096 / 2**20:,.1f} MiB)"
    if key == "bytes_read_from_image":
        return f"{value:,} ({value / 2**20:,.1f} MiB)"
    return f"{value:,}"


def run_stats(args) -> int:
    try:
        raw = os.getxattr(args.path, STATS)
    except OSError as err:
        raise _xattr_error(args.path, err, "stats") from None
    stats = json.loads(raw)
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return EXIT_OK
    failed = stats.pop("pages_failed", {})
    failing = stats.pop("failing_files", {})
    rows = [(key, _fmt_count(key, value)) for key, value in sorted(stats.items())]
    rows += [(f"pages_failed[{status}]", _fmt_count("", n)) for status, n in sorted(failed.items())]
    if not failed:
        rows.append(("pages_failed", "0"))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if failing:
        print("files with failed pages:")
        for path, by in failing.items():
            print(f"  {path}: " + ", ".join(f"{n} {status}" for status, n in sorted(by.items())))
    return EXIT_OK


def _pagerfs_file(path: str) -> None:
    """Refuse a path outside a pagerfs mount: setfattr there would just store a
    harmless-looking attribute and inject nothing."""
    try:
        os.getxattr(path, STATS)
    except OSError as err:
        if err.errno in (errno.ENODATA, errno.ENOTSUP):
            raise CommandError(f"{path}: not a regular file in a pagerfs mount") from None
        raise _xattr_error(path, err, "fault") from None


def run_fault_add(args) -> int:
    from pagerfs.pager.faults import FaultRuleError, format_rule, parse_rule

    text = " ".join(args.rule)
    try:
        rule = parse_rule(text)
    except FaultRuleError as err:
        raise CommandError(f"bad rule: {err}") from None
    _pagerfs_file(args.file)
    try:
        os.setxattr(args.file, FAULT, format_rule(rule).encode())
    except OSError as err:
        raise _xattr_error(args.file, err, "fault") from None
    return EXIT_OK


def run_fault_list(args) -> int:
    _pagerfs_file(args.file)
    try:
        if args.fired:
            for state in json.loads(os.getxattr(args.file, STATS)).get("rules", []):
                print(f"id={state['id']} fired={state['fired']} {state['rule']}")
        else:
            print(os.getxattr(args.file, FAULTS).decode(), end="")
    except OSError as err:
        raise _xattr_error(args.file, err, "fault") from None
    return EXIT_OK


def run_fault_remove(args) -> int:
    from pagerfs.pager.faults import FaultRuleError, format_rule, parse_rule

    text = " ".join(args.rule)
    if not re.fullmatch(r"id=\d+", text):
        try:
            text = format_rule(parse_rule(text))
        except FaultRuleError as err:
            raise CommandError(f"bad rule: {err}") from None
    _pagerfs_file(args.file)
    try:
        os.setxattr(args.file, UNFAULT, text.encode())
    except OSError as err:
        if err.errno == errno.ENODATA:
            raise CommandError(f"{args.file}: no rule {text!r}") from None
        raise _xattr_error(args.file, err, "fault") from None
    return EXIT_OK


def run_fault_clear(args) -> int:
    _pagerfs_file(args.file)
    try:
        os.removexattr(args.file, FAULT)
    except OSError as err:
        if err.errno != errno.ENODATA:  # no rules: already clear
            raise _xattr_error(args.file, err, "fault") from None
    return EXIT_OK
