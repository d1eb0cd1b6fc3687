"""The native block codec (pagerfs/store/_codec.c) against its Python oracle
(pagerfs/store/_codec_py.py): the same answer on good blocks and on damaged ones.

"The same answer" is: the same exception type name and message, or the same bad pages
and the same bytes. When a damaged block still decodes, lz4 may have copied bytes from
where nothing was written yet (an offset-0 match), which differ between two decoders;
such pages never pass their hashes, so there the comparison is of the pages reported
good (every byte) and of the bad page list.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pagerfs.store import _codec, _codec_py

PAGE = 4096
CODECS = (_codec, _codec_py)


def outcome(codec, fn: str, *args, **kw):
    try:
        result = getattr(codec, fn)(*args, **kw)
    except Exception as err:  # the very thing compared: type name and message
        return ("raised", type(err).__name__, str(err))
    return ("ok", result)


def _good_bytes(data: bytes, bad: list[int], regions) -> list[bytes]:
    """The bytes of every page reported good, region by region."""
    spans = [(0, len(data))] if regions is None else regions
    out, index = [], 0
    for off, length in spans:
        for at in range(off, off + length, PAGE):
            if index not in bad:
                out.append(data[at : min(at + PAGE, off + length)])
            index += 1
    return out


def same_read(got_native, got_oracle, regions=None) -> None:
    assert got_native[0] == got_oracle[0], (got_native, got_oracle)
    if got_native[0] == "raised":
        assert got_native == got_oracle
        return
    (data_n, bad_n), (data_o, bad_o) = got_native[1], got_oracle[1]
    assert type(data_n) is bytes and len(data_n) == len(data_o)
    assert bad_n == bad_o
    if not bad_n:
        assert data_n == data_o
    assert _good_bytes(data_n, bad_n, regions) == _good_bytes(data_o, bad_o, regions)


def blocks(rng: random.Random) -> list[bytes]:
    words = [b"pager ", b"vmo ", b"supply\n", b"chunk ", b"\0" * 40]
    text = b"".join(rng.choice(words) for _ in range(40000))
    return [
        text[:131072], text[:5000], rng.randbytes(131072), rng.randbytes(4097),
        bytes(65536), b"x", text[:4096], rng.randbytes(1000) + text[:20000],
    ]


@pytest.fixture(scope="module")
def encoded():
    rng = random.Random(3)
    return [(data, _codec_py.encode_block(data)) for data in blocks(rng)]


def test_hash_pages_pads_the_last_page_with_zeros_and_takes_any_byte_span():
    rng = random.Random(5)
    data = rng.randbytes(3 * PAGE + 123)
    want = b"".join(hashlib.sha256(data[i : i + PAGE].ljust(PAGE, b"\0")).digest()
                    for i in range(0, len(data), PAGE))
    assert _codec.hash_pages(data) == want
    assert _codec.hash_pages(b"") == b""
    for offset, length in [(0, 1), (1, PAGE), (777, 2 * PAGE + 5), (len(data), 0), (5, None)]:
        got = _codec.hash_pages(memoryview(data), offset, length)
        assert got == _codec_py.hash_pages(data, offset, length)
        span = data[offset:] if length is None else data[offset : offset + length]
        assert got == _codec.hash_pages(span)
    for offset, length in [(-1, 1), (0, len(data) + 1), (len(data), 1)]:
        assert outcome(_codec, "hash_pages", data, offset, length) == \
            outcome(_codec_py, "hash_pages", data, offset, length)
        assert outcome(_codec, "hash_pages", data, offset, length)[1] == "ValueError"


def test_encode_block_equals_the_oracle(encoded):
    for data, (stored_o, hashes_o) in encoded:
        stored, hashes = _codec.encode_block(data)
        assert hashes == hashes_o == _codec.hash_pages(data)
        if len(stored) == len(data):
            assert stored == data  # stored raw: lz4 did not make it smaller
        # Each side decodes the other's block. (The compressed bytes themselves may
        # differ: python-lz4's block mode packs blocks under 64 KiB a little tighter
        # than liblz4's LZ4_compress_default, which mksquashfs -comp lz4 uses too.)
        for codec, block in ((_codec_py, stored), (_codec, stored_o)):
            back, bad = codec.decode_block(block, len(data), len(block) < len(data), hashes)
            assert (back, bad) == (data, [])
    for bad_arg in (b"", bytearray()):
        assert outcome(_codec, "encode_block", bad_arg)[1] == "ValueError"


def _regions(rng: random.Random, length: int) -> list[tuple[int, int]] | None:
    """Whole-block checks, page-aligned parts and byte spans anywhere (packed tails)."""
    choice = rng.randrange(4)
    if choice == 0:
        return None
    if choice == 1:
        first = rng.randrange(-(-length // PAGE))
        return [(first * PAGE, min(rng.randint(1, 4) * PAGE, length - first * PAGE))]
    spans = []
    for _ in range(rng.randint(0, 3)):
        off = rng.randrange(length)
        spans.append((off, rng.randint(0, length - off)))
    return spans


def _expect(data: bytes, regions, rng: random.Random) -> bytes:
    """Page hashes for a check of `regions`, sometimes wrong on purpose."""
    if regions is None:
        hashes = _codec_py.hash_pages(data)
    else:
        hashes = b"".join(_codec_py.hash_pages(data, o, n) for o, n in regions)
    hashes = bytearray(hashes)
    if hashes and rng.random() < 0.3:
        hashes[rng.randrange(len(hashes))] ^= 1 << rng.randrange(8)
    return bytes(hashes)


def _damage(stored: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    b = bytearray(stored)
    if kind == 0:
        return stored
    if kind == 1:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= rng.randrange(1, 256)
        return bytes(b)
    if kind == 2:
        return stored[: rng.randrange(len(stored))]  # truncated
    if kind == 3:
        return stored + rng.randbytes(rng.randint(1, 50))
    if kind == 4:
        return rng.randbytes(rng.randint(1, len(stored) + 10))  # lz4 garbage
    at = rng.randrange(len(b))
    b[at : at + 64] = bytes(len(b[at : at + 64]))
    return bytes(b)


def test_decode_and_check_equal_the_oracle_on_good_and_damaged_blocks(encoded):
    rng = random.Random(7)
    for case in range(1500):
        data, (stored, _) = encoded[case % len(encoded)]
        compressed = len(stored) < len(data)
        regions = _regions(rng, len(data))
        hashes = _expect(data, regions, rng)
        damaged = _damage(stored, rng)
        args = (damaged, len(data), compressed, hashes, regions)
        same_read(outcome(_codec, "decode_block", *args),
                  outcome(_codec_py, "decode_block", *args), regions)
        # The same check on bytes already decoded (a cached block).
        args = (data, hashes, regions)
        assert outcome(_codec, "check_pages", *args) == outcome(_codec_py, "check_pages", *args)


def test_read_block_equals_the_oracle_on_a_damaged_image_file(tmp_path, encoded):
    rng = random.Random(11)
    image = tmp_path / "image"
    layout, parts, at = [], [], 64
    for data, (stored, _) in encoded:
        stored = _damage(stored, rng) or b"?"
        layout.append((at, len(stored), data))
        parts.append(stored)
        at += len(stored)
    image.write_bytes(bytes(64) + b"".join(parts))
    fd = os.open(image, os.O_RDONLY)
    try:
        for case in range(600):
            offset, stored_len, data = layout[case % len(layout)]
            stored_len = min(stored_len, len(data))
            regions = _regions(rng, len(data))
            hashes = _expect(data, regions, rng)
            args = (fd, offset, stored_len, len(data), hashes, regions)
            same_read(outcome(_codec, "read_block", *args),
                      outcome(_codec_py, "read_block", *args), regions)
        # Past the end of the file: a short read, for both.
        offset, stored_len, data = layout[-1]
        args = (fd, offset + 10, stored_len, max(stored_len, len(data)), b"", [])
        assert outcome(_codec, "read_block", *args) == outcome(_codec_py, "read_block", *args) \
            == ("raised", "ShortReadError", "short read: the image was truncated")
    finally:
        os.close(fd)
    # An fd that cannot be read: the OSError of the pread, errno kept.
    for fd in (-1, os.open(tmp_path, os.O_RDONLY)):
        for codec in CODECS:
            with pytest.raises(OSError) as caught:
                codec.read_block(fd, 0, 10, 10, b"", [])
            assert caught.value.errno == (errno.EBADF if fd < 0 else errno.EISDIR)


@pytest.mark.parametrize("args", [
    (b"x" * 10, 10, False, bytes(31), None),         # hashes not a page's worth
    (b"x" * 10, 10, False, bytes(64), None),         # too many hashes
    (b"x" * 10, 10, False, bytes(32), [(5, 6)]),     # a region past the end
    (b"x" * 10, 10, False, b"", [(-1, 0)]),
    (b"x" * 10, 0, False, b"", []),                  # no block at all
])
def test_bad_arguments_are_value_errors_from_both(args):
    got = outcome(_codec, "decode_block", *args)
    assert got == outcome(_codec_py, "decode_block", *args)
    assert got[1] == "ValueError"


def test_raw_blocks_of_the_wrong_length_and_lz4_that_decodes_short():
    for args in [(b"x" * 9, 10, False, b"", []),
                 (_codec_py.encode_block(b"y" * 9000)[0], 9001, True, b"", [])]:
        got = outcome(_codec, "decode_block", *args)
        assert got == outcome(_codec_py, "decode_block", *args)
        assert got[:2] == ("raised", "DecodeError")


@pytest.mark.parametrize("module", ["pagerfs.store._codec", "pagerfs.zircon._gather"])
def test_a_missing_native_module_is_one_line_not_a_traceback(module):
    # As on a machine where pip could not build it: the import fails, and every command
    # says so in one line, exit status 2, instead of running without it.
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from pagerfs.cli import main\n"
            "sys.exit(main(['mount', '/nonexistent.img', '/nonexistent']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done
    assert done.stderr.startswith("pagerfs: ") and done.stderr.count("\n") == 1, done.stderr
    assert module in done.stderr and "tools/setup" in done.stderr


def test_read_files_equals_the_oracle_and_names_the_file_it_cannot_read(tmp_path):
    rng = random.Random(13)
    files = []
    for i, size in enumerate([0, 1, 4096, 70000, 5]):
        path = tmp_path / f"f{i}"
        path.write_bytes(rng.randbytes(size))
        files.append(bytes(path))
    starts, lengths = [0, 0, 100, 4096, 0], [0, 1, 3996, 65904, 50]  # the last is short
    for codec in CODECS:
        got = codec.read_files(files, starts, lengths)
        assert got == [Path(os.fsdecode(p)).read_bytes()[s : s + n]
                       for p, s, n in zip(files, starts, lengths)]
    os.symlink(tmp_path / "f1", tmp_path / "link")
    for bad, code in [(tmp_path / "missing", errno.ENOENT), (tmp_path / "link", errno.ELOOP),
                      (tmp_path, errno.EISDIR)]:
        for codec in CODECS:
            with pytest.raises(OSError) as caught:
                codec.read_files([files[1], bytes(bad)], [0, 0], [1, 1])
            assert caught.value.errno == code and caught.value.filename == bytes(bad)
    for args in [([b"a"], [0], []), ([b"a\0b"], [0], [1]), (["str"], [0], [1]), ([b"a"], [-1], [1])]:
        assert outcome(_codec, "read_files", *args)[1] in ("ValueError", "TypeError")


def test_read_files_keyed_gives_the_sha256_of_what_was_read_where_asked(tmp_path):
    rng = random.Random(14)
    files = []
    for i, size in enumerate([1, 4096, 70000, 5]):
        path = tmp_path / f"f{i}"
        path.write_bytes(rng.randbytes(size))
        files.append(bytes(path))
    starts, lengths, keyed = [0, 100, 0, 0], [1, 3996, 70000, 50], [True, False, 1, True]
    expected = []
    for p, s, n, k in zip(files, starts, lengths, keyed):
        data = Path(os.fsdecode(p)).read_bytes()[s : s + n]  # the last is short
        expected.append((data, hashlib.sha256(data).digest() if k else b""))
    for codec in CODECS:
        assert codec.read_files(files, starts, lengths, keyed) == expected
        assert codec.read_files(files, starts, lengths, [False] * 4) == [(d, b"") for d, _ in expected]
    for args in [(files[:1], [0], [1], []), (files[:1], [0], [1], 5)]:
        assert outcome(_codec, "read_files", *args)[1] in ("ValueError", "TypeError")
        assert outcome(_codec_py, "read_files", *args)[1] in ("ValueError", "TypeError")


def test_list_dir_equals_the_oracle_and_names_what_it_cannot_read(tmp_path):
    # Sorted as sorted() sorts bytes (high bytes after ASCII), every kind, a long link.
    for name in [b"b", b"a", b"\xc3\xa9", b"A", b"a.b", b"a-b"]:
        (tmp_path / os.fsdecode(name)).write_bytes(name)
    (tmp_path / "dir").mkdir()
    os.symlink("x" * 3000, tmp_path / "long")
    os.symlink("a", tmp_path / "short")
    os.link(tmp_path / "a", tmp_path / "hard")
    os.mkfifo(tmp_path / "fifo")
    got = [codec.list_dir(bytes(tmp_path)) for codec in CODECS]
    assert got[0] == got[1] == [codec.list_dir(str(tmp_path) + "/") for codec in CODECS][0]
    assert [e[0] for e in got[0]] == sorted(os.listdir(bytes(tmp_path)))
    entries = {e[0]: e for e in got[0]}
    assert entries[b"long"][10] == b"x" * 3000 and entries[b"long"][7] == 3000
    assert entries[b"a"][4] == 2 and entries[b"a"][10] is None
    assert entries[b"a"][9] == os.lstat(tmp_path / "a").st_mtime_ns
    assert codec_outcomes_equal(bytes(tmp_path / "missing")) == (errno.ENOENT, bytes(tmp_path / "missing"))
    assert codec_outcomes_equal(bytes(tmp_path / "a")) == (errno.ENOTDIR, bytes(tmp_path / "a"))
    for arg in [b"a\0b", 3]:
        assert outcome(_codec, "list_dir", arg)[1] in ("ValueError", "TypeError")


def codec_outcomes_equal(path: bytes) -> tuple[int, bytes]:
    errors = []
    for codec in CODECS:
        with pytest.raises(OSError) as caught:
            codec.list_dir(path)
        errors.append((caught.value.errno, caught.value.filename))
    assert errors[0] == errors[1]
    return errors[0]


def test_encode_blocks_is_encode_block_of_each_piece(encoded):
    rng = random.Random(17)
    data = b"".join(d for d, _ in encoded) + rng.randbytes(777)
    for size in (4096, 16384, 131072, len(data), len(data) + 1):
        got = _codec.encode_blocks(memoryview(data), size)
        want = [_codec.encode_block(data[o : o + size]) for o in range(0, len(data), size)]
        assert got == want
        # The oracle's lz4 bytes may differ (see above); its hashes may not.
        assert [h for _, h in _codec_py.encode_blocks(data, size)] == [h for _, h in got]
    assert _codec.encode_blocks(b"", 4096) == [] == _codec_py.encode_blocks(b"", 4096)
    for size in (0, -1):
        assert outcome(_codec, "encode_blocks", data, size) == \
            outcome(_codec_py, "encode_blocks", data, size)
        assert outcome(_codec, "encode_blocks", data, size)[1] == "ValueError"
