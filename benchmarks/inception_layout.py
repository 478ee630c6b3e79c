"""InceptionV3 feature throughput on the CPU: NCHW (torch-fidelity's default) vs channels_last.

    python benchmarks/inception_layout.py [--images 64] [--batch-size 16 32] [--repeats 3]

`sagan.metrics.extractor.load_extractor` converts the extractor to channels_last on the CPU; this
measures why. Both layouts get the same stand-in weights and the same uint8 32 px images (upsampled
to 299 inside the extractor, as in every FID here), and the script checks that their features
agree to float32 rounding. Each figure is the best of --repeats passes after one warm-up batch.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sagan.metrics.extractor import extract_features, load_extractor, resolve_weights


def best_rate(extractor, images: torch.Tensor, batch_size: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(images), batch_size):
            extract_features(extractor, images[i:i + batch_size])
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        weights = resolve_weights("standin", standin_dir=Path(tmp))
        channels_last = load_extractor(weights, torch.device("cpu")).eval()
        # a second copy: Module.to(memory_format=...) converts in place
        nchw = load_extractor(weights, torch.device("cpu")).eval().to(memory_format=torch.contiguous_format)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8)
    warm = images[:4]
    diff = (extract_features(nchw, warm) - extract_features(channels_last, warm)).abs().max().item()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images, "
          f"best of {args.repeats}; max |feature difference| {diff:.1e}")
    print("| batch | NCHW img/s | channels_last img/s | ratio |")
    print("|---:|---:|---:|---:|")
    for bs in args.batch_size:
        a = best_rate(nchw, images, bs, args.repeats)
        b = best_rate(channels_last, images, bs, args.repeats)
        print(f"| {bs} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
