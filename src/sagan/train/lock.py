"""One `sagan train` per run at a time: an exclusive lock on the run's models/.train.lock for the whole run.

The lock is an fcntl.flock taken without waiting, so a second run stops at once with one line that
names the first one's PID (the lock file holds the owner's PID and start time). The OS releases it
when the owner's process ends, however it ends (kill -9 included), so a stale lock file never blocks
anyone. Under torchrun only rank 0 takes it, before any rank writes: the ranks of one run never
block each other, and rank 0's failure stops every rank.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

import torch

from sagan.errors import SaganError
from sagan.train import dist
from sagan.train.dist import DistContext

LOCK_NAME = ".train.lock"  # in the run's models/ directory


def _owner(fd: int) -> str:
    """The PID the lock file names ("unknown" while its owner has yet to write it)."""
    for _ in range(20):
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
        if text:
            return text[0]
        time.sleep(0.05)
    return "unknown"


def acquire(path: Path) -> int:
    """Take the lock (its file descriptor), or raise SaganError naming the process that holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _owner(fd)
        os.close(fd)
        raise SaganError(f"another `sagan train` (pid {pid}) is running in this project (it holds {path})",
                         hint="wait for it to finish, or stop it; two runs would write the same checkpoints "
                              "and outputs") from None
    except OSError as exc:  # a filesystem without locks
        os.close(fd)
        raise SaganError(f"{path}: cannot take the training lock ({exc.strerror or exc})") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode(), 0)
    return fd


def release(fd: int) -> None:
    """Unlock and close (the file stays: removing it would let a third run lock another inode)."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def exclusive(ctx: DistContext, models_dir: Path) -> Iterator[None]:
    """Hold the run's training lock for the block: rank 0 takes it; every rank learns whether it did."""
    path = Path(models_dir) / LOCK_NAME
    fd, error = None, None
    if ctx.is_main:
        try:
            fd = acquire(path)
        except SaganError as exc:
            error = exc
    try:
        if ctx.distributed:  # the other ranks wait here until rank 0 holds the lock, or stop with it
            failed = dist.all_reduce_max(ctx, torch.tensor([int(error is not None)], device=ctx.device))
            if failed.item() and error is None:
                error = SaganError(f"another `sagan train` is running in this project (rank 0 could not take {path})")
        if error is not None:
            raise error
        yield
    finally:
        if fd is not None:
            release(fd)
