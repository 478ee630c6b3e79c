"""Images/s of one training step: ours against a loop written the way reference implementations train,
and the cost of variants of our step as a ratio to the config's own eager fp32 step.

    python benchmarks/train.py [--steps 5] [--warmup 2] [--repeats 2] [--images 512] [--device auto]
                               [--configs smoke paper] [--variants eager before ...] [--profile]

Configs: `smoke` (32 px, the smoke profile's widths and batch 16), `paper-32` (the paper's params
at 32 px with widths 32, batch 64) and `paper` (64 px, the paper's: widths 64, batch 64). Both
loops train the same networks with the same losses (bce + gradient penalty):
  ours:     `sagan.train.step.GanTrainer`, the training split as uint8 on the device, batches
            gathered by a device permutation and normalised there, metrics kept on the device
            (one sync at the end), params' precision and channels_last;
  baseline: torchvision ImageFolder over 178x218 JPEGs with CenterCrop(160) + Resize + ToTensor +
            Normalize in a DataLoader (workers = cores, pinned memory), `.item()` on both losses
            every step, fp32, contiguous NCHW.
Variants of our step (VARIANTS): `eager` is the config's params as they are (the reference of the
"x eager" column: the paper's eager fp32 step for `paper`); `before` is the same step with the
attention's forward of git revision `--before` (default: the last before issue 27, which put it
on scaled_dot_product_attention and one fused projection); the others change params.
A `gp_every` k variant is timed over whole periods of k steps (its cost is an average).
Each round runs every variant and the baseline once, alternating; the best of `--repeats` rounds
is kept, so that the ratios come from one run on one machine under the same load.
Images/s counts real images through D per second (n_critic x batch per step). "data %" is the
share of our step spent gathering and normalising the batch (timed alone). `--profile` prints
torch.profiler's top 10 ops (self CPU time) of the eager and before steps of each config.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from sagan.data.synthetic import draw_face
from sagan.model import losses
from sagan.model.attention import SelfAttention
from sagan.model.networks import Discriminator, Generator
from sagan.params import Params, parse_params
from sagan.profiles import read_profile
from sagan.train.dist import DistContext, resolve_device
from sagan.train.step import GanTrainer, to_model_input

REPO = Path(__file__).resolve().parents[1]
# config -> (profile, image size, param changes)
CONFIGS = {"smoke": ("smoke", 32, {}),
           "paper-32": ("paper", 32, {"model": {"g_channels": 32, "d_channels": 32}}),
           "paper": ("paper", 64, {})}
IMPROVED = read_profile("improved", REPO).changes
BEFORE = "94b9ec9841d256672c3683b084ae81380e9eb8ef"  # attention.py's last commit before issue 27
# variant -> param changes; `before` also swaps in the attention forward of `--before`
VARIANTS = {"eager": {}, "before": {}, "no-attention": {"model": {"attention": False}},
            "no-gp": {"train": {"gp_lambda": 0.0}}, "gp4": {"train": {"gp_every": 4}},
            "gp16": {"train": {"gp_every": 16}},
            "improved": {"model": IMPROVED["model"], "train": IMPROVED["train"]},
            "channels-first": {"train": {"channels_last": False}}, "bf16": {"train": {"precision": "bf16"}},
            "compile": {"train": {"compile": True}}}
DEFAULT_VARIANTS = ("eager", "before", "no-attention", "no-gp", "gp4", "gp16", "improved")


def with_changes(params: Params, *changes: dict) -> Params:
    """`params` with the sections in each of `changes` updated, validated like a params file."""
    raw = dataclasses.asdict(params)
    for change in changes:
        for section, values in change.items():
            raw[section] = {**raw[section], **values}
    return parse_params(raw, where="benchmark variant")


def config_params(config: str, variant: str) -> tuple[Params, int]:
    profile, size, changes = CONFIGS[config]
    return with_changes(read_profile(profile, REPO).params, changes, VARIANTS[variant]), size


def variant_context(variant: str, before: str):
    """For `before`: SelfAttention.forward as of git revision `before` (the module's attributes are
    the same), patched in for the duration; a no-op for the other variants."""
    if variant != "before":
        return contextlib.nullcontext()
    path = "src/sagan/model/attention.py"
    source = subprocess.run(["git", "show", f"{before}:{path}"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout
    namespace: dict = {"__name__": f"attention_{before[:8]}"}
    exec(compile(source, f"{before}:{path}", "exec"), namespace)
    return mock.patch.object(SelfAttention, "forward", namespace["SelfAttention"].forward)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_jpegs(root: Path, n: int) -> None:
    folder = root / "faces"
    folder.mkdir(parents=True)
    for i in range(n):
        draw_face(0, i).save(folder / f"{i + 1:06d}.jpg", quality=95)


def make_step(params: Params, size: int, ctx: DistContext):
    """(trainer, run(step) -> metrics, batches(step)) of our loop on random uint8 data on `ctx.device`."""
    train, device = params.train, ctx.device
    trainer = GanTrainer(params.model, train, size, ctx)
    data = torch.randint(0, 256, (max(4096, train.batch_size * train.n_critic), size, size, 3),
                         dtype=torch.uint8, device=device)
    perm_gen = torch.Generator(device).manual_seed(0)
    noise = torch.Generator(device).manual_seed(1)
    permutation = torch.randperm(len(data), generator=perm_gen, device=device)

    def batches(step: int) -> list[torch.Tensor]:
        first = step * train.n_critic * train.batch_size % (len(data) - train.n_critic * train.batch_size + 1)
        return [data[permutation[first + k * train.batch_size:first + (k + 1) * train.batch_size]]
                for k in range(train.n_critic)]

    def draw_z() -> torch.Tensor:
        return torch.randn(train.batch_size, params.model.z_dim, generator=noise, device=device)

    return trainer, lambda step: trainer.step(batches(step), draw_z, noise), batches


def ours(params: Params, size: int, device: torch.device, steps: int, warmup: int,
         context=contextlib.nullcontext()) -> tuple[float, float, float]:
    """(seconds per step, images/s, share of the step spent on the data path)."""
    train = params.train
    trainer, run, batches = make_step(params, size, DistContext(0, 1, device))
    metric_sum = torch.zeros(5, device=device)
    with context:
        for step in range(warmup):
            metric_sum += run(step)
        sync(device)
        trainer.d_updates = 0  # the timed steps hold whole gp_every periods, the penalty's first
        steps = math.ceil(steps / train.gp_every) * train.gp_every
        start = time.perf_counter()
        for step in range(steps):
            metric_sum += run(step)
        metric_sum.tolist()  # the one sync
    step_s = (time.perf_counter() - start) / steps

    start = time.perf_counter()
    for step in range(steps):
        for batch in batches(step):
            to_model_input(batch, train.channels_last)
    sync(device)
    data_s = (time.perf_counter() - start) / steps
    return step_s, train.n_critic * train.batch_size / step_s, data_s / step_s


def profile_table(params: Params, size: int, device: torch.device, steps: int, warmup: int,
                  context=contextlib.nullcontext()) -> str:
    """torch.profiler's top 10 ops by self time over `steps` steps of our loop, after `warmup`."""
    from torch.profiler import ProfilerActivity, profile

    _, run, _ = make_step(params, size, DistContext(0, 1, device))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with context:
        for step in range(warmup):
            run(step)
        sync(device)
        with profile(activities=activities) as prof:
            for step in range(steps):
                run(step)
            sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=10)


