"""`sagan prepare`: crop/resize fidelity, worker-count invariance, manifest, and every bad input."""
from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers import write_params
from sagan import cli, paths
from sagan.data.prepare import crop_resize, prepare
from sagan.errors import SaganError
from sagan.params import PrepareParams

SHARD = 64  # 200 images -> shards of 64, 64, 64, 8: covers full and short shards


def _pil_reference(jpeg: bytes, crop: int, size: int) -> np.ndarray:
    """What torchvision's CenterCrop + Resize do on a PIL image, written out with PIL alone.

    Reference choice: bilinear with antialiasing (PIL's BILINEAR widens its filter support when
    downscaling) is how `transforms.Resize` resizes PIL images in the reference SAGAN/DCGAN
    CelebA loaders, and the paper asks for an antialiased resize.
    """
    img = Image.open(io.BytesIO(jpeg)).convert("RGB")
    left, top = (img.width - crop) // 2, (img.height - crop) // 2  # exact for CelebA's 178x218
    return np.asarray(img.crop((left, top, left + crop, top + crop)).resize((size, size), Image.BILINEAR))


def _jpegs(zip_path: Path, n: int | None = None) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(name for name in zf.namelist() if name.endswith(".jpg"))[:n]
        return {name: zf.read(name) for name in names}


def _write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _small_celeba(tmp_path: Path, synthetic_raw, n: int = 20,
                  replace_entries: dict[str, bytes] | None = None) -> tuple[Path, Path]:
    """The first `n` synthetic images (some replaced) as a zip + a matching partition file."""
    entries = {**_jpegs(synthetic_raw[0], n), **(replace_entries or {})}
    zip_path = _write_zip(tmp_path / "celeba.zip", entries)
    partition_path = tmp_path / "partition.txt"
    partition_path.write_text("".join(f"{Path(name).name} {i % 3}\n" for i, name in enumerate(sorted(entries))))
    return zip_path, partition_path


@pytest.mark.parametrize("size", [32, 64])
def test_crop_resize_agrees_with_pil_within_one_grey_level(synthetic_raw, size):
    diffs = []
    for jpeg in _jpegs(synthetic_raw[0], 40).values():
        ours = crop_resize(jpeg, 160, size)
        assert ours.shape == (size, size, 3) and ours.dtype == np.uint8
        diffs.append(np.abs(ours.astype(int) - _pil_reference(jpeg, 160, size)))
    diffs = np.stack(diffs)
    assert diffs.max() <= 1
    assert diffs.mean() < 0.01  # off-by-one is rounding, rare; a shifted crop would differ everywhere


def test_crop_resize_centres_the_crop_on_non_celeba_sizes():
    # A 200x100 image whose left and right quarters are black and the centre is white:
    # the centre 100x100 crop must be all white.
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, 50:150] = 255
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=100)
    out = crop_resize(buf.getvalue(), 100, 32)
    assert out[:, 2:-2].min() >= 250  # JPEG ringing only at the very edges


