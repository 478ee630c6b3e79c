"""Write-then-rename: a failure leaves the old output (or none) and no temporary files."""
import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sagan import atomic
from sagan.atomic import atomic_dir, atomic_path, write_json
from sagan.errors import SaganError


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


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _leftovers(directory: Path, pid: int) -> dict[str, Path]:
    """Temporaries as a writer with `pid` would leave them when killed (kill -9: no cleanup ran)."""
    made = {
        "dir": directory / f".prepared.{pid}.k3x_9abc.tmp",
        "file": directory / f".out.{pid}.q1w2e3r4.tmp.txt",
    }
    made["dir"].mkdir()
    (made["dir"] / "shard_00000.npy").write_bytes(b"half")
    made["file"].write_text("half-writ")
    return made


def test_temporaries_left_by_a_killed_writer_are_removed_at_the_next_write(tmp_path):
    dead = _leftovers(tmp_path, _dead_pid())
    legacy = tmp_path / ".prepared.abcd1234.tmp"  # made before temporaries carried their writer's PID
    legacy.mkdir()
    others = [tmp_path / f".prepared2.{_dead_pid()}.k3x_9abc.tmp",  # another target's, even if stale
              tmp_path / f".out.{_dead_pid()}.q1w2e3r4.tmp.json", tmp_path / ".prepared.old", tmp_path / "keep.txt"]
    for other in others:
        other.write_text("x")
    with atomic_dir(tmp_path / "prepared") as tmp:
        (tmp / "a.npy").write_bytes(b"1")
    assert not dead["dir"].exists() and not legacy.exists() and dead["file"].exists()
    write_json(tmp_path / "out.txt", {})
    assert not dead["file"].exists()
    assert sorted(os.listdir(tmp_path)) == sorted(["out.txt", "prepared", *(o.name for o in others)])


def test_temporaries_of_a_live_writer_are_kept(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = _leftovers(tmp_path, writer.pid)
        with atomic_dir(tmp_path / "prepared") as tmp:
            (tmp / "a.npy").write_bytes(b"1")
        write_json(tmp_path / "out.txt", {})
        assert live["dir"].is_dir() and live["file"].is_file()
    finally:
        writer.kill()
        writer.wait()
    write_json(tmp_path / "out.txt", {})  # once its writer is gone, it is stale
    assert not live["file"].exists()


def test_this_process_removes_its_own_stale_temporaries_but_not_one_in_use(tmp_path):
    own = _leftovers(tmp_path, os.getpid())  # e.g. a write that a previous process with this PID left
    target = tmp_path / "out.txt"
    with atomic_path(target) as outer:
        assert not own["file"].exists()
        outer.write_text("outer")
        with atomic_path(target) as inner:  # a second writer of the same target in this process
            inner.write_text("inner")
        assert outer.read_text() == "outer"
    assert target.read_text() == "outer"
    with atomic_dir(tmp_path / "prepared"):
        assert not own["dir"].exists()
    assert sorted(os.listdir(tmp_path)) == ["out.txt", "prepared"]


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_is_one_line_and_leaves_the_old_output(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    monkeypatch.setattr(Path, "write_text", _no_space)
    with pytest.raises(SaganError) as exc:
        write_json(target, {"fid": 1.0})
    assert str(exc.value).startswith(f"no space left on device while writing {target} (hint:")
    assert "\n" not in str(exc.value)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["metrics.json"]


def test_full_disk_in_a_directory_write_is_one_line(tmp_path):
    with pytest.raises(SaganError, match=f"^no space left on device while writing {tmp_path / 'figures'} "):
        with atomic_dir(tmp_path / "figures") as tmp:
            (tmp / "a.png").write_bytes(b"1")
            _no_space()
    assert os.listdir(tmp_path) == []


def test_torch_save_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    # torch.save's zip writer hides the errno ("PytorchStreamWriter failed writing file ...: file
    # write failed"); a failed write on a file system with no space left is reported as such.
    torch = pytest.importorskip("torch")
    target = tmp_path / "step_0000100.pt"

    def failing_save(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(atomic, "_free_bytes", lambda directory: 0)
    with pytest.raises(SaganError, match=f"^no space left on device while writing {target} "):
        with atomic_path(target) as tmp:
            torch.save({}, tmp)
    monkeypatch.setattr(atomic, "_free_bytes", lambda directory: 10 << 30)
    with pytest.raises(RuntimeError, match="unexpected pos"):  # with space left, it is not the disk
        with atomic_path(target) as tmp:
            torch.save({}, tmp)
    assert os.listdir(tmp_path) == []


def _denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied")


def _read_only_fs(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system")


@pytest.mark.parametrize("patch", ["mkstemp", "mkdtemp", "replace"])
def test_unwritable_directory_is_one_line_naming_it(tmp_path, monkeypatch, patch):
    # Root ignores permissions, so the failing calls are simulated (the chmod test below is real).
    target = tmp_path / "out" / ("figures" if patch == "mkdtemp" else "metrics.json")
    owner = tempfile if patch != "replace" else os
    monkeypatch.setattr(owner, patch, _denied if patch != "replace" else _read_only_fs)
    with pytest.raises(SaganError) as exc:
        if patch == "mkdtemp":
            with atomic_dir(target) as tmp:
                (tmp / "a.png").write_bytes(b"1")
        else:
            write_json(target, {})
    reason = "Read-only file system" if patch == "replace" else "Permission denied"
    assert str(exc.value).startswith(f"{tmp_path / 'out'}: directory is not writable ({reason}), so "
                                     f"{target} cannot be written (hint:")
    assert os.listdir(tmp_path / "out") == []  # no temporary left behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
@pytest.mark.parametrize("sub", ["", "reports"])
def test_read_only_directory_is_one_line_naming_it(tmp_path, sub):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        target = read_only / sub / "metrics.json"
        with pytest.raises(SaganError, match=f"^{read_only}: directory is not writable \\(Permission denied\\)"):
            write_json(target, {})
        with pytest.raises(SaganError, match=f"^{read_only}: directory is not writable"):
            with atomic_dir(read_only / "figures"):
                pass
        assert os.listdir(read_only) == []
    finally:
        read_only.chmod(0o755)
