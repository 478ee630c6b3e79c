"""Synthetic CelebA: deterministic, CelebA's layout, varied faces, marked synthetic."""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sagan.data.synthetic import is_synthetic_zip, write_synthetic_celeba

N = 20


def _write(tmp_path: Path, n: int = N, seed: int = 0, tag: str = "a") -> tuple[Path, Path]:
    zip_path, partition_path = tmp_path / f"{tag}.zip", tmp_path / f"{tag}.txt"
    write_synthetic_celeba(zip_path, partition_path, n, seed)
    return zip_path, partition_path


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> tuple[Path, Path]:
    return _write(tmp_path_factory.mktemp("synthetic"))


def _images(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        return {name: zf.read(name) for name in zf.namelist() if name.endswith(".jpg")}


def test_same_seed_gives_byte_identical_files(celeba, tmp_path):
    zip_path, partition_path = _write(tmp_path)
    assert zip_path.read_bytes() == celeba[0].read_bytes()
    assert partition_path.read_bytes() == celeba[1].read_bytes()


def test_other_seed_gives_other_images(celeba, tmp_path):
    zip_path, _ = _write(tmp_path, seed=1)
    ours, theirs = _images(celeba[0]), _images(zip_path)
    assert ours.keys() == theirs.keys()
    assert all(ours[name] != theirs[name] for name in ours)


def test_image_k_does_not_depend_on_the_number_of_images(celeba, tmp_path):
    zip_path, _ = _write(tmp_path, n=12)
    small, large = _images(zip_path), _images(celeba[0])
    assert len(small) == 12
    assert all(small[name] == large[name] for name in small)


def test_zip_has_celeba_layout(celeba):
    with zipfile.ZipFile(celeba[0]) as zf:
        names = zf.namelist()
        assert names == ["img_align_celeba/"] + [f"img_align_celeba/{i:06d}.jpg" for i in range(1, N + 1)]
        for name in names[1:]:
            data = zf.read(name)
            assert data[:3] == b"\xff\xd8\xff"  # JPEG magic
            with Image.open(io.BytesIO(data)) as img:
                assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (178, 218))


def test_partition_file_has_celeba_format_and_split(celeba):
    lines = celeba[1].read_text().splitlines()
    assert lines[0] == "000001.jpg 0"
    assert [line.split()[0] for line in lines] == [f"{i:06d}.jpg" for i in range(1, N + 1)]
    assert [int(line.split()[1]) for line in lines] == [0] * 16 + [1] * 2 + [2] * 2


def test_partition_counts_follow_celeba_proportions(tmp_path):
    _, partition_path = _write(tmp_path, n=1000)
    counts = np.bincount([int(line.split()[1]) for line in partition_path.read_text().splitlines()])
    assert counts.tolist() == [800, 100, 100]


def test_faces_vary_and_sit_in_the_centre(celeba):
    arrays = np.stack([np.asarray(Image.open(io.BytesIO(data)), dtype=float) for data in _images(celeba[0]).values()])
    mean_colours = arrays.mean(axis=(1, 2))  # (N, 3)
    assert mean_colours.std(axis=0).min() > 12, mean_colours.std(axis=0)
    # The face region (centre of the 160x160 crop) varies across images as well: skin, eyes, mouth.
    face = arrays[:, 90:150, 60:118]
    assert face.mean(axis=(1, 2)).std(axis=0).min() > 20
    # Images are not flat colour: structure inside each image.
    assert arrays.std(axis=(1, 2)).mean() > 25
    # No two images are the same.
    assert len({hashlib.md5(a.tobytes()).hexdigest() for a in arrays}) == N


def test_is_synthetic_zip(celeba, tmp_path):
    assert is_synthetic_zip(celeba[0])
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("img_align_celeba/000001.jpg", _images(celeba[0])["img_align_celeba/000001.jpg"])
    assert not is_synthetic_zip(plain)
    not_a_zip = tmp_path / "page.zip"
    not_a_zip.write_text("<!DOCTYPE html><html></html>")
    assert not is_synthetic_zip(not_a_zip)
    with zipfile.ZipFile(celeba[0]) as zf:
        assert zf.comment.startswith(b"sagan-synthetic-celeba v1")
