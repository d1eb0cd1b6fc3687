"""pagerfs.native: a native module built from another version of its source is refused
with one line, so a checkout updated without a rebuild cannot fail every read."""

import hashlib
import types

import pytest

from pagerfs import native
from pagerfs.store import _codec
from pagerfs.zircon import _gather


@pytest.mark.parametrize("module, source", [(_codec, "pagerfs/store/_codec.c"),
                                            (_gather, "pagerfs/zircon/_gather.c")])
def test_each_built_module_carries_the_digest_of_its_source(module, source):
    with open(source, "rb") as f:
        assert module.SOURCE_DIGEST == hashlib.sha256(f.read()).hexdigest()


def test_a_module_built_from_another_source_is_stale(tmp_path):
    source = tmp_path / "_mod.c"
    source.write_bytes(b"int x;\n")
    built = types.SimpleNamespace(SOURCE_DIGEST=hashlib.sha256(b"int x;\n").hexdigest())
    assert not native.stale_build(built, str(source))
    source.write_bytes(b"int x, y;\n")
    assert native.stale_build(built, str(source))
    assert native.stale_build(types.SimpleNamespace(), str(source))  # built before digests


def test_without_the_source_nothing_can_be_compared(tmp_path):
    assert not native.stale_build(types.SimpleNamespace(), str(tmp_path / "gone.c"))


def test_a_missing_module_is_one_line_naming_what_to_install():
    with pytest.raises(ImportError) as info:
        native.load("pagerfs.store._no_such_module", "the native thing", "gcc and frobs")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("the native thing pagerfs.store._no_such_module is not built")
    assert message.endswith("with gcc and frobs installed")