def baseline(params: Params, size: int, device: torch.device, steps: int, warmup: int,
             image_root: Path) -> tuple[float, float]:
    """(seconds per step, images/s) of the reference-implementation loop: JPEG decode + transforms
    per step, .item() per step, fp32."""
    train, model = params.train, params.model
    torch.manual_seed(0)
    G, D = Generator(model, size).to(device), Discriminator(model, size).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=train.lr_g, betas=(train.beta1, train.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=train.lr_d, betas=(train.beta1, train.beta2))
    dataset = datasets.ImageFolder(str(image_root), transforms.Compose([
        transforms.CenterCrop(160), transforms.Resize(size), transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]))
    loader = DataLoader(dataset, batch_size=train.batch_size, shuffle=True, drop_last=True,
                        num_workers=os.cpu_count() or 1, pin_memory=device.type == "cuda", persistent_workers=True)
    done, start, iterator = 0, None, iter(loader)
    while done < warmup + steps:
        if done == warmup:
            sync(device)
            start = time.perf_counter()
        try:
            real, _ = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            real, _ = next(iterator)
        real = real.to(device)
        fake = G(torch.randn(train.batch_size, model.z_dim, device=device))
        d = losses.d_loss(train.loss, D(real), D(fake.detach())) + train.gp_lambda * losses.gradient_penalty(D, real, fake)
        opt_d.zero_grad()
        d.backward()
        opt_d.step()
        g = losses.g_loss(train.loss, D(G(torch.randn(train.batch_size, model.z_dim, device=device))))
        opt_g.zero_grad()
        g.backward()
        opt_g.step()
        print(f"\r  baseline step {done}: d {d.item():.3f} g {g.item():.3f}", end="", flush=True)
        done += 1
    sync(device)
    print()
    step_s = (time.perf_counter() - start) / steps
    return step_s, train.batch_size / step_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--images", type=int, default=512, help="JPEGs for the baseline's ImageFolder")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds of all loops; best kept")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--configs", nargs="+", default=["smoke", "paper"], choices=list(CONFIGS))
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS),
                        help="of our step; `eager` (the reference of the ratios) is always run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the reference-style loop")
    parser.add_argument("--before", default=BEFORE, help="git revision of the `before` variant's attention")
    parser.add_argument("--profile", action="store_true", help="print the top 10 ops of eager and before")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    variants = ["eager", *[v for v in args.variants if v != "eager"]]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.steps} timed steps after {args.warmup} warm-up, best of {args.repeats} alternating rounds")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), args.images)
        for config in args.configs:
            best: dict[str, tuple[float, float, float]] = {}
            for _ in range(args.repeats):  # alternate all loops; keep the best of each
                for variant in variants:
                    params, size = config_params(config, variant)
                    result = ours(params, size, device, args.steps, args.warmup, variant_context(variant, args.before))
                    if variant not in best or result[0] < best[variant][0]:
                        best[variant] = result
                if not args.no_baseline:
                    params, size = config_params(config, "eager")
                    step_s, ips = baseline(params, size, device, args.steps, args.warmup, Path(tmp))
                    if "baseline" not in best or step_s < best["baseline"][0]:
                        best["baseline"] = (step_s, ips, float("nan"))
            params, size = config_params(config, "eager")
            rows += [(config, size, params.train.batch_size, name, *best[name]) for name in best]
            if args.profile:
                for variant in ("eager", "before"):
                    print(f"\n{config}, {variant}: top 10 ops over {args.steps} steps")
                    print(profile_table(*config_params(config, variant), device, args.steps, args.warmup,
                                        variant_context(variant, args.before)))
    print("| config | px | batch | step | ms per step | x eager | img/s | data % of our step |")
    print("|---|---|---|---|---|---|---|---|")
    eager = {config: step_s for config, _, _, name, step_s, _, _ in rows if name == "eager"}
    for config, size, batch, name, step_s, ips, share in rows:
        data = "-" if math.isnan(share) else f"{100 * share:.1f}%"
        print(f"| {config} | {size} | {batch} | {name} | {1000 * step_s:.0f} | {step_s / eager[config]:.2f} | "
              f"{ips:.1f} | {data} |")


if __name__ == "__main__":
    main()
