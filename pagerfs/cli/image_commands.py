"""Offline image commands: mkimage, verify, corrupt, ls, cat.

Exit statuses: 0 ok; 1 damage found (verify finds damage, cat hits a damaged page);
2 bad usage or an image that cannot be used at all. `corrupt` exits 0 once it has
damaged the image as asked.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import stat as statmod
import sys
import time

import pagerfs.store as store  # its names load when first used: mkimage needs only the builder
from pagerfs.cli.common import EXIT_DAMAGE, EXIT_OK, CommandError, Progress, positive_int
from pagerfs.store.errors import BuildError, FormatError, IntegrityError, StoreError, show
from pagerfs.store.format import DEFAULT_CHUNK_SIZE


def _size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([kKmM]?)(i?[bB])?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 131072, 128K, 1M)")
    return int(m[1]) << {"": 0, "k": 10, "m": 20}[m[2].lower()]


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a page number: {text!r}")
    return value


def add_parsers(sub) -> None:
    p = sub.add_parser("mkimage", help="build an image from a directory tree")
    p.add_argument("source", metavar="SOURCE_DIR")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--chunk-size", type=_size, default=DEFAULT_CHUNK_SIZE,
                   help=f"bytes per chunk, a power of two >= 4K (default {DEFAULT_CHUNK_SIZE >> 10}K)")
    p.add_argument("--jobs", type=positive_int, default=os.cpu_count() or 1,
                   help="worker threads that read, hash and compress (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(run=run_mkimage)

    p = sub.add_parser("verify", help="check every checksum of an image (a scrub)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--jobs", type=positive_int, default=os.cpu_count() or 1)
    p.set_defaults(run=run_verify)

    p = sub.add_parser("corrupt", help="damage the stored chunk holding a page (fault injection)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--page", type=_natural, required=True, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_corrupt)

    p = sub.add_parser("ls", help="list a directory of an image, like ls -l")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("path", metavar="PATH", nargs="?", default="/")
    p.set_defaults(run=run_ls)

    p = sub.add_parser("cat", help="write a file of an image to stdout")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("path", metavar="PATH")
    p.set_defaults(run=run_cat)


def _open(path: str) -> store.Image:
    try:
        return store.Image.open(path)
    except FormatError as err:
        raise CommandError(str(err)) from None


def _resolve(img: store.Image, path: str) -> int:
    try:
        return img.resolve(path)
    except OSError as err:
        raise CommandError(f"{path}: {err.strerror}") from None


def _out():
    return sys.stdout.buffer


def run_mkimage(args) -> int:
    progress: Progress | None = None

    def start(nbytes: int, nfiles: int) -> None:
        nonlocal progress
        progress = Progress(nbytes, "mkimage", enabled=not args.quiet)

    def advance(nbytes: int, nfiles: int) -> None:
        progress.advance(nbytes, nfiles)

    def warn(message: str) -> None:
        print(f"pagerfs: warning: {message}", file=sys.stderr)

    def terminated(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminated)
    began = time.monotonic()
    try:
        result = store.build_image(args.source, args.image, chunk_size=args.chunk_size,
                             jobs=args.jobs, warn=warn, start=start, advance=advance)
    except BuildError as err:
        raise CommandError(str(err)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if progress is not None:
            progress.close()
    if not args.quiet:
        ratio = result.image_bytes / result.file_bytes if result.file_bytes else 0.0
        print(f"{args.image}: {result.files} files, {result.inodes} inodes, "
              f"{result.file_bytes / 2**20:,.1f} MiB of data in {result.image_bytes / 2**20:,.1f} MiB "
              f"({ratio:.1%}), {time.monotonic() - began:.1f} s")
    return EXIT_OK


def run_verify(args) -> int:
    progress: Progress | None = None

    def start(total: int) -> None:
        nonlocal progress
        progress = Progress(total, "verify", enabled=not args.json)

    with _open(args.image) as img:
        try:
            report = store.scrub(img, jobs=args.jobs, start=start, advance=lambda n: progress.advance(n))
        finally:
            if progress is not None:
                progress.close()
    if args.json:
        import json

        json.dump({
            "image": args.image,
            "status": "damaged" if report.damage else "clean",
            "chunks_checked": report.blocks_checked,
            "bytes_checked": report.bytes_checked,
            "damage": [{"path": show(d.path), "first_page": d.first_page,
                        "last_page": d.last_page, "error": d.code} for d in report.damage],
        }, sys.stdout)
        sys.stdout.write("\n")
    else:
        for d in report.damage:
            _out().write(d.line() + b"\n")
        if not report.damage:
            print(f"{args.image}: clean: {report.blocks_checked} chunks, "
                  f"{report.bytes_checked / 2**20:,.1f} MiB checked")
    sys.stdout.flush()
    if report.damage:
        print(f"pagerfs: {args.image}: {len(report.damage)} damaged page ranges", file=sys.stderr)
        return EXIT_DAMAGE
    return EXIT_OK


def run_corrupt(args) -> int:
    try:
        damage = store.corrupt(args.image, args.path, args.page, args.seed)
    except FormatError as err:
        raise CommandError(str(err)) from None
    except (OSError, ValueError) as err:
        raise CommandError(f"{args.path}: {getattr(err, 'strerror', None) or err}") from None
    for d in damage:
        _out().write(b"%s: pages %d-%d\n" % (d.path, d.first_page, d.last_page))
    return EXIT_OK


def _ls_line(img: store.Image, ino: int, name: bytes) -> bytes:
    st = img.stat(ino)
    try:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.mtime_ns // 10**9))
    except (OverflowError, OSError, ValueError):  # a time this platform cannot show
        when = "????-??-?? ??:??"
    line = b"%s %3d %5d %5d %10d %s %s" % (statmod.filemode(st.mode).encode(), st.nlink,
                                            st.uid, st.gid, st.size, when.encode(), name)
    if st.kind == store.Kind.SYMLINK:
        line += b" -> " + img.readlink(ino)
    return line + b"\n"


def run_ls(args) -> int:
    with _open(args.image) as img:
        ino = _resolve(img, args.path)
        if img.stat(ino).kind == store.Kind.DIR:
            lines = [_ls_line(img, child, name) for name, child in img.listdir(ino)]
        else:
            lines = [_ls_line(img, ino, os.fsencode(args.path))]
        _out().write(b"".join(lines))
    return EXIT_OK


def _cat_stops(out, path: bytes, page: int, code: str) -> int:
    out.flush()
    sys.stderr.flush()
    sys.stderr.buffer.write(b"pagerfs: %s: page %d: %s\n" % (path, page, code.encode()))
    sys.stderr.flush()
    return EXIT_DAMAGE


def run_cat(args) -> int:
    with _open(args.image) as img:
        ino = _resolve(img, args.path)
        kind = img.stat(ino).kind
        if kind != store.Kind.FILE:
            raise CommandError(f"{args.path}: is a {'directory' if kind == store.Kind.DIR else 'symbolic link'}")
        out = _out()
        for index in img.chunk_range(ino, 0, -(-img.stat(ino).size // 4096)):
            first, count = img.chunk_pages(ino, index)
            try:
                pages = img.read_chunk_pages(ino, index, first, count)
            except StoreError as err:  # nothing of the chunk is usable
                return _cat_stops(out, err.path, err.first_page, err.code)
            if pages.bad:
                # Like cat on a bad disk: every good byte before the first bad page.
                bad = min(pages.bad)
                out.write(pages.data[: (bad - first) * 4096])
                return _cat_stops(out, img.path_of(ino), bad, IntegrityError.code)
            out.write(pages.data)
        out.flush()
    return EXIT_OK
