"""Shared fixtures: synthetic CelebA and a prepared smoke project that later stages start from,
and the tiny training project and helpers of the training tests (test_train, test_resume, test_ddp).

`prepared_project` is session-scoped and shared: treat it as read-only. A test that writes into
the project (train, fid_ref, evaluate, report) uses `project_copy`, its own copy with the working
directory set to it.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# The pipeline scenarios run beside the unit tests (below). OpenMP threads that spin while idle
# steal the cores of the other processes (benchmarks/side_by_side.py: two Inception processes side
# by side took 1.5-1.8x longer than with sleeping threads), so they sleep; results are the same.
# Set before torch is first imported, in this process and every subprocess.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from sagan import paths  # noqa: E402
from sagan.commands import prepare as prepare_command, split as split_command  # noqa: E402
from sagan.data.layout import SHARD_SHA256_KEY, shard_name  # noqa: E402
from sagan.data.prepare import crop_resize  # noqa: E402
from sagan.data.synthetic import _jpeg_bytes, draw_face, write_synthetic_celeba  # noqa: E402
from sagan.digest import file_digest  # noqa: E402
from sagan.params import Params, flatten, load_params, parse_params  # noqa: E402
from sagan.profiles import read_profile, write_profile  # noqa: E402
from sagan.run_record import RunRecord  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC_IMAGES = 200
DATA_MEAN_RGB = np.array([200.0, 80.0, 60.0])  # of the training project's images (make_project)


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> tuple[Path, Path]:
    """(zip_path, partition_path) of 200 synthetic CelebA images (seed 0), in CelebA's layout."""
    raw = tmp_path_factory.mktemp("synthetic_raw")
    zip_path, partition_path = raw / paths.RAW_ZIP.name, raw / paths.RAW_PARTITION.name
    write_synthetic_celeba(zip_path, partition_path, SYNTHETIC_IMAGES, seed=0)
    return zip_path, partition_path


def write_params(path: Path, profile: str = "paper", **sections: dict) -> Path:
    """A complete params file (params files spell out every key): `profile`'s values with the
    keys in `sections` changed, e.g. write_params(p, prepare={"size": 32})."""
    raw = dataclasses.asdict(read_profile(profile, REPO_ROOT).params)
    for section, changes in sections.items():
        raw[section].update(changes)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def smoke_params_file(tmp_path_factory) -> str:
    """The smoke profile as the complete file `sagan params --profile smoke` writes."""
    path = tmp_path_factory.mktemp("smoke_params") / "params.yaml"
    write_profile("smoke", path, root=REPO_ROOT)
    return str(path)


@pytest.fixture(scope="session")
def prepared_project(tmp_path_factory, synthetic_raw) -> Path:
    """A project root with the smoke profile's params.yaml, data/raw, data/prepared and data/split.

    Built by the stages' own run() functions with the smoke params (32 px), like `sagan prepare`
    and `sagan split` would.
    """
    root = tmp_path_factory.mktemp("prepared_project")
    (root / paths.RAW_DIR).mkdir(parents=True)
    shutil.copy(synthetic_raw[0], root / paths.RAW_ZIP)
    shutil.copy(synthetic_raw[1], root / paths.RAW_PARTITION)
    write_profile("smoke", root / "params.yaml", root=REPO_ROOT)
    params = load_params(root / "params.yaml")
    args = argparse.Namespace(params="params.yaml")
    cwd = Path.cwd()
    os.chdir(root)  # the stages use the contract's relative paths
    try:
        prepare_command.run(params, args)
        split_command.run(params, args)
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def project_copy(prepared_project, tmp_path, monkeypatch) -> Path:
    """A private, writable copy of `prepared_project`; the working directory is set to it."""
    root = tmp_path / "project"
    shutil.copytree(prepared_project, root)
    monkeypatch.chdir(root)
    return root


