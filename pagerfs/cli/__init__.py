"""The `pagerfs` command: one argparse front end, subcommands defined beside it.

Exit statuses (all subcommands): 0 success (`corrupt` included: it damaged what was
asked); 1 damage found (verify, cat); 2 bad usage, or an image, mountpoint or dependency that cannot be used.
Every failure is one line on stderr, `pagerfs: ...`, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from pagerfs import __version__
from pagerfs.cli import sweep_command
from pagerfs.cli.common import CommandError, EXIT_UNUSABLE, fail


class OneLineParser(argparse.ArgumentParser):
    """Bad usage is one line too, `pagerfs: ...`, and exit status 2, as every other
    failure (argparse would print the whole usage first)."""

    def error(self, message: str):
        name = self.prog.removeprefix("pagerfs").strip()
        where = f"{name}: " if name else ""
        self.exit(EXIT_UNUSABLE, f"pagerfs: {where}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    # Imported here, so that a store whose native codec is not built is one line from
    # main(), not a traceback at import.
    from pagerfs.cli import image_commands, mount_commands

    parser = OneLineParser(
        prog="pagerfs",
        description="A FUSE filesystem whose files are simulated Zircon pager-backed VMOs.",
    )
    parser.add_argument("--version", action="version", version=f"pagerfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    image_commands.add_parsers(sub)
    mount_commands.add_parsers(sub)
    sweep_command.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ImportError as err:
        return fail(str(err), EXIT_UNUSABLE)
    argv, command = sweep_command.split_command(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(argv)
    if command is not None:
        args.command = command
    try:
        return args.run(args)
    except CommandError as err:
        return fail(str(err), err.exit_status)
    except ImportError as err:  # a native module not built, imported by a command
        return fail(str(err), EXIT_UNUSABLE)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except BrokenPipeError:
        # `pagerfs cat ... | head` is normal use, not an error worth a line.
        sys.stderr.close()
        return 0
    except OSError as err:
        return fail(f"{err.filename or ''}{': ' if err.filename else ''}{err.strerror or err}", EXIT_UNUSABLE)
