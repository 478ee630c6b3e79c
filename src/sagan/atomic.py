"""Write-then-rename helpers: an interrupted stage leaves the old output or none.

A temporary is named `.NAME.PID.RANDOM.tmp[SUFFIX]` beside its target, with the PID of the
process writing it. A writer killed outright (kill -9, power loss) leaves its temporary behind;
the next atomic write of the same target removes it, and every other temporary of that target
whose writer is no longer alive, but never one that a live writer is still filling.

A full disk, an unwritable directory or a directory where a file is to be written is a one-line
SaganError naming the path, not a traceback, and the temporary is removed.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from sagan.errors import SaganError

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
# torch.save's zip writer reports a full disk as a RuntimeError without an errno; a failed write on
# a file system with less than this left is taken as a full disk.
LOW_SPACE_BYTES = 1 << 20
NO_SPACE_HINT = "free space on that file system (or move the project to one with room) and rerun"
NOT_WRITABLE_HINT = "check the directory's permissions and that its file system is not mounted read-only"

_in_use: set[str] = set()  # absolute paths of the temporaries this process is writing now


def no_space_error(path: str | os.PathLike) -> SaganError:
    return SaganError(f"no space left on device while writing {path}", hint=NO_SPACE_HINT)


def not_writable_error(directory: str | os.PathLike, path: str | os.PathLike, exc: OSError) -> SaganError:
    directory = Path(directory)
    while not directory.exists() and directory != directory.parent:  # name the one that refused
        directory = directory.parent
    return SaganError(f"{directory}: directory is not writable ({exc.strerror}), so {path} cannot be written",
                      hint=NOT_WRITABLE_HINT)


def _free_bytes(directory: Path) -> int:
    try:
        stat = os.statvfs(directory)
    except OSError:
        return LOW_SPACE_BYTES  # unknown: never guess a full disk
    return stat.f_bavail * stat.f_frsize


def write_error(exc: BaseException, path: str | os.PathLike) -> SaganError | None:
    """The one-line error for `exc` raised while writing `path` when the disk is full, else None."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        return no_space_error(path)
    if isinstance(exc, RuntimeError) and _free_bytes(Path(path).parent) < LOW_SPACE_BYTES:
        return no_space_error(path)
    return None


def _placing_error(exc: OSError, path: Path) -> SaganError | None:
    """The one-line error for `exc` raised while creating a temporary beside `path` or renaming it."""
    if exc.errno in NO_SPACE:
        return no_space_error(path)
    if exc.errno in NOT_WRITABLE:
        return not_writable_error(path.parent, path, exc)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except (OSError, OverflowError, ValueError):  # not a usable PID: no live writer owns it
        return False
    return True


def _remove_stale(path: Path, prefix: str, suffix: str) -> None:
    """Remove the temporaries of `path` that no live writer owns (see the module docstring).

    Matches `PREFIX PID.RANDOM SUFFIX`, and `PREFIX RANDOM SUFFIX` as made before temporaries
    carried their writer's PID; RANDOM is tempfile's 8 characters. Other targets' never match.
    """
    pattern = re.compile(re.escape(prefix) + r"(?:(\d+)\.)?[a-z0-9_]{8}" + re.escape(suffix))
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if not match:
            continue
        candidate = path.parent / name
        if os.path.abspath(candidate) in _in_use:
            continue
        pid = match.group(1)
        if pid is not None and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                candidate.unlink()


def _new_temp(path: Path, prefix: str, suffix: str, make: Callable[..., str | tuple[int, str]]) -> Path:
    """Create the temporary beside `path` with `make` (tempfile.mkstemp or mkdtemp)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        error = _placing_error(exc, path)
        if error is None:
            raise
        raise error from exc
    _remove_stale(path, prefix, suffix)
    try:
        made = make(prefix=f"{prefix}{os.getpid()}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        error = _placing_error(exc, path)
        if error is None:
            raise
        raise error from exc
    if isinstance(made, tuple):  # mkstemp: (fd, name)
        os.close(made[0])
        made = made[1]
    _in_use.add(os.path.abspath(made))
    return Path(made)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _write_errors_as_one_line(path: Path) -> Iterator[None]:
    """A full disk or an unwritable directory met while the caller writes `path`: one line (write_error)."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        error = write_error(exc, path)
        if error is None:
            raise
        raise error from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps the suffix so that writers that infer the format from it work.
    """
    path = Path(path)
    if path.is_dir():  # checked before the caller's work: a rename onto it would fail only at the end
        raise SaganError(f"{path}: is a directory, so it cannot be written as a file",
                         hint="give the path of the file to write")
    tmp = _new_temp(path, f".{path.stem}.", f".tmp{path.suffix}", tempfile.mkstemp)
    try:
        with _write_errors_as_one_line(path):
            yield tmp
        try:
            if tmp.exists():  # mkstemp creates 0600; give the file the mode a plain open() would
                os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except OSError as exc:
            error = _placing_error(exc, path)
            if error is None:
                raise
            raise error from exc
    finally:
        _in_use.discard(os.path.abspath(tmp))
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` as a whole on success."""
    path = Path(path)
    tmp = _new_temp(path, f".{path.name}.", ".tmp", tempfile.mkdtemp)
    try:
        with _write_errors_as_one_line(path):
            yield tmp
        try:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; give it a plain mkdir's mode
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
            try:
                os.replace(tmp, path)
            except OSError:
                if old is not None:  # put the old output back: the old output or the new, never none
                    with contextlib.suppress(OSError):
                        os.replace(old, path)
                raise
        except OSError as exc:
            error = _placing_error(exc, path)
            if error is None:
                raise
            raise error from exc
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        _in_use.discard(os.path.abspath(tmp))
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
