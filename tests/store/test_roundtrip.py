"""Trees in, images out, and every byte, name, attribute and digest back again."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pagerfs.store import Image, Kind, build_image


@pytest.fixture(scope="module")
def edge_image(edge_tree, tmp_path_factory) -> Path:
    image = tmp_path_factory.mktemp("img") / "edge.img"
    build_image(edge_tree, image)
    return image


@pytest.fixture(scope="module")
def system_image(system_tree, tmp_path_factory) -> Path:
    image = tmp_path_factory.mktemp("img") / "system.img"
    build_image(system_tree, image, jobs=2)
    return image


def test_mkimage_cli_skips_special_files_with_a_warning(edge_tree, tmp_path, cli_subprocess, edge_image):
    image = tmp_path / "cli.img"
    r = cli_subprocess(["mkimage", str(edge_tree), str(image)])
    assert r.rc == 0, r.err
    assert b"warning: skipping " + bytes(edge_tree) + b"/a-fifo: FIFO\n" in r.err
    assert b"warning: skipping " + bytes(edge_tree) + b"/a-socket: socket\n" in r.err
    if (edge_tree / "a-device").exists():
        assert b"warning: skipping " + bytes(edge_tree) + b"/a-device: character device\n" in r.err
    assert b"Traceback" not in r.err
    # Same tree, same bytes: the API build and the CLI build agree.
    assert image.read_bytes() == edge_image.read_bytes()


def test_every_file_reads_back_through_cat_subprocess(edge_tree, edge_image, cli_subprocess, files_of):
    for rel in files_of(edge_tree):
        if rel.startswith(b"zeros"):
            continue  # the 64 MiB file is compared through the API below
        r = cli_subprocess(["cat", str(edge_image), os.fsdecode(rel)])
        assert r.rc == 0, (rel, r.err)
        assert r.out == Path(os.fsdecode(os.path.join(bytes(edge_tree), rel))).read_bytes(), rel


@pytest.mark.parametrize("tree", ["edge", "system"])
def test_every_file_reads_back_through_api_and_cli(tree, edge_tree, edge_image, system_tree,
                                                   system_image, cli, files_of):
    root, image = (edge_tree, edge_image) if tree == "edge" else (system_tree, system_image)
    files = files_of(root)
    assert len(files) > (10 if tree == "edge" else 100)
    with Image.open(image) as img:
        for rel in files:
            with open(os.path.join(bytes(root), rel), "rb") as f:
                data = f.read()
            ino = img.resolve(rel)
            st = img.stat(ino)
            assert st.kind == Kind.FILE and st.size == len(data)
            assert img.read_pages(ino, 0, -(-len(data) // 4096)) == data, rel
            r = cli(["cat", str(image), os.fsdecode(rel)])
            assert (r.rc, r.err) == (0, b"")
            assert r.out == data, rel


@pytest.mark.parametrize("tree", ["edge", "system"])
def test_recorded_digest_equals_fsverity_tool(tree, edge_tree, edge_image, system_tree,
                                              system_image, real_fsverity, files_of):
    root, image = (edge_tree, edge_image) if tree == "edge" else (system_tree, system_image)
    rels = files_of(root)
    expected = real_fsverity([os.path.join(bytes(root), r) for r in rels])
    with Image.open(image) as img:
        for rel in rels:
            assert img.fsverity_digest(img.resolve(rel)) == expected[os.path.join(bytes(root), rel)], rel


def test_tree_and_attributes_round_trip(edge_tree, edge_image):
    broot = bytes(edge_tree)
    with Image.open(edge_image) as img:
        for d, dirs, files in os.walk(broot):
            rel = os.path.relpath(d, broot)
            ino = img.resolve(rel)
            expected = sorted(n for n in dirs + files if stat.S_IFMT(os.lstat(os.path.join(d, n)).st_mode)
                              in (stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK))
            assert [name for name, _ in img.listdir(ino)] == expected
            for name in expected:
                src = os.lstat(os.path.join(d, name))
                child = img.lookup(ino, name)
                st = img.stat(child)
                assert (st.mode, st.uid, st.gid, st.mtime_ns) == (
                    src.st_mode, src.st_uid, src.st_gid, src.st_mtime_ns), name
                if stat.S_ISLNK(src.st_mode):
                    assert img.readlink(child) == os.readlink(os.path.join(d, name))
                    assert st.size == len(img.readlink(child))
                elif stat.S_ISREG(src.st_mode):
                    assert st.size == src.st_size and st.nlink == src.st_nlink
                else:
                    subdirs = sum(1 for e in os.scandir(os.path.join(d, name)) if e.is_dir(follow_symlinks=False))
                    assert st.nlink == 2 + subdirs
        for special in (b"a-fifo", b"a-socket", b"a-device"):
            assert img.lookup(img.root, special) is None


def test_hard_links_are_one_inode_and_non_utf8_names_survive(edge_image, cli):
    with Image.open(edge_image) as img:
        a = img.resolve("hardlink-a")
        assert a == img.resolve("sub/small.txt") == img.resolve("sub/deeper/hardlink-b")
        assert img.stat(a).nlink == 3
        ino = img.lookup(img.root, b"caf\xe9")
        assert ino is not None and img.read_pages(ino, 0, 1) == b"name caf\xe9"
        assert img.path_of(img.resolve(b"dir-\xe9/inner")) == b"/dir-\xe9/inner"
    r = cli(["ls", str(edge_image)])
    assert r.rc == 0
    lines = r.out.splitlines()
    assert any(line.endswith(b" \xff\xfe-not-utf8") for line in lines)
    assert any(line.endswith(b" link-rel -> small.txt") for line in cli(["ls", str(edge_image), "sub"]).out.splitlines())
    assert any(line.startswith(b"lrwxrwxrwx") and line.endswith(b"link-abs -> /etc/passwd") for line in lines)
    assert any(line.startswith(b"-rw-r-----   3") for line in cli(["ls", str(edge_image), "sub"]).out.splitlines())


def test_identical_data_is_stored_once(edge_tree, edge_image):
    with Image.open(edge_image) as img:
        info = img.info()
        # 64 MiB of zeros and a duplicated 300 KiB file cost almost nothing.
        assert info.stored_bytes < 2 * (1 << 20)
        assert info.file_bytes > 64 << 20
        assert img.read_pages(img.resolve("zeros-64M"), 16383, 5) == bytes(4096)


def test_same_tree_gives_same_bytes_whatever_the_jobs(system_tree, system_image, tmp_path):
    one = tmp_path / "one.img"
    build_image(system_tree, one, jobs=1)
    assert one.read_bytes() == system_image.read_bytes()


def test_hashing_every_tail_as_before_the_scan_is_done_changes_no_byte(system_tree, system_image,
                                                                       tmp_path, monkeypatch):
    # Tails encoded while the scan is still running are all hashed for deduplication
    # (an equal one may be found later); after it, only those of a length another tail
    # has. How far the scan is ahead must not show in the image.
    from pagerfs.store import builder

    monkeypatch.setattr(builder._Scan, "shared", lambda self, size, cs: True)
    every = tmp_path / "every.img"
    build_image(system_tree, every)
    assert every.read_bytes() == system_image.read_bytes()


def test_other_chunk_sizes_round_trip(edge_tree, tmp_path, cli):
    for size in ("4K", "64K", "1M"):
        image = tmp_path / f"{size}.img"
        assert cli(["mkimage", "--quiet", "--chunk-size", size, str(edge_tree), str(image)]).rc == 0
        with Image.open(image) as img:
            assert img.chunk_size == int(size[:-1]) << (10 if size[-1] == "K" else 20)
            data = (edge_tree / "random-700K").read_bytes()
            ino = img.resolve("random-700K")
            assert img.read_pages(ino, 3, 100) == data[3 * 4096 : 103 * 4096]


def test_an_image_rebuilt_inside_its_own_tree_leaves_itself_out(tmp_path, cli):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_bytes(b"a" * 5000)
    image = tree / "self.img"
    r = cli(["mkimage", "--quiet", str(tree), str(image)])
    # The scan runs while the image is being written: its temporary file, in the tree
    # too, is left out without a word.
    assert r.rc == 0 and b"warning" not in r.err
    with Image.open(image) as img:
        assert [n for n, _ in img.listdir(img.root)] == [b"a"]
    r = cli(["mkimage", "--quiet", str(tree), str(image)])
    assert r.rc == 0 and b"self.img: the image being built" in r.err
    with Image.open(image) as img:
        assert [n for n, _ in img.listdir(img.root)] == [b"a"]


def test_tails_that_differ_only_by_trailing_zeros_stay_apart(tmp_path):
    # Tails are deduplicated by their zero-padded 4 KiB block hashes plus length.
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_bytes(b"abc")
    (tree / "b").write_bytes(b"abc\0")
    (tree / "c").write_bytes(b"x" * 131072 + b"abc")  # same tail after a full chunk
    image = tmp_path / "img"
    build_image(tree, image)
    with Image.open(image) as img:
        assert img.read_pages(img.resolve("a"), 0, 1) == b"abc"
        assert img.read_pages(img.resolve("b"), 0, 1) == b"abc\0"
        assert img.read_pages(img.resolve("c"), 32, 1) == b"abc"


def test_listdir_slices_are_slices_of_the_sorted_listing(tmp_path):
    src = tmp_path / "src"
    (src / "wide").mkdir(parents=True)
    for i in range(70):
        (src / "wide" / f"n{i:03d}").write_bytes(b"x" * i)
    build_image(src, tmp_path / "w.img")
    with Image.open(tmp_path / "w.img") as img:
        wide = img.resolve("wide")
        full = img.listdir(wide)
        assert [n for n, _ in full] == [f"n{i:03d}".encode() for i in range(70)]
        assert all(img.lookup(wide, n) == ino for n, ino in full)
        for start, stop in [(0, 32), (32, 64), (64, 96), (69, None), (70, None), (5, 3), (-4, 2), (100, 200)]:
            assert img.listdir(wide, start, stop) == full[max(start, 0):stop], (start, stop)
        with pytest.raises(NotADirectoryError):
            img.listdir(full[0][1], 0, 1)