def test_greyscale_jpeg_becomes_three_equal_channels(synthetic_raw):
    jpeg = next(iter(_jpegs(synthetic_raw[0], 1).values()))
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).convert("L").save(buf, format="JPEG")
    out = crop_resize(buf.getvalue(), 160, 32)
    assert out.shape == (32, 32, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


@pytest.fixture(scope="module")
def prepared_by_workers(synthetic_raw, tmp_path_factory) -> dict[int, Path]:
    """The synthetic zip prepared at 64 px with 1 and with 2 worker processes."""
    out = {}
    for workers in (1, 2):
        out[workers] = tmp_path_factory.mktemp(f"workers{workers}") / "prepared"
        prepare(*synthetic_raw, out[workers], PrepareParams(size=64, shard_size=SHARD, workers=workers))
    return out


def test_output_is_byte_identical_for_one_and_two_workers(prepared_by_workers):
    one, two = prepared_by_workers[1], prepared_by_workers[2]
    names = sorted(p.name for p in one.iterdir())
    assert names == ["manifest.parquet", "shard_00000.npy", "shard_00001.npy", "shard_00002.npy",
                     "shard_00003.npy", "summary.json"]
    assert sorted(p.name for p in two.iterdir()) == names
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def test_shards_hold_uint8_nhwc_in_shard_size_pieces(prepared_by_workers):
    shards = [np.load(prepared_by_workers[2] / f"shard_{i:05d}.npy") for i in range(4)]
    assert [s.shape for s in shards] == [(64, 64, 64, 3)] * 3 + [(8, 64, 64, 3)]
    assert all(s.dtype == np.uint8 for s in shards)


def test_manifest_rows_point_at_their_images(prepared_by_workers, synthetic_raw):
    out = prepared_by_workers[2]
    table = pq.read_table(out / "manifest.parquet")
    assert [str(t) for t in table.schema.types] == ["string", "int32", "int32", "int8"]
    assert table.column_names == ["file", "shard", "row", "partition"]
    manifest = table.to_pydict()
    assert manifest["file"] == [f"{i:06d}.jpg" for i in range(1, 201)]
    assert manifest["shard"] == [i // SHARD for i in range(200)]
    assert manifest["row"] == [i % SHARD for i in range(200)]
    partition = dict(line.split() for line in synthetic_raw[1].read_text().splitlines())
    assert manifest["partition"] == [int(partition[f]) for f in manifest["file"]]

    jpegs = _jpegs(synthetic_raw[0])
    for i in (0, 63, 64, 130, 199):
        image = np.load(out / f"shard_{manifest['shard'][i]:05d}.npy")[manifest["row"][i]]
        reference = _pil_reference(jpegs[f"img_align_celeba/{manifest['file'][i]}"], 160, 64)
        assert np.abs(image.astype(int) - reference).max() <= 1

    meta = table.schema.metadata
    assert meta[b"crop"] == b"160" and meta[b"size"] == b"64" and meta[b"synthetic"] == b"true"
    assert meta[b"source_zip_md5"] == hashlib.md5(synthetic_raw[0].read_bytes()).hexdigest().encode()


def test_manifest_records_the_sha256_of_each_shard(prepared_by_workers):
    out = prepared_by_workers[2]
    recorded = json.loads(pq.read_schema(out / "manifest.parquet").metadata[b"shard_sha256"])
    assert recorded == [hashlib.sha256((out / f"shard_{i:05d}.npy").read_bytes()).hexdigest() for i in range(4)]


def test_summary_records_counts_and_no_worker_count(prepared_by_workers):
    summary = json.loads((prepared_by_workers[1] / "summary.json").read_text())
    assert summary == {"n_images": 200, "n_bad": 0, "bad_files": [], "crop": 160, "size": 64,
                       "shard_size": SHARD, "synthetic_data": True}


def test_corrupt_jpeg_is_skipped_and_counted(synthetic_raw, tmp_path):
    bad = {"img_align_celeba/000005.jpg": b"\xff\xd8\xff\xe0 not really a jpeg"}
    zip_path, partition_path = _small_celeba(tmp_path, synthetic_raw, replace_entries=bad)
    out = tmp_path / "prepared"
    summary = prepare(zip_path, partition_path, out, PrepareParams(size=32, shard_size=8, workers=1,
                                                                   max_bad_fraction=0.1))
    assert (summary["n_images"], summary["n_bad"], summary["bad_files"]) == (19, 1, ["000005.jpg"])
    assert json.loads((out / "summary.json").read_text())["bad_files"] == ["000005.jpg"]
    manifest = pq.read_table(out / "manifest.parquet").to_pydict()
    assert "000005.jpg" not in manifest["file"] and len(manifest["file"]) == 19
    assert manifest["row"][:9] == [0, 1, 2, 3, 4, 5, 6, 7, 0]  # no hole where the bad image was
    sixth = _jpegs(zip_path)["img_align_celeba/000006.jpg"]
    assert np.array_equal(np.load(out / "shard_00000.npy")[4], crop_resize(sixth, 160, 32))


def test_too_many_corrupt_jpegs_fail_naming_count_and_param(synthetic_raw, tmp_path):
    bad = {f"img_align_celeba/0000{i:02d}.jpg": b"garbage" for i in (3, 11)}
    zip_path, partition_path = _small_celeba(tmp_path, synthetic_raw, replace_entries=bad)
    out = tmp_path / "prepared"
    with pytest.raises(SaganError, match=r"2 of 20 JPEGs are bad \(10\.00%\), more than "
                                         r"prepare\.max_bad_fraction = 0\.05 \(first: 000003\.jpg: undecodable"):
        prepare(zip_path, partition_path, out, PrepareParams(size=32, workers=1, max_bad_fraction=0.05))
    assert not out.exists()  # nothing half-written


def test_image_smaller_than_the_crop_is_bad(synthetic_raw, tmp_path):
    """The hint names the param to change; before, it said to download the intact zip again."""
    zip_path, partition_path = _small_celeba(tmp_path, synthetic_raw, n=10)
    with pytest.raises(SaganError, match=r"10 of 10 JPEGs are bad .* 178x218 is smaller than the 200x200 crop "
                                         r"\(prepare.crop\)\) \(hint: lower prepare.crop to fit inside the images "
                                         r"\(CelebA's aligned images are 178x218; the paper crops 160\)\)$"):
        prepare(zip_path, partition_path, tmp_path / "out", PrepareParams(crop=200, size=32, workers=1))


@pytest.mark.parametrize("content, message", [
    (None, "truncated or damaged zip"),
    (b"<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title>", "not a zip archive (starts with b'<!DOCTYPE html><')"),
    (b"", "empty file, not a zip archive"),
])
def test_broken_archives_get_their_own_message(synthetic_raw, tmp_path, content, message):
    zip_path, partition_path = _small_celeba(tmp_path, synthetic_raw, n=5)
    if content is None:  # truncated: the central directory at the end is cut off
        content = zip_path.read_bytes()[: zip_path.stat().st_size // 2]
    zip_path.write_bytes(content)
    with pytest.raises(SaganError) as err:
        prepare(zip_path, partition_path, tmp_path / "out", PrepareParams(workers=1))
    assert str(err.value).startswith(f"{zip_path}: {message}")
    assert "run `sagan download` again" in str(err.value)


def test_zip_without_celeba_images_is_rejected(tmp_path):
    zip_path = _write_zip(tmp_path / "other.zip", {"photos/a.jpg": b"x", "readme.txt": b"y"})
    partition_path = tmp_path / "partition.txt"
    partition_path.write_text("000001.jpg 0\n")
    with pytest.raises(SaganError, match=r"no img_align_celeba/\*\.jpg entries \(2 entries, e\.g\. 'photos/a\.jpg'\)"):
        prepare(zip_path, partition_path, tmp_path / "out", PrepareParams(workers=1))


def test_missing_zip_names_the_stage_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = (f"{paths.RAW_ZIP}: not found; it is written by `sagan download` "
                "(hint: run `sagan download`, or the whole pipeline: `dvc repro`)")
    with pytest.raises(SaganError, match="^" + re.escape(expected) + "$"):
        prepare(paths.RAW_ZIP, paths.RAW_PARTITION, paths.PREPARED_DIR, PrepareParams())


@pytest.mark.parametrize("partition_text, message", [
    (None, r"partition\.txt: not found$"),  # outside the project: no stage to name
    ("000001.jpg 0\n000002.jpg 1\n000003.jpg three\n", r"partition\.txt:3: malformed line '000003\.jpg three'"),
    ("".join(f"{i:06d}.jpg 0\n" for i in range(1, 5)), r"no partition for 1 of the zip's 5 images \(first: 000005\.jpg\)"),
    # a duplicated name is an error, even with the same partition: the file is not CelebA's
    ("".join(f"{i:06d}.jpg 0\n" for i in range(1, 6)) + "000002.jpg 1\n",
     r"partition\.txt:6: duplicate entry for 000002\.jpg \(first on line 2\)"),
    ("000001.jpg 0\n000001.jpg 0\n", r"partition\.txt:2: duplicate entry for 000001\.jpg \(first on line 1\)"),
])
def test_partition_file_problems(synthetic_raw, tmp_path, partition_text, message):
    zip_path, partition_path = _small_celeba(tmp_path, synthetic_raw, n=5)
    if partition_text is None:
        partition_path.unlink()
    else:
        partition_path.write_text(partition_text)
    with pytest.raises(SaganError, match=message):
        prepare(zip_path, partition_path, tmp_path / "out", PrepareParams(workers=1))


def test_cli_prints_one_line_and_keeps_the_old_output(synthetic_raw, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    zip_path, partition_path = _small_celeba(tmp_path, synthetic_raw, n=12)
    paths.RAW_DIR.mkdir(parents=True)
    zip_path.rename(paths.RAW_ZIP)
    partition_path.rename(paths.RAW_PARTITION)
    write_params(Path("params.yaml"), prepare={"size": 32, "shard_size": 5, "workers": 1})
    assert cli.main(["prepare"]) == 0
    assert sorted(p.name for p in paths.PREPARED_DIR.iterdir()) == [
        "manifest.parquet", "shard_00000.npy", "shard_00001.npy", "shard_00002.npy", "summary.json"]
    assert "prepared 12 images at 32x32 in 3 shards, 0 bad skipped" in capsys.readouterr().out

    paths.RAW_ZIP.write_bytes(b"<html>quota exceeded</html>")
    assert cli.main(["prepare"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sagan prepare: error: {paths.RAW_ZIP}: not a zip")
    assert len(list(paths.PREPARED_DIR.glob("shard_*.npy"))) == 3  # the old output is intact