# -- the training tests' tiny project -----------------------------------------------------------
class PicklePayload:
    """Unpickling this runs code: open(marker, "w") creates the marker file. Planted in files that
    must be loaded safely (weights_only), a marker that exists afterwards means code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def prepared_faces(indices, size: int = 32) -> torch.Tensor:
    """Synthetic faces as `sagan prepare` stores them (the JPEG, centre-cropped to 160 px and
    resized by prepare's own crop_resize): uint8 NCHW."""
    images = [crop_resize(_jpeg_bytes(draw_face(0, i)), 160, size) for i in indices]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def make_project(root: Path, n_images: int = 160, size: int = 32, shard_size: int = 100, seed: int = 0) -> Path:
    """Shards, manifest and split of `n_images` noisy reddish images (80% train), built here per
    docs/contracts.md with a known mean colour, so that learning is measurable against it."""
    rng = np.random.default_rng(seed)
    colour = DATA_MEAN_RGB + rng.normal(0, 15, (n_images, 1, 1, 3))
    images = np.clip(colour + rng.normal(0, 10, (n_images, size, size, 3)), 0, 255).round().astype(np.uint8)
    prepared = root / paths.PREPARED_DIR
    prepared.mkdir(parents=True)
    for i, start in enumerate(range(0, n_images, shard_size)):
        np.save(prepared / shard_name(i), images[start:start + shard_size])
    files = [f"{i + 1:06d}.jpg" for i in range(n_images)]
    manifest = pa.table({"file": files,
                         "shard": pa.array([i // shard_size for i in range(n_images)], pa.int32()),
                         "row": pa.array([i % shard_size for i in range(n_images)], pa.int32()),
                         "partition": pa.array([0] * n_images, pa.int8())})
    checksums = [file_digest(prepared / shard_name(i)) for i in range(-(-n_images // shard_size))]
    meta = {b"crop": b"160", b"size": str(size).encode(), b"synthetic": b"true", b"source_zip_md5": b"0" * 32,
            SHARD_SHA256_KEY: json.dumps(checksums).encode()}
    pq.write_table(manifest.replace_schema_metadata(meta), prepared / "manifest.parquet")
    n_val = round(n_images * 0.2)
    (root / paths.SPLIT_DIR).mkdir(parents=True)
    pq.write_table(pa.table({"index": pa.array(range(n_images), pa.int64()), "file": files,
                             "split": ["val" if i < n_val else "train" for i in range(n_images)]}),
                   root / paths.SPLIT_FILE)
    return root


def tiny_params(**train) -> Params:
    return parse_params(tiny_raw_params(**train))


def tiny_raw_params(**train) -> dict:
    """The smoke profile with a tiny model: 128 train images / batch 16 = 8 steps per epoch."""
    raw = dataclasses.asdict(read_profile("smoke", REPO_ROOT).params)
    raw["model"].update(z_dim=16, g_channels=8, d_channels=8, attention_after=2)  # 8x8 attention maps: fast
    raw["train"].update({"batch_size": 16, "max_steps": 12, "log_every": 4, "checkpoint_every": 5,
                         "sample_grid": 16, "device": "cpu", "deterministic": True, "eval_every": 0,
                         # the paper's optimiser and no EMA, whatever the smoke profile tunes for its demo
                         "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.5, "beta2": 0.999, "ema_decay": 0.0, **train})
    raw["mlflow"]["log_model"] = False  # seconds per run; tests/test_train.py logs one and test_registry.py more
    return raw


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One SQLite store for the session (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def train_project(tmp_path, monkeypatch, mlflow_uri) -> Path:
    """A make_project project as the working directory, tracked in the session's MLflow store."""
    root = make_project(tmp_path / "project")
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    return root


def train(params: Params) -> None:
    from sagan.train import loop

    loop.train(params, paths.RUN)


def run_record(run_id: str, **fields) -> RunRecord:
    """The run.json of a finished training run `run_id` as `sagan train` writes it, with `fields` changed."""
    return RunRecord(**{"mlflow_run_id": run_id, "mlflow_experiment": "sagan-celeba",
                        "tracking_uri": "sqlite:///mlflow.db", "steps": 200, "epochs": 10, "wall_time_s": 25.0,
                        "img_per_s": 480.0, "device": "cpu", "profile": "smoke", "git_commit": "0123abc",
                        "data_fingerprint": "f" * 64, "synthetic_data": True, "orchestrator": "dvc",
                        "dvc_experiment": "", "best_step": None, "best_fid": None, "params": flatten(Params()),
                        **fields})


def read_losses(path: Path = paths.LOSSES_CSV) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.ftruncate(fd, 0)
os.write(fd, f"{os.getpid()} 2024-01-01T00:00:00\\n".encode())
print("locked", flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def train_lock_held_elsewhere(lock: Path):
    """Another process holding `sagan train`'s project lock (as a running train does), killed with
    SIGKILL when the block ends; yields the process."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def comparable(rows: list[dict]) -> list[dict]:
    """losses.csv rows less what differs between two runs of the same params: speed and MLflow run id."""
    return [{k: v for k, v in row.items() if k not in ("img_per_s", "run_id")} for row in rows]


def generator_tensors(path: Path = paths.GENERATOR) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def pytest_collection_modifyitems(items) -> None:
    """The tests that read a pipeline scenario's record run last: they wait for their scenario
    (started with the session, below), and the unit tests meanwhile use the cores the scenarios
    leave idle, instead of waiting behind them."""
    import scenarios

    readers = set().union(*(test_classes for _, test_classes in scenarios.SCENARIOS.values()))
    items.sort(key=lambda item: item.cls is not None and item.cls.__name__ in readers)  # stable


@pytest.fixture(scope="session", autouse=True)
def pipeline_scenarios(request, tmp_path_factory) -> dict:
    """Start the DVC and Snakemake scenarios (tests/scenarios.py) that the selected tests read, in
    background threads, as the session starts: they take minutes, mostly in subprocesses, and the
    unit tests run meanwhile. Maps scenario name -> Future of its record."""
    import scenarios

    selected = {item.cls.__name__ for item in request.session.items if item.cls is not None}
    pool = ThreadPoolExecutor(max_workers=len(scenarios.SCENARIOS))
    request.addfinalizer(lambda: pool.shutdown(cancel_futures=True))
    return scenarios.start(selected, tmp_path_factory.mktemp, pool)
