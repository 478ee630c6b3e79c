"""`sagan prepare`: CelebA's zip -> uint8 NHWC `.npy` shards + `manifest.parquet` (docs/contracts.md).

JPEGs are read straight out of the zip (never extracted), decoded with libjpeg-turbo
(`torchvision.io.decode_jpeg`), centre-cropped to `prepare.crop` and resized to `prepare.size` with
antialiased bilinear interpolation on uint8 (`F.interpolate(..., antialias=True)`), which agrees
with PIL's `Image.resize(BILINEAR)` - what torchvision's `Resize` does on PIL images, i.e. the
reference loaders - within 1 grey level, and is the fastest variant measured (docs/benchmarks.md).

Decoding runs in `prepare.workers` processes; each opens the zip once and decodes contiguous
chunks of the file list, and the results are assembled in file order, so the output is
byte-identical for any number of workers.
"""
from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg
from tqdm import tqdm

from sagan import paths
from sagan.atomic import atomic_dir, write_json
from sagan.data.layout import SHARD_SHA256_KEY, shard_name
from sagan.data.synthetic import is_synthetic_zip
from sagan.digest import file_digest
from sagan.errors import SaganError
from sagan.params import PrepareParams


JPEG_ENTRY = re.compile(r"^img_align_celeba/([^/]+\.jpg)$")
PARTITION_LINE = re.compile(r"^(\S+\.jpg)\s+([012])$")
CHUNK_IMAGES = 256  # images per worker task: large enough to amortise IPC, small enough to balance
ZIP_MAGIC = b"PK\x03\x04"
REDOWNLOAD_HINT = "delete it and run `sagan download` again"
# Ends the reason of an image smaller than the crop: then the param is wrong for the images, not the zip.
CROP_PARAM = "(prepare.crop)"
CROP_HINT = "lower prepare.crop to fit inside the images (CelebA's aligned images are 178x218; the paper crops 160)"


def centre_box(width: int, height: int, crop: int) -> tuple[int, int]:
    """(left, top) of the centre `crop` square, rounded as torchvision's CenterCrop does."""
    return int(round((width - crop) / 2.0)), int(round((height - crop) / 2.0))


