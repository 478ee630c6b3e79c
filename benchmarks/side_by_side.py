"""Two torch processes side by side on a small machine: what OpenMP's idle spinning costs.

    python benchmarks/side_by_side.py [--images 64] [--batch-size 16]

The test session runs the DVC and Snakemake pipelines beside each other and beside the unit tests
(tests/conftest.py), so several torch processes share the cores. Each process here pushes the same
uint8 images through the stand-in Inception extractor (the heaviest stage work in the smoke
pipeline) and reports its wall and CPU seconds, in five set-ups:

- one process alone, default OpenMP settings (the baseline), and with OMP_WAIT_POLICY=PASSIVE;
- two processes at once, default settings (idle OpenMP threads spin);
- two processes at once, OMP_WAIT_POLICY=PASSIVE (idle threads sleep; what the tests set);
- two processes at once, OMP_NUM_THREADS=1 each.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = """
import json, sys, tempfile, time
from pathlib import Path
import torch
from sagan.metrics.extractor import extract_features, load_extractor, resolve_weights
n, bs = int(sys.argv[1]), int(sys.argv[2])
with tempfile.TemporaryDirectory() as tmp:
    extractor = load_extractor(resolve_weights("standin", standin_dir=Path(tmp)), torch.device("cpu")).eval()
torch.manual_seed(0)
images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
extract_features(extractor, images[:4])  # warm-up
wall, cpu = time.perf_counter(), time.process_time()
for i in range(0, n, bs):
    extract_features(extractor, images[i:i + bs])
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}))
"""

SETUPS = [  # (label, processes, extra environment)
    ("one process alone (baseline)", 1, {}),
    ("one process alone, OMP_WAIT_POLICY=PASSIVE", 1, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("two at once, default", 2, {}),
    ("two at once, OMP_WAIT_POLICY=PASSIVE", 2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("two at once, OMP_NUM_THREADS=1", 2, {"OMP_NUM_THREADS": "1"}),
]


def run_setup(processes: int, extra_env: dict, images: int, batch_size: int) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(extra_env)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(images), str(batch_size)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    return [json.loads(p.communicate()[0]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    print(f"{os.cpu_count()} cores; {args.images} images per process, batch {args.batch_size}")
    print("| set-up | wall s per process | CPU s per process | wall vs alone |")
    print("|---|---:|---:|---:|")
    alone = None
    for label, processes, extra_env in SETUPS:
        results = run_setup(processes, extra_env, args.images, args.batch_size)
        wall = max(r["wall"] for r in results)
        cpu = sum(r["cpu"] for r in results) / len(results)
        alone = alone or wall
        print(f"| {label} | {wall:.1f} | {cpu:.1f} | {wall / alone:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
