"""The kernel model's read copy (pagerfs/zircon/_gather.c) is b"".join, byte for byte."""

from __future__ import annotations

import random

import pytest

from pagerfs.zircon._gather import gather


def test_gather_equals_join_for_every_kind_of_piece():
    rng = random.Random(2)
    big = rng.randbytes(1 << 20)
    cases = [[], [b""], [big], [memoryview(big)[5:70000]], [b"a", bytearray(b"bc"), b""],
             [memoryview(big)[i : i + 131072] for i in range(0, 1 << 20, 131072)],
             [memoryview(big)[rng.randrange(1000) :][: rng.randrange(5000)] for _ in range(200)]]
    for pieces in cases:
        got = gather(pieces)
        assert type(got) is bytes and got == b"".join(pieces)
    assert gather(tuple(cases[5])) == big


def test_gather_refuses_what_join_refuses():
    for bad in ([b"a", "text"], [b"a", 3], 5):
        with pytest.raises(TypeError):
            gather(bad)