def crop_resize(jpeg: bytes, crop: int, size: int) -> np.ndarray:
    """Decode one JPEG, centre-crop it to `crop` and resize to `size`: uint8 (size, size, 3) RGB.

    Raises ValueError for an image that cannot be decoded or is smaller than the crop.
    """
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its codecs for TorchCodec, which this environment lacks;
            # decode_jpeg is still the fastest decoder here (docs/benchmarks.md).
            warnings.simplefilter("ignore", DeprecationWarning)
            # bytearray: a writable buffer, so torch does not warn about sharing read-only memory
            chw = decode_jpeg(torch.frombuffer(bytearray(jpeg), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        raise ValueError(f"undecodable JPEG ({str(exc).splitlines()[-1].strip()})") from exc
    _, height, width = chw.shape
    if width < crop or height < crop:
        raise ValueError(f"{width}x{height} is smaller than the {crop}x{crop} crop {CROP_PARAM}")
    left, top = centre_box(width, height, crop)
    square = chw[:, top:top + crop, left:left + crop].unsqueeze(0)
    # uint8 in, uint8 out: torch's integer antialias path rounds like PIL and is ~2x faster than float
    small = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return small[0].permute(1, 2, 0).numpy()


def open_celeba_zip(path: Path) -> zipfile.ZipFile:
    """Open the raw zip, or raise a one-line error saying how it is broken."""
    paths.require(path)
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise SaganError(f"{path}: empty file, not a zip archive", hint=REDOWNLOAD_HINT)
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        if head.startswith(ZIP_MAGIC):
            raise SaganError(f"{path}: truncated or damaged zip ({path.stat().st_size} bytes; its central "
                             f"directory is unreadable: {exc})", hint=REDOWNLOAD_HINT) from exc
        raise SaganError(f"{path}: not a zip archive (starts with {head[:16]!r})", hint=REDOWNLOAD_HINT) from exc


def jpeg_entries(zf: zipfile.ZipFile, path: Path) -> list[str]:
    """The zip's `img_align_celeba/*.jpg` entry names in file order."""
    names = sorted(n for n in zf.namelist() if JPEG_ENTRY.match(n))
    if not names:
        found = zf.namelist()
        example = f", e.g. {found[0]!r}" if found else ""
        raise SaganError(f"{path}: no img_align_celeba/*.jpg entries ({len(found)} entries{example})",
                         hint="this is not CelebA's img_align_celeba.zip; " + REDOWNLOAD_HINT)
    return names


def read_partition(path: Path, files: list[str]) -> np.ndarray:
    """CelebA partition (0 train, 1 valid, 2 test) of each of `files`, from list_eval_partition.txt."""
    paths.require(path)
    partition: dict[str, int] = {}
    line_of: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        match = PARTITION_LINE.match(line.strip())
        if not match:
            raise SaganError(f"{path}:{lineno}: malformed line {line[:60]!r}, expected '<name>.jpg <0|1|2>'",
                             hint=REDOWNLOAD_HINT)
        name = match.group(1)
        if name in line_of:  # which line would win is a guess: CelebA's file lists each image once
            raise SaganError(f"{path}:{lineno}: duplicate entry for {name} (first on line {line_of[name]})",
                             hint=REDOWNLOAD_HINT)
        line_of[name] = lineno
        partition[name] = int(match.group(2))
    missing = [f for f in files if f not in partition]
    if missing:
        raise SaganError(f"{path}: no partition for {len(missing)} of the zip's {len(files)} images "
                         f"(first: {missing[0]})", hint="the zip and the partition file do not belong together; "
                         + REDOWNLOAD_HINT)
    return np.array([partition[f] for f in files], dtype=np.int8)


class ChunkDecoder:
    """Decodes contiguous ranges of the zip's JPEG entries through one open zip handle."""

    def __init__(self, zip_path: Path, names: list[str], crop: int, size: int):
        self.zf = zipfile.ZipFile(zip_path)
        self.names, self.crop, self.size = names, crop, size

    def decode(self, start: int, stop: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Images [start, stop) that decode, stacked, and (index, reason) for those that do not."""
        images = np.empty((stop - start, self.size, self.size, 3), np.uint8)
        n_good, bad = 0, []
        for index in range(start, stop):
            try:
                images[n_good] = crop_resize(self.zf.read(self.names[index]), self.crop, self.size)
                n_good += 1
            except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:  # bad CRC, bad entry header, bad image
                bad.append((index, str(exc)))
        return images[:n_good], bad


_worker: ChunkDecoder | None = None  # in a pool worker: its decoder, with the zip opened once


def _init_worker(zip_path: Path, names: list[str], crop: int, size: int) -> None:
    global _worker
    torch.set_num_threads(1)  # one process per core already; intra-op threads only oversubscribe
    _worker = ChunkDecoder(zip_path, names, crop, size)


def _decode_in_worker(bounds: tuple[int, int]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    return _worker.decode(*bounds)


def worker_count(requested: int) -> int:
    """`prepare.workers`, with 0 meaning every core this process may use."""
    return requested or len(os.sched_getaffinity(0))


def decode_all(zip_path: Path, names: list[str], crop: int, size: int,
               workers: int) -> Iterator[tuple[np.ndarray, list[tuple[int, str]]]]:
    """Decoded chunks in file order, from `workers` processes (in this process when 1)."""
    chunks = [(i, min(i + CHUNK_IMAGES, len(names))) for i in range(0, len(names), CHUNK_IMAGES)]
    workers = min(workers, len(chunks))
    if workers <= 1:
        # Intra-op threads only add overhead on one small image at a time (~6x slower on a busy
        # 2-core machine); use one, and give the caller its setting back.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        decoder = ChunkDecoder(zip_path, names, crop, size)
        try:
            yield from (decoder.decode(*bounds) for bounds in chunks)
        finally:
            decoder.zf.close()
            torch.set_num_threads(threads)
        return
    with Pool(workers, initializer=_init_worker, initargs=(zip_path, names, crop, size)) as pool:
        yield from pool.imap(_decode_in_worker, chunks)


@dataclass
class ShardWriter:
    """Packs images, in arrival order, into `shard_size`-image .npy files in `out_dir`, and
    records the sha256 of each file it writes (`sha256`, shard index -> hex)."""

    out_dir: Path
    shard_size: int
    image_size: int

    def __post_init__(self):
        self.buffer = np.empty((self.shard_size, self.image_size, self.image_size, 3), np.uint8)
        self.filled = 0
        self.shard = 0
        self.sha256: list[str] = []

    def add(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append `images`; return the (shard, row) of each."""
        shards, rows = np.empty(len(images), np.int32), np.empty(len(images), np.int32)
        done = 0
        while done < len(images):
            take = min(len(images) - done, self.shard_size - self.filled)
            self.buffer[self.filled:self.filled + take] = images[done:done + take]
            shards[done:done + take] = self.shard
            rows[done:done + take] = np.arange(self.filled, self.filled + take)
            self.filled += take
            done += take
            if self.filled == self.shard_size:
                self.flush()
        return shards, rows

    def flush(self) -> None:
        if self.filled:
            path = self.out_dir / shard_name(self.shard)
            np.save(path, self.buffer[:self.filled])
            self.sha256.append(file_digest(path))  # of the bytes on disk, still in the page cache
            self.shard += 1
            self.filled = 0


def _check_bad(bad: list[tuple[int, str]], names: list[str], prepare: PrepareParams, zip_path: Path) -> None:
    n = len(names)
    if len(bad) == n or len(bad) > prepare.max_bad_fraction * n:
        index, reason = bad[0]
        hint = (CROP_HINT if reason.endswith(CROP_PARAM)
                else REDOWNLOAD_HINT + ", or raise prepare.max_bad_fraction to skip them")
        raise SaganError(f"{zip_path}: {len(bad)} of {n} JPEGs are bad ({len(bad) / n:.2%}), more than "
                         f"prepare.max_bad_fraction = {prepare.max_bad_fraction} (first: {names[index]}: {reason})",
                         hint=hint)


def prepare(zip_path: Path, partition_path: Path, out_dir: Path, prepare: PrepareParams) -> dict:
    """Write shards, manifest.parquet and summary.json for the raw zip into `out_dir` (atomically).

    Returns the summary.
    """
    with open_celeba_zip(zip_path) as zf:
        entries = jpeg_entries(zf, zip_path)
    files = [JPEG_ENTRY.match(e).group(1) for e in entries]
    partition = read_partition(partition_path, files)
    synthetic = is_synthetic_zip(zip_path)

    with atomic_dir(out_dir) as tmp:
        writer = ShardWriter(tmp, prepare.shard_size, prepare.size)
        kept, shard_of, row_of, bad = [], [], [], []
        start = 0
        with tqdm(total=len(entries), desc="prepare", unit="img") as progress:
            for images, chunk_bad in decode_all(zip_path, entries, prepare.crop, prepare.size,
                                                worker_count(prepare.workers)):
                bad_indices = {i for i, _ in chunk_bad}
                stop = start + len(images) + len(chunk_bad)
                kept.extend(i for i in range(start, stop) if i not in bad_indices)
                shards, rows = writer.add(images)
                shard_of.append(shards)
                row_of.append(rows)
                bad.extend(chunk_bad)
                progress.update(stop - start)
                start = stop
        if bad:
            _check_bad(bad, files, prepare, zip_path)
        writer.flush()

        kept_idx = np.array(kept, dtype=np.int64)
        metadata = {b"crop": str(prepare.crop).encode(), b"size": str(prepare.size).encode(),
                    b"synthetic": b"true" if synthetic else b"false",
                    b"source_zip_md5": file_digest(zip_path, "md5").encode(),
                    SHARD_SHA256_KEY: json.dumps(writer.sha256).encode()}
        table = pa.table({
            "file": pa.array([files[i] for i in kept], pa.string()),
            "shard": pa.array(np.concatenate(shard_of), pa.int32()),
            "row": pa.array(np.concatenate(row_of), pa.int32()),
            "partition": pa.array(partition[kept_idx], pa.int8()),
        }).replace_schema_metadata(metadata)
        pq.write_table(table, tmp / paths.MANIFEST.name)
        summary = {"n_images": len(kept), "n_bad": len(bad), "bad_files": [files[i] for i, _ in bad],
                   "crop": prepare.crop, "size": prepare.size, "shard_size": prepare.shard_size,
                   "synthetic_data": synthetic}
        write_json(tmp / paths.PREPARE_SUMMARY.name, summary)
    return summary
