"""Random trees round-trip: the packing and deduplication logic against the simplest
possible oracle (the files themselves)."""

from __future__ import annotations

import os
import random
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagerfs.store import Image, build_image, fsverity_digest, scrub

CHUNK = 8192  # small, so that tails fill and overflow fragments often

names = st.binary(min_size=1, max_size=12).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b".."))
# Sizes around page and chunk boundaries, and contents that repeat (to exercise
# deduplication of chunks and tails) or not.
sizes = st.one_of(st.sampled_from([0, 1, 4095, 4096, 4097, CHUNK - 1, CHUNK, CHUNK + 1,
                                   3 * CHUNK, 3 * CHUNK + 5]), st.integers(0, 5 * CHUNK))
contents = st.builds(lambda size, seed, kind: (bytes([seed]) * size if kind == 0 else
                                               (bytes(range(256)) * (size // 256 + 1))[:size] if kind == 1 else
                                               random.Random(seed).randbytes(size)),
                     sizes, st.integers(0, 3), st.integers(0, 2))
trees = st.dictionaries(
    st.tuples(st.sampled_from([b"", b"d1", b"d1/d2", b"e"]), names), contents,
    min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_random_trees_round_trip(tree):
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(os.fsencode(tmp), b"src")
        written = {}
        # Folders first: a file named like one of them ("e" beside "e/x") gives way.
        for folder in {folder for folder, _name in tree}:
            os.makedirs(os.path.join(root, folder) if folder else root, exist_ok=True)
        for (folder, name), data in tree.items():
            path = os.path.join(os.path.join(root, folder) if folder else root, name)
            if os.path.isdir(path):
                continue  # a file name equal to one of our folder names
            with open(path, "wb") as f:
                f.write(data)
            written[os.path.relpath(path, root)] = data
        image = os.path.join(os.fsencode(tmp), b"img")
        build_image(root, image, chunk_size=CHUNK, jobs=1)
        with Image.open(image) as img:
            for rel, data in written.items():
                ino = img.resolve(rel)
                assert img.read_pages(ino, 0, -(-len(data) // 4096)) == data
                assert img.fsverity_digest(ino) == fsverity_digest(data)
                for index in img.chunk_range(ino, 0, 1 << 30):
                    first, npages = img.chunk_pages(ino, index)
                    assert img.read_chunk(ino, index) == data[first * 4096 : (first + npages) * 4096]
            assert scrub(img).damage == []
