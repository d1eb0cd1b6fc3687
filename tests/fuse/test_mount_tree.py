"""A mounted image looks, to ordinary tools, exactly like the tree it was built from."""

import errno
import hashlib
import os
import stat
import subprocess
import tarfile

import pytest

pytestmark = pytest.mark.fuse


def walk(root):
    """Relative path -> (type, mode, uid, gid, size, mtime_ns, link target or None)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else None
            out[os.path.relpath(path, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                                st.st_uid, st.st_gid, size, st.st_mtime_ns, target)
    return out


def test_names_modes_owners_times_sizes_and_links_match(mnt, tree):
    assert walk(mnt.path) == walk(tree)


def test_find_lists_the_same_tree(mnt, tree, helpers):
    def listing(root):
        out = helpers.run("find", ".", "-printf", r"%y %m %s %p %l\n", cwd=root).stdout
        return sorted(out.decode(errors="surrogateescape").splitlines())

    # Directory sizes are the filesystem's own business; drop them before comparing.
    def no_dir_sizes(lines):
        return [" ".join(f if i != 2 or line.startswith("f") or line.startswith("l") else "-"
                         for i, f in enumerate(line.split(" "))) for line in lines]

    assert no_dir_sizes(listing(mnt.path)) == no_dir_sizes(listing(tree))


def test_every_file_is_identical_by_cmp_and_sha256sum(mnt, tree, helpers):
    files = sorted(p.relative_to(tree) for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    assert len(files) >= 8
    for rel in files:
        helpers.run("cmp", tree / rel, mnt.path / rel)
    sums = helpers.run("sha256sum", *files, cwd=tree).stdout
    check = subprocess.run(["sha256sum", "--check", "--strict", "-"], input=sums,
                           cwd=mnt.path, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_cp_a_copies_the_whole_tree(mnt, tree, tmp_path, helpers):
    helpers.run("cp", "-a", f"{mnt.path}/.", tmp_path / "copy")
    assert walk(tmp_path / "copy") == walk(tree)
    helpers.run("diff", "-r", "--no-dereference", tree, tmp_path / "copy")


def test_tar_of_the_mount_holds_the_source_bytes(mnt, tree, tmp_path, helpers):
    helpers.run("tar", "-cf", tmp_path / "t.tar", "-C", mnt.path, ".")
    with tarfile.open(tmp_path / "t.tar") as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
        for rel in ("big.bin", "odd-size.bin", "dir/sub/deep.txt", "empty"):
            assert tar.extractfile(members[rel]).read() == (tree / rel).read_bytes()
        assert members["link"].linkname == "hello.txt"


def test_stat_and_python_reads_at_odd_offsets(mnt, tree):
    data = (tree / "odd-size.bin").read_bytes()
    with open(mnt.path / "odd-size.bin", "rb", buffering=0) as f:
        for offset, length in [(0, 1), (4095, 2), (65535, 70000), (len(data) - 10, 100),
                               (len(data), 10), (len(data) + 5000, 10)]:
            assert os.pread(f.fileno(), length, offset) == data[offset:offset + length]


def test_digest_xattr_matches_fsverity_digest_of_the_source(mnt, tree, helpers):
    for rel in ("big.bin", "hello.txt", "empty", "odd-size.bin"):
        expected = helpers.run("fsverity", "digest", "--compact", tree / rel).stdout.decode().strip()
        got = os.getxattr(mnt.path / rel, "user.pagerfs.digest").decode()
        assert got == "sha256:" + expected.removeprefix("sha256:")


def test_the_mount_is_read_only(mnt):
    root = mnt.path
    attempts = [
        lambda: open(root / "hello.txt", "r+b"),
        lambda: open(root / "new", "wb"),
        lambda: os.mkdir(root / "newdir"),
        lambda: os.unlink(root / "hello.txt"),
        lambda: os.rename(root / "hello.txt", root / "moved"),
        lambda: os.symlink("x", root / "newlink"),
        lambda: os.link(root / "hello.txt", root / "newhard"),
        lambda: os.chmod(root / "hello.txt", 0o777),
        lambda: os.truncate(root / "hello.txt", 0),
        lambda: os.rmdir(root / "dir" / "sub"),
        lambda: os.setxattr(root / "hello.txt", "user.other", b"x"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS, attempt
    assert (root / "hello.txt").read_text() == "hello, pager\n"


def test_proc_mounts_and_statfs(mnt):
    with open("/proc/self/mounts") as f:
        entries = [line.split() for line in f]
    kinds = [e[2] for e in entries if e[1] == str(mnt.path)]
    assert kinds == ["fuse.pagerfs"]
    st = os.statvfs(mnt.path)
    assert st.f_bsize == 4096 and st.f_blocks * 4096 >= os.path.getsize(mnt.image)
    assert st.f_bfree == 0 and st.f_files >= 14  # read-only: nothing free; every inode


def test_xattrs_absent_and_control_attrs_hidden(mnt):
    assert os.listxattr(mnt.path / "hello.txt") == []
    with pytest.raises(OSError) as info:
        os.getxattr(mnt.path / "hello.txt", "user.nothing")
    assert info.value.errno == errno.ENODATA
    with pytest.raises(OSError) as info:
        os.getxattr(mnt.path / "dir", "user.pagerfs.digest")
    assert info.value.errno == errno.ENOTSUP


def test_missing_names_and_wrong_kinds(mnt):
    with pytest.raises(FileNotFoundError):
        os.stat(mnt.path / "no-such-file")
    with pytest.raises(NotADirectoryError):
        os.listdir(mnt.path / "hello.txt")
    with pytest.raises(FileNotFoundError):
        open(mnt.path / "dir" / "dangling")


def test_stats_count_what_the_pager_did(mnt, tree):
    before = mnt.stats("big.bin")
    with open(mnt.path / "big.bin", "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        data = f.read()
        during = mnt.stats("big.bin")
    assert hashlib.sha256(data).digest() == hashlib.sha256((tree / "big.bin").read_bytes()).digest()
    npages = -(-len(data) // 4096)
    assert during["committed_pages"] == npages  # all of it is in the VMO while open
    assert during["page_requests"] > before["page_requests"]
    assert during["pages_supplied"] - before["pages_supplied"] >= npages
    assert during["pages_failed"] == {}
    totals = mnt.stats()
    assert totals["pages_supplied"] >= during["pages_supplied"]
    assert totals["pid"] > 0


def test_big_directory_and_odd_mountpoint_names(tmp_path, helpers):
    src = tmp_path / "src"
    (src / "many").mkdir(parents=True)
    names = {f"file-{i:05d}-{'x' * (i % 50)}" for i in range(3000)}
    for name in names:
        (src / "many" / name).write_bytes(name.encode())
    image = helpers.build_image(src, tmp_path / "many, odd\\name.img")
    where = tmp_path / "mount point é\tx"
    with helpers.mounted(image, where, "-o", "allow_other,noatime") as mount:
        with open("/proc/self/mountinfo") as f:
            mine = [line for line in f if " fuse.pagerfs " in line and "mount\\040point" in line]
        assert len(mine) == 1 and "allow_other" in mine[0] and "noatime" in mine[0]
        assert set(os.listdir(mount.path / "many")) == names
        assert (mount.path / "many" / "file-02999-" f"{'x' * (2999 % 50)}").read_bytes().startswith(b"file-02999")
        helpers.pagerfs("umount", mount.path)
        assert not os.path.ismount(mount.path)


def test_stat_tool_agrees_with_the_source(mnt, tree, helpers):
    rels = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    fmt = "%n|%F|%s|%a|%u|%g|%h|%.9Y|%N"

    def stats(root):
        lines = helpers.run("stat", "-c", fmt, *rels, cwd=root).stdout.decode().splitlines()
        # Directory sizes and link counts are the filesystem's own business.
        return [line if not line.split("|")[1] == "directory" else
                "|".join(f for i, f in enumerate(line.split("|")) if i not in (2, 6))
                for line in lines]

    assert stats(mnt.path) == stats(tree)


def test_a_sparse_file_reads_its_holes_as_zeros_and_counts_only_its_data(tmp_path, helpers):
    src = tmp_path / "src"
    src.mkdir()
    size, at = 48 << 20, (30 << 20) + 7
    with open(src / "sparse", "wb") as f:
        f.truncate(size)
        f.seek(at)
        f.write(b"data in the middle")
    if os.stat(src / "sparse").st_blocks * 512 >= size:
        pytest.skip(f"{tmp_path} does not keep holes")
    image = helpers.build_image(src, tmp_path / "s.img")
    with helpers.mounted(image, tmp_path / "mnt") as mount:
        path = mount.path / "sparse"
        st = os.stat(path)
        # st_blocks tells what is stored: the one chunk with data, not 48 MiB.
        assert (st.st_size, st.st_blocks * 512) == (size, helpers.CHUNK)
        helpers.run("cmp", src / "sparse", path)
        with open(path, "rb") as f:
            f.seek(at)
            assert f.read(18) == b"data in the middle"
