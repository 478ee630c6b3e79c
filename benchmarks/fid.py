"""Throughput and peak memory of `sagan evaluate` against torch-fidelity's own `calculate_metrics`.

    python benchmarks/fid.py [--samples 200 1000] [--batch-size 50] [--device cpu]

Both sides do the same work: draw N images from the same untrained smoke generator (32 px),
convert them to uint8, run them through torch-fidelity's InceptionV3 with the same stand-in
weights, and compute FID against the same reference statistics (read from reference.npz by us,
from torch-fidelity's stats cache by it; mu = 0, sigma = I: the reference content does not change
the cost). FID only (KID off on both sides). torch-fidelity gets the generator as its
GenerativeModelBase input (GenerativeModelModuleWrapper), so it samples and extracts itself.

Each (implementation, N) runs in a fresh subprocess that reports its wall time and its peak RSS
(getrusage ru_maxrss). Fixed costs (loading the weights, FID's 2048x2048 eigendecomposition) do not
grow with N, so the script also reports the marginal rate between the smallest and largest N,
(N2 - N1) / (t2 - t1), and the peak-memory growth from N1 to N2: ours streams features into
float64 moments, torch-fidelity keeps every feature (N x 2048 float32) and concatenates them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REFERENCE_CACHE_NAME = "sagan-benchmark-reference"


def _setup(root: Path, device: str) -> None:
    """Generator, reference.npz and torch-fidelity's stats cache in `root` (the working directory)."""
    import torch
    from sagan import paths
    from sagan.metrics import extractor, reference
    from sagan.model.io import save_generator
    from sagan.model.networks import Generator
    from sagan.profiles import read_profile

    model = read_profile("smoke", REPO).params.model
    torch.manual_seed(0)
    save_generator(paths.RUN.generator, Generator(model, 32), model, 32, ema=False)
    weights = extractor.resolve_weights("standin", standin_dir=REPO / paths.STANDIN_WEIGHTS_DIR)
    mu, sigma = np.zeros(extractor.FEATURE_DIM), np.eye(extractor.FEATURE_DIM)
    reference.write_npz(paths.FID_REFERENCE, {
        "mu": mu, "sigma": sigma, "n": np.array(2), "extractor": np.array(extractor.EXTRACTOR_LABEL),
        "weights_sha256": np.array(weights.sha256), "weights_kind": np.array(weights.kind), "crop": np.array(160),
        "size": np.array(32), "reference_split": np.array("val"), "synthetic_data": np.array(True),
        "kid_features": np.zeros((2, extractor.FEATURE_DIM), np.float32)})
    cache = root / "fidelity_cache"
    cache.mkdir()
    # torch-fidelity's own statistics: np.mean of float32 features (float32), np.cov (float64); dtypes must match
    torch.save({"mu": mu.astype(np.float32), "sigma": sigma},
               cache / f"{REFERENCE_CACHE_NAME}-{extractor.EXTRACTOR_NAME}-stat-fid-{extractor.FEATURE}.pt")


def _ours(n: int, batch_size: int, device: str) -> float:
    from sagan import paths
    from sagan.metrics import evaluate
    from sagan.profiles import read_profile

    params = read_profile("smoke", REPO).params
    params = dataclasses.replace(params, fid=dataclasses.replace(
        params.fid, weights="standin", num_samples=n, batch_size=batch_size, kid=False, device=device))
    return evaluate.evaluate(params, paths.RUN.generator)["fid"]


def _torch_fidelity(root: Path, n: int, batch_size: int, device: str) -> float:
    import torch
    import torch_fidelity
    from sagan import paths
    from sagan.metrics import extractor
    from sagan.pixels import to_uint8
    from sagan.model.io import load_generator

    generator, config = load_generator(paths.RUN.generator, device)

    class Uint8Generator(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.generator = generator

        def forward(self, z):
            return to_uint8(self.generator(z))

    wrapped = torch_fidelity.GenerativeModelModuleWrapper(Uint8Generator(), int(config["z_dim"]), "normal", 0)
    weights = extractor.resolve_weights("standin", standin_dir=REPO / paths.STANDIN_WEIGHTS_DIR)
    metrics = torch_fidelity.calculate_metrics(
        input1=wrapped, input1_model_num_samples=n, input2=REFERENCE_CACHE_NAME,
        input2_cache_name=REFERENCE_CACHE_NAME, cache_root=str(root / "fidelity_cache"), fid=True,
        cuda=device.startswith("cuda"), batch_size=batch_size, feature_extractor_weights_path=str(weights.path),
        verbose=False)
    return metrics["frechet_inception_distance"]


def child(impl: str, n: int, batch_size: int, device: str) -> dict:
    import os

    root = Path(tempfile.mkdtemp(prefix="sagan-fid-bench-"))
    os.chdir(root)
    _setup(root, device)
    start = time.perf_counter()
    fid = _ours(n, batch_size, device) if impl == "ours" else _torch_fidelity(root, n, batch_size, device)
    wall = time.perf_counter() - start
    return {"impl": impl, "n": n, "wall_s": round(wall, 2), "img_per_s": round(n / wall, 2), "fid": fid,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.batch_size, args.device)))
        return
    results = []
    for n in args.samples:
        for impl in ("torch-fidelity", "ours"):
            out = subprocess.run([sys.executable, __file__, "--child", impl, str(n), "--batch-size",
                                  str(args.batch_size), "--device", args.device],
                                 capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    lo, hi = min(args.samples), max(args.samples)
    print("\n| impl | N | wall s | img/s | peak RSS MB | FID |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['impl']} | {r['n']} | {r['wall_s']} | {r['img_per_s']} | {r['peak_rss_mb']} | {r['fid']:.4f} |")
    if lo != hi:
        for impl in ("torch-fidelity", "ours"):
            small, large = (next(r for r in results if r["impl"] == impl and r["n"] == n) for n in (lo, hi))
            print(f"{impl}: marginal {(hi - lo) / (large['wall_s'] - small['wall_s']):.2f} img/s, "
                  f"peak RSS {large['peak_rss_mb'] - small['peak_rss_mb']:+.1f} MB from N={lo} to N={hi}")


if __name__ == "__main__":
    main()
