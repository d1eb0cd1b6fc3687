"""A few hundred seeded mutations of an image (tools/fuzz-image runs thousands)."""

from __future__ import annotations

import importlib.util
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path

from pagerfs.store import format as fmt

TOOL = Path(__file__).resolve().parents[2] / "tools" / "fuzz-image"


def load_tool():
    loader = SourceFileLoader("pagerfs_fuzz_image", str(TOOL))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


def test_mutated_images_never_give_a_wrong_byte_a_traceback_or_a_hang(tmp_path):
    tool = load_tool()
    problems: list[str] = []
    result = tool.fuzz(250, seed=20261126, workdir=tmp_path, report=problems.append,
                       time_limit=False)  # pytest-timeout catches a hang
    assert problems == []
    assert result["failures"] == 0
    # The mutations reached every part of the image and every kind of answer.
    kinds = {k.split(" ")[0] for k in result["mutations"]}
    regions = {k.split(" ")[1] for k in result["mutations"] if " " in k}
    assert kinds >= {"flip", "truncate", "append", "zero", "forge", "hashes"}
    assert regions >= {"header", "data", *fmt.TABLE_NAMES}
    assert set(result["statuses"]) == {0, 1, 2}


def test_data_damage_is_localised_not_fatal(tmp_path):
    # Flipping stored data bytes must give exit 1 (damage it can localise), with the
    # listing intact: the whole image is not thrown away for one bad chunk.
    tool = load_tool()
    sample = tool.make_sample(tmp_path)
    lo, hi = sample.layout["data"]
    raw = bytearray(sample.image)
    raw[lo + (hi - lo) // 2] ^= 0xFF
    image = tmp_path / "one.img"
    image.write_bytes(bytes(raw))
    r = tool.run(["verify", str(image)])
    assert r.rc == 1 and b": IO_DATA_INTEGRITY" in r.out
    assert tool.run(["ls", str(image), "/"]).out == sample.listings["/"]
