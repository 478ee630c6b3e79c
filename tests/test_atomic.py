"""Write-then-rename: a failure leaves the old output (or none) and no temporary files."""
import os

import pytest

from sagan.atomic import atomic_dir, atomic_path, write_json


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".txt" and tmp.parent == tmp_path
        tmp.write_text("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.txt"]


def test_atomic_path_gives_umask_mode_not_0600(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_dir_gives_umask_mode_not_0700(tmp_path):
    with atomic_dir(tmp_path / "prepared") as tmp:
        (tmp / "a.npy").write_bytes(b"1")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "prepared").stat().st_mode & 0o777 == 0o777 & ~mask


def test_atomic_dir_replaces_whole_directory(tmp_path):
    target = tmp_path / "shards"
    with atomic_dir(target) as tmp:
        (tmp / "a.npy").write_bytes(b"1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b.npy").write_bytes(b"2")
            raise RuntimeError("killed")
    assert sorted(os.listdir(target)) == ["a.npy"]
    with atomic_dir(target) as tmp:
        (tmp / "c.npy").write_bytes(b"3")
    assert sorted(os.listdir(target)) == ["c.npy"] and sorted(os.listdir(tmp_path)) == ["shards"]
