"""The GPU benchmark in one script: the paper's training step in each precision, against the
reference-style loop, Inception for FID, and a DDP run over every GPU of the machine, as one table.

    python benchmarks/gpu.py [--device cuda] [--out gpu-benchmark.md]
    python benchmarks/gpu.py --device cpu --quick     # the same rows, tiny, to test the script

Rows (the paper's params, 64 px, widths 64, batch 64; `--quick`: 32 px, widths 8, batch 8, a few
steps, so that it runs in about a minute on a CPU):
  step fp32 / bf16 / bf16 + channels_last / bf16 + compile: our training step
      (benchmarks/train.py's `ours`), img/s = real images through D per second;
  reference-style loop: benchmarks/train.py's `baseline` (JPEGs in a DataLoader, fp32);
  Inception (FID): uint8 images at the training size through the FID extractor (stand-in weights:
      the official network's architecture and cost, no download), img/s;
  DDP: `torchrun --standalone --nproc_per_node=<GPU count>` (2 CPU ranks on the CPU), the bf16 +
      channels_last step for 200 steps (`--quick`: 4), img/s over all ranks.
Peak memory is torch.cuda.max_memory_allocated per row on a GPU (the DDP row: rank 0's); the CPU
has no per-row figure. Any configuration that fails stops the script with its error and a non-zero
exit status: no row is skipped. The table is printed and written to `--out`. Aim: under 8 minutes
on one GPU (the compile row's compilation is most of it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train as train_bench  # noqa: E402  (benchmarks/train.py)

from sagan.device import resolve_device  # noqa: E402
from sagan.metrics.extractor import extract_features, load_extractor, standin_weights  # noqa: E402
from sagan.params import Params  # noqa: E402
from sagan.train import dist  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STEPS = {"fp32": {"train": {"precision": "fp32", "channels_last": False}},
         "bf16": {"train": {"precision": "bf16", "channels_last": False}},
         "bf16 + channels_last": {"train": {"precision": "bf16", "channels_last": True}},
         "bf16 + compile": {"train": {"precision": "bf16", "channels_last": False, "compile": True}}}
DDP_STEP = "bf16 + channels_last"
COMPILED_STEP = "bf16 + compile"


@dataclasses.dataclass(frozen=True)
class Setup:
    size: int
    model: dict  # model param changes
    batch: int
    steps: int
    warmup: int
    ddp_steps: int
    inception_images: int


FULL = Setup(size=64, model={}, batch=64, steps=20, warmup=5, ddp_steps=200, inception_images=2000)
QUICK = Setup(size=32, model={"z_dim": 16, "g_channels": 8, "d_channels": 8}, batch=8, steps=2, warmup=1,
              ddp_steps=4, inception_images=16)


def step_params(setup: Setup, name: str) -> Params:
    return train_bench.with_changes(Params(), {"model": setup.model, "train": {"batch_size": setup.batch}},
                                    STEPS[name])


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}" if device.type == "cuda" else "-"


def inception_ips(setup: Setup, device: torch.device) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        extractor = load_extractor(standin_weights(Path(tmp)), device)
    images = torch.randint(0, 256, (setup.inception_images, 3, setup.size, setup.size), dtype=torch.uint8)
    batch = Params().fid.batch_size
    extract_features(extractor, images[:batch])  # warm-up: cuDNN's algorithm search
    train_bench.sync(device)
    start = time.perf_counter()
    for first in range(0, len(images), batch):
        extract_features(extractor, images[first:first + batch])
    train_bench.sync(device)
    return len(images) / (time.perf_counter() - start)


def ddp_worker(args: argparse.Namespace) -> None:
    """One torchrun rank: `args.ddp_steps` timed steps of DDP_STEP; rank 0 writes img/s to args.ddp_out."""
    setup = QUICK if args.quick else FULL
    ctx = dist.init(args.device)
    params = step_params(setup, DDP_STEP)
    _, run, _ = train_bench.make_step(params, setup.size, ctx)
    for step in range(setup.warmup):
        run(step)
    dist.barrier(ctx)
    peak_reset(ctx.device)
    start = time.perf_counter()
    metric_sum = sum(run(step) for step in range(setup.ddp_steps))
    metric_sum.tolist()
    dist.barrier(ctx)
    seconds = time.perf_counter() - start
    if ctx.is_main:
        images = ctx.world_size * setup.ddp_steps * params.train.n_critic * params.train.batch_size
        Path(args.ddp_out).write_text(json.dumps({"ips": images / seconds, "ms": 1000 * seconds / setup.ddp_steps,
                                                  "peak": peak_gib(ctx.device), "ranks": ctx.world_size}))
    dist.shutdown(ctx)


def ddp_row(args: argparse.Namespace, device: torch.device) -> tuple:
    ranks = torch.cuda.device_count() if device.type == "cuda" else 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", f"--nproc_per_node={ranks}",
               __file__, "--ddp-worker", "--device", device.type, "--ddp-out", str(out)] + (["--quick"] * args.quick)
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // ranks))}
        subprocess.run(cmd, check=True, env=env)  # a failed rank fails the script
        result = json.loads(out.read_text())
    setup = QUICK if args.quick else FULL
    return (f"DDP, {DDP_STEP}, {result['ranks']} ranks, {setup.ddp_steps} steps", result["ms"], result["ips"],
            result["peak"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: tests the script")
    parser.add_argument("--out", default="gpu-benchmark.md", help="where the table is written")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ddp-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_worker:
        return ddp_worker(args)
    setup = QUICK if args.quick else FULL
    device = resolve_device(args.device)
    started = time.perf_counter()
    header = (f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'} "
              f"(x{torch.cuda.device_count() if device.type == 'cuda' else 1}), torch {torch.__version__}, "
              f"{setup.size} px, batch {setup.batch}, {setup.steps} timed steps after {setup.warmup}"
              f"{', quick' if args.quick else ''}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(header, flush=True)
    rows = []

    def step_row(name: str) -> None:
        peak_reset(device)
        step_s, ips, _ = train_bench.ours(step_params(setup, name), setup.size, device, setup.steps, setup.warmup)
        rows.append((f"step, {name}", 1000 * step_s, ips, peak_gib(device)))
        print(rows[-1], flush=True)

    for name in STEPS:
        if name != COMPILED_STEP:
            step_row(name)
    with tempfile.TemporaryDirectory() as tmp:
        train_bench.write_jpegs(Path(tmp), 2 * setup.batch)
        peak_reset(device)
        step_s, ips = train_bench.baseline(step_params(setup, "fp32"), setup.size, device, setup.steps,
                                           setup.warmup, Path(tmp))
        rows.append(("reference-style loop, fp32", 1000 * step_s, ips, peak_gib(device)))
        print(rows[-1], flush=True)
    peak_reset(device)
    rows.append((f"Inception (FID), batch {Params().fid.batch_size}", float("nan"), inception_ips(setup, device),
                 peak_gib(device)))
    print(rows[-1], flush=True)
    rows.append(ddp_row(args, device))
    print(rows[-1], flush=True)
    step_row(COMPILED_STEP)  # last: the slowest row, and the one most likely to fail
    table = [header, "", "| what | ms per step | img/s | x fp32 step | peak GiB |", "|---|---|---|---|---|"]
    fp32_ips = rows[0][2]
    for what, ms, ips, peak in rows:
        ms_text = "-" if ms != ms else f"{ms:.1f}"
        ratio = "-" if what.startswith("Inception") else f"{ips / fp32_ips:.2f}"
        table.append(f"| {what} | {ms_text} | {ips:.1f} | {ratio} | {peak} |")
    table.append(f"\ntotal {time.perf_counter() - started:.0f} s")
    text = "\n".join(table) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
