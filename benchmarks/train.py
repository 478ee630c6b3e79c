"""Images/s of one training step: ours against a loop written the way reference implementations train.

    python benchmarks/train.py [--steps 5] [--warmup 2] [--repeats 2] [--images 512] [--device auto]
                               [--configs smoke paper]

Configs: `smoke` (32 px, the smoke profile's widths) and `paper` (64 px, the paper's: widths 64,
batch 64). Both loops train the same networks with the same losses (bce + gradient penalty):
  ours:     `sagan.train.step.GanTrainer`, the training split as uint8 on the device, batches
            gathered by a device permutation and normalised there, metrics kept on the device
            (one sync at the end), params' precision and channels_last;
  baseline: torchvision ImageFolder over 178x218 JPEGs with CenterCrop(160) + Resize + ToTensor +
            Normalize in a DataLoader (workers = cores, pinned memory), `.item()` on both losses
            every step, fp32, contiguous NCHW.
Images/s counts real images through D per second (n_critic x batch per step). "data %" is the
share of our step spent gathering and normalising the batch (timed alone).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from sagan.data.synthetic import draw_face
from sagan.model import losses
from sagan.model.networks import Discriminator, Generator
from sagan.params import Params
from sagan.profiles import read_profile
from sagan.train.dist import DistContext, resolve_device
from sagan.train.step import GanTrainer, to_model_input

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("smoke", "paper")  # profiles (configs/*.yaml; paper = the defaults)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_jpegs(root: Path, n: int) -> None:
    folder = root / "faces"
    folder.mkdir(parents=True)
    for i in range(n):
        draw_face(0, i).save(folder / f"{i + 1:06d}.jpg", quality=95)


def ours(params: Params, size: int, device: torch.device, steps: int, warmup: int) -> tuple[float, float]:
    """(images/s, share of the step spent on the data path)."""
    train = params.train
    trainer = GanTrainer(params.model, train, size, DistContext(0, 1, device))
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

    metric_sum = torch.zeros(5, device=device)
    for step in range(warmup):
        metric_sum += trainer.step(batches(step), draw_z, noise)
    sync(device)
    start = time.perf_counter()
    for step in range(steps):
        metric_sum += trainer.step(batches(step), draw_z, noise)
    metric_sum.tolist()  # the one sync
    step_s = (time.perf_counter() - start) / steps

    start = time.perf_counter()
    for step in range(steps):
        for batch in batches(step):
            to_model_input(batch, train.channels_last)
    sync(device)
    data_s = (time.perf_counter() - start) / steps
    return train.n_critic * train.batch_size / step_s, data_s / step_s


def baseline(params: Params, size: int, device: torch.device, steps: int, warmup: int, image_root: Path) -> float:
    """The reference-implementation loop: JPEG decode + transforms per step, .item() per step, fp32."""
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
    return train.batch_size / ((time.perf_counter() - start) / steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--images", type=int, default=512, help="JPEGs for the baseline's ImageFolder")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of both loops; best kept")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), args.images)
        rows = []
        for name in args.configs:
            params = read_profile(name, REPO).params
            size = 32 if name == "smoke" else 64
            ours_ips = base_ips = data_share = 0.0
            for _ in range(args.repeats):  # alternate the two loops; keep the best of each
                ips, share = ours(params, size, device, args.steps, args.warmup)
                if ips > ours_ips:
                    ours_ips, data_share = ips, share
                base_ips = max(base_ips, baseline(params, size, device, args.steps, args.warmup, Path(tmp)))
            rows.append((name, size, params.train.batch_size, ours_ips, base_ips, data_share))
    print("| config | px | batch | ours img/s | baseline img/s | speed-up | data % of our step |")
    print("|---|---|---|---|---|---|---|")
    for name, size, batch, ours_ips, base_ips, share in rows:
        print(f"| {name} | {size} | {batch} | {ours_ips:.1f} | {base_ips:.1f} | {ours_ips / base_ips:.2f}x | "
              f"{100 * share:.1f}% |")


if __name__ == "__main__":
    main()
