"""`sagan split` and the loader: exact proportions, determinism, split selection, devices, errors."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from sagan import paths
from sagan.data import loader
from sagan.data.layout import shard_name
from sagan.data.loader import DatasetInfo, dataset_info, load_split
from sagan.data.split import split, val_mask
from sagan.errors import SaganError
from sagan.params import SplitParams

N = 200  # images in the prepared smoke project (tests/conftest.py)


def _all_images(root: Path) -> np.ndarray:
    """Every prepared image in manifest order, read independently of the loader."""
    manifest = pq.read_table(root / paths.MANIFEST).to_pydict()
    shards = {s: np.load(root / paths.PREPARED_DIR / shard_name(s)) for s in set(manifest["shard"])}
    return np.stack([shards[s][r] for s, r in zip(manifest["shard"], manifest["row"])])


def _split_labels(root: Path) -> np.ndarray:
    return np.array(pq.read_table(root / paths.SPLIT_FILE).column("split").to_pylist())


@pytest.mark.parametrize("n, fraction, n_val", [(200, 0.2, 40), (7, 0.2, 1), (1001, 0.25, 250), (3, 0.5, 2)])
def test_val_count_is_exactly_rounded(n, fraction, n_val):
    assert val_mask(n, SplitParams(val_fraction=fraction, seed=0)).sum() == n_val


def test_split_is_deterministic_per_seed():
    same = [val_mask(1000, SplitParams(seed=3)) for _ in range(2)]
    other = val_mask(1000, SplitParams(seed=4))
    assert np.array_equal(*same)
    assert not np.array_equal(same[0], other)
    assert 50 < same[0][:500].sum() < 150  # random rows from both halves, not a contiguous block


def test_split_file_follows_the_contract(prepared_project):
    table = pq.read_table(prepared_project / paths.SPLIT_FILE)
    assert table.column_names == ["index", "file", "split"]
    assert [str(t) for t in table.schema.types] == ["int64", "string", "string"]
    rows = table.to_pydict()
    manifest = pq.read_table(prepared_project / paths.MANIFEST).to_pydict()
    assert rows["index"] == list(range(N))
    assert rows["file"] == manifest["file"]
    assert rows["split"].count("val") == 40 and rows["split"].count("train") == 160
    expected = val_mask(N, SplitParams())  # the smoke params: val_fraction 0.2, seed 0
    assert [s == "val" for s in rows["split"]] == expected.tolist()


def test_split_run_writes_the_same_file_again_and_prints_counts(project_copy, capsys):
    from sagan.commands import split as split_command
    from sagan.params import load_params

    before = paths.SPLIT_FILE.read_bytes()
    split_command.run(load_params("params.yaml"), None)
    assert paths.SPLIT_FILE.read_bytes() == before
    assert "split 200 images: 160 train, 40 val (seed 0)" in capsys.readouterr().out


def test_split_without_manifest_names_the_stage_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SaganError, match=missing(paths.MANIFEST, "prepare")):
        split(paths.MANIFEST, paths.SPLIT_FILE, SplitParams())


@pytest.mark.parametrize("name, expected_n", [("train", 160), ("val", 40), ("all", 200)])
def test_load_split_selects_the_split_in_manifest_order(project_copy, name, expected_n):
    images = load_split(name, verify=True)
    assert images.dtype == torch.uint8 and images.shape == (expected_n, 32, 32, 3)
    everything = _all_images(project_copy)
    labels = _split_labels(project_copy)
    keep = np.ones(N, bool) if name == "all" else labels == name
    assert np.array_equal(images.numpy(), everything[keep])


def test_load_split_max_images_takes_the_first(project_copy):
    full = load_split("val", verify=True)
    assert torch.equal(load_split("val", verify=True, max_images=7), full[:7])
    assert load_split("val", verify=True, max_images=10_000).shape[0] == 40


def test_load_split_across_several_shards(project_copy, tmp_path):
    # Re-prepare with small shards so the training split spans and skips rows of 4 shards.
    from sagan.data.prepare import prepare
    from sagan.params import PrepareParams

    prepare(paths.RAW_ZIP, paths.RAW_PARTITION,
            paths.PREPARED_DIR, PrepareParams(size=32, shard_size=60, workers=1))
    assert len(list(paths.PREPARED_DIR.glob("shard_*.npy"))) == 4
    everything = _all_images(project_copy)
    assert np.array_equal(load_split("train", verify=True).numpy(), everything[_split_labels(project_copy) == "train"])


def test_load_split_moves_to_the_device(project_copy):
    assert load_split("val", verify=True, device="cpu").device.type == "cpu"
    on_meta = load_split("val", verify=True, device=torch.device("meta"))  # any device: meta needs no hardware
    assert on_meta.device.type == "meta" and on_meta.shape == (40, 32, 32, 3)
    if torch.cuda.is_available():
        assert torch.equal(load_split("val", verify=True, device="cuda").cpu(), load_split("val", verify=True))


def test_dataset_info(project_copy):
    info = dataset_info()
    fingerprint = hashlib.sha256(paths.MANIFEST.read_bytes()).hexdigest()
    assert info == DatasetInfo(size=32, crop=160, synthetic=True, fingerprint=fingerprint, n_train=160, n_val=40)


def missing(path: Path, stage: str, detail: str = "") -> str:
    """The whole one-line message for a missing input, as a regex."""
    return "^" + re.escape(f"{path}: not found{detail}; it is written by `sagan {stage}` "
                           f"(hint: run `sagan {stage}`, or the whole pipeline: `dvc repro`)") + "$"


@pytest.mark.parametrize("remove, call, message", [
    (paths.MANIFEST, lambda: load_split("train", verify=True), missing(paths.MANIFEST, "prepare")),
    (paths.MANIFEST, dataset_info, missing(paths.MANIFEST, "prepare")),
    (paths.SPLIT_FILE, lambda: load_split("val", verify=True), missing(paths.SPLIT_FILE, "split")),
    (paths.SPLIT_FILE, dataset_info, missing(paths.SPLIT_FILE, "split")),
    (paths.PREPARED_DIR / shard_name(0), lambda: load_split("all", verify=True),
     missing(paths.PREPARED_DIR / shard_name(0), "prepare", f" (listed in {paths.MANIFEST})")),
])
def test_missing_files_name_the_file_and_the_stage(project_copy, remove, call, message):
    remove.unlink()
    with pytest.raises(SaganError, match=message):
        call()


def test_all_needs_no_split_file(project_copy):
    paths.SPLIT_FILE.unlink()
    assert load_split("all", verify=True).shape[0] == N


def test_unknown_split_name(project_copy):
    with pytest.raises(SaganError, match=r"split 'test': unknown, expected one of train, val, all"):
        load_split("test", verify=True)


def test_stale_split_is_detected(project_copy):
    pq.write_table(pq.read_table(paths.SPLIT_FILE).slice(0, 150), paths.SPLIT_FILE)
    with pytest.raises(SaganError, match=r"split\.parquet: 150 rows but the manifest has 200"):
        load_split("train", verify=True)


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "bit rot":  # one flipped bit among the pixels: the .npy still loads
        data[-100] ^= 0x04
    else:  # a partial copy: the tail is missing
        del data[len(data) // 2:]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["bit rot", "partial copy"])
def test_damaged_shard_is_detected_against_the_manifest(project_copy, how):
    shard = paths.PREPARED_DIR / shard_name(0)
    expected = hashlib.sha256(shard.read_bytes()).hexdigest()
    _damage(shard, how)
    actual = hashlib.sha256(shard.read_bytes()).hexdigest()
    message = (f"{shard}: sha256 {actual} does not match the manifest's {expected} (bit rot or a partial "
               f"copy); it is written by `sagan prepare` (hint: run `sagan prepare`, or the whole pipeline: "
               f"`dvc repro`)")
    with pytest.raises(SaganError, match="^" + re.escape(message) + "$"):
        load_split("all", verify=True)


def test_shard_check_can_be_turned_off(project_copy):
    _damage(paths.PREPARED_DIR / shard_name(0), "bit rot")
    assert load_split("all", verify=False).shape == (N, 32, 32, 3)
    with pytest.raises(SaganError, match="does not match the manifest's"):
        load_split("all", verify=True)


def test_each_shard_is_hashed_once_per_process(project_copy, monkeypatch):
    from sagan.data.prepare import prepare
    from sagan.params import PrepareParams

    prepare(paths.RAW_ZIP, paths.RAW_PARTITION, paths.PREPARED_DIR, PrepareParams(size=32, shard_size=60, workers=1))
    hashed = []
    real = loader.file_digest
    monkeypatch.setattr(loader, "file_digest", lambda path: hashed.append(Path(path).name) or real(path))
    for name in ("train", "val", "all", "train"):
        load_split(name, verify=True)
    assert sorted(hashed) == [shard_name(i) for i in range(4)]

    _damage(paths.PREPARED_DIR / shard_name(2), "bit rot")  # a changed file is checked again
    with pytest.raises(SaganError, match=re.escape(shard_name(2)) + ": sha256 "):
        load_split("all", verify=True)


def test_a_manifest_without_shard_checksums_is_refused(project_copy):
    table = pq.read_table(paths.MANIFEST)
    meta = {k: v for k, v in table.schema.metadata.items() if k != b"shard_sha256"}
    pq.write_table(table.replace_schema_metadata(meta), paths.MANIFEST)
    with pytest.raises(SaganError, match="shard_sha256 metadata is not a JSON list of sha256 hex digests"):
        load_split("all", verify=True)
    assert load_split("all", verify=False).shape == (N, 32, 32, 3)