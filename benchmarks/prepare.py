"""Images/s of `sagan prepare` against the decode floor and the usual ImageFolder loader.

    python benchmarks/prepare.py [--images 4000] [--workers 0] [--zip DIR_WITH_CELEBA_ZIP]

On the same JPEGs (a synthetic CelebA zip of --images faces unless --zip points at a directory
holding img_align_celeba.zip + list_eval_partition.txt) it times, with 1 process and with
--workers processes (0 = all cores):
  (a) decode only with PIL, each process reading its contiguous chunk out of the zip: the floor;
  (b) our `prepare` (decode, crop 160, resize 64, shards, manifest, md5 of the zip);
  (c) the reference implementations' loader: torchvision ImageFolder over the extracted files
      with CenterCrop(160) + Resize(64) + ToTensor, DataLoader(num_workers=cores), one epoch of the
      training split;
then the time `load_split("train")` takes to bring the prepared training split into memory.
Targets (issue): (b) >= 0.8 x (a) on the same cores; load_split >= 50 x faster than one epoch of (c).
Each timing is the best of --repeats runs (wall and CPU time separately), page cache warm for all.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import tempfile
import time
import zipfile
from multiprocessing import Pool
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from sagan import paths
from sagan.data.loader import load_split
from sagan.data.prepare import CHUNK_IMAGES, jpeg_entries, open_celeba_zip, prepare, worker_count
from sagan.data.split import split
from sagan.data.synthetic import write_synthetic_celeba
from sagan.params import PrepareParams, SplitParams

CROP, SIZE = 160, 64


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (pool and DataLoader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds, each the minimum over `repeats` runs: the least disturbed run on a
    shared machine, where other users' load only ever adds time."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), _cpu_seconds()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(_cpu_seconds() - cpu)
    return min(walls), min(cpus)


def _pil_decode_chunk(job: tuple[Path, list[str]]) -> int:
    zip_path, names = job
    with zipfile.ZipFile(zip_path) as zf:
        for name in names:
            Image.open(io.BytesIO(zf.read(name))).load()
    return len(names)


def pil_decode_only(zip_path: Path, names: list[str], workers: int) -> None:
    jobs = [(zip_path, names[i:i + CHUNK_IMAGES]) for i in range(0, len(names), CHUNK_IMAGES)]
    if workers == 1:
        for job in jobs:
            _pil_decode_chunk(job)
        return
    with Pool(workers) as pool:
        sum(pool.imap(_pil_decode_chunk, jobs))


def imagefolder_epoch(root: Path, indices: list[int], workers: int) -> None:
    """One epoch of the loader the reference SAGAN/DCGAN CelebA code uses."""
    tf = transforms.Compose([transforms.CenterCrop(CROP), transforms.Resize(SIZE), transforms.ToTensor()])
    dataset = Subset(datasets.ImageFolder(str(root), transform=tf), indices)
    for _ in DataLoader(dataset, batch_size=64, shuffle=True, num_workers=workers):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000, help="synthetic images (default: %(default)s)")
    parser.add_argument("--zip", type=Path, help="directory with img_align_celeba.zip + list_eval_partition.txt")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    workers = worker_count(args.workers)

    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp_dir:
        tmp = Path(tmp_dir)
        if args.zip:
            zip_path, partition_path = args.zip / paths.RAW_ZIP.name, args.zip / paths.RAW_PARTITION.name
        else:
            zip_path, partition_path = tmp / paths.RAW_ZIP.name, tmp / paths.RAW_PARTITION.name
            write_synthetic_celeba(zip_path, partition_path, args.images, seed=0)
        with open_celeba_zip(zip_path) as zf:
            names = jpeg_entries(zf, zip_path)
            extracted = tmp / "extracted"
            zf.extractall(extracted, members=names)  # ImageFolder: one class dir, img_align_celeba/
        n = len(names)

        # One untimed run: the first call loads libraries (torchvision's codec, pyarrow's writer; ~1 s).
        prepare(zip_path, partition_path, tmp / "prepared", PrepareParams(crop=CROP, size=SIZE, workers=1))
        rows: list[tuple[str, int, int, tuple[float, float]]] = []  # (what, processes, images, (wall, cpu))
        for procs in sorted({1, workers}):
            rows.append(("(a) PIL decode only (floor)", procs, n,
                         best_time(lambda: pil_decode_only(zip_path, names, procs), args.repeats)))
            p = PrepareParams(crop=CROP, size=SIZE, workers=procs)
            rows.append(("(b) sagan prepare", procs, n,
                         best_time(lambda: prepare(zip_path, partition_path, tmp / "prepared", p), args.repeats)))

        # The prepared project for load_split: its relative paths, so run from a project root.
        project = tmp / "project"
        shutil.copytree(tmp / "prepared", project / paths.PREPARED_DIR)
        os.chdir(project)
        split(paths.MANIFEST, paths.SPLIT_FILE, SplitParams())
        train = np.flatnonzero(np.array(pq.read_table(paths.SPLIT_FILE).column("split").to_pylist()) == "train")
        epoch = best_time(lambda: imagefolder_epoch(extracted, train.tolist(), workers), args.repeats)
        rows.append(("(c) ImageFolder + DataLoader, 1 epoch of train", workers, len(train), epoch))
        load = best_time(lambda: load_split("train", verify=False), args.repeats)  # the read, not the sha256
        rows.append(("load_split('train') into memory", 1, len(train), load))

    source = str(args.zip) if args.zip else f"synthetic CelebA, {n} JPEGs 178x218"
    print(f"\nData: {source}; crop {CROP} -> {SIZE} px; {os.cpu_count()} cores; best of {args.repeats}\n")
    print("| what | processes | images | wall s | images/s (wall) | CPU ms/image |")
    print("|---|---:|---:|---:|---:|---:|")
    for what, procs, count, (wall, cpu) in rows:
        print(f"| {what} | {procs} | {count} | {wall:.2f} | {count / wall:,.0f} | {cpu * 1000 / count:.3f} |")
    rate = {(what[:3], procs): count / wall for what, procs, count, (wall, _) in rows}
    cpu_per_image = {(what[:3], procs): cpu / count for what, procs, count, (_, cpu) in rows}
    print()
    for procs in sorted({1, workers}):
        print(f"(b)/(a) images/s with {procs} process(es): {rate['(b)', procs] / rate['(a)', procs]:.2f} "
              f"wall, {cpu_per_image['(a)', procs] / cpu_per_image['(b)', procs]:.2f} CPU (target >= 0.8)")
    print(f"one epoch of (c) / load_split('train'): {epoch[0] / load[0]:.0f} x wall (target >= 50)")

if __name__ == "__main__":
    main()
