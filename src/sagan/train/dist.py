"""The torchrun/DDP context: which rank we are, which device we train on.

`torchrun --nproc_per_node N -m sagan train` sets RANK/WORLD_SIZE/LOCAL_RANK; without them the
stage runs as a single process (world size 1). Backend: NCCL on GPUs, gloo on CPU.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from sagan.device import resolve_device


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files, draws the progress bar and logs to MLflow."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launch_ranks(nproc_per_node: int, argv: list[str]) -> int | None:
    """`train.nproc_per_node` > 1 in a process that torchrun did not start: run `sagan ARGV` as that
    many torchrun ranks on this node (`--standalone`), each with an equal share of this process's
    threads, and return their exit status; None where this process is to train itself. One launch
    path for `dvc repro`, the Snakemake rule and a shell alike."""
    if nproc_per_node == 1 or "WORLD_SIZE" in os.environ:
        return None
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // nproc_per_node))}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", f"--nproc_per_node={nproc_per_node}", "-m", "sagan", *argv]
    print(f"sagan train: {nproc_per_node} ranks: {' '.join(cmd)}", flush=True)
    return subprocess.call(cmd, env=env)


def init(device_name: str) -> DistContext:
    """Join the process group when launched by torchrun; otherwise a world of one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank, param="train.device")
    if world_size > 1 and not torch_dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world_size, device=device)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def all_reduce_mean(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over ranks (in place); the identity in a world of one."""
    if ctx.distributed:
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
        tensor /= ctx.world_size
    return tensor


def all_reduce_max(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise max of `tensor` over ranks (in place); the identity in a world of one."""
    if ctx.distributed:
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
    return tensor


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        torch_dist.barrier()
