"""Shared fixtures: synthetic CelebA and a prepared smoke project that later stages start from.

`prepared_project` is session-scoped and shared: treat it as read-only. A test that writes into
the project (train, fid_ref, evaluate, report) uses `project_copy`, its own copy with the working
directory set to it.
"""
from __future__ import annotations

import argparse
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# The pipeline scenarios run beside the unit tests (below). OpenMP threads that spin while idle
# steal the cores of the other processes (benchmarks/side_by_side.py: two Inception processes side
# by side took 1.5-1.8x longer than with sleeping threads), so they sleep; results are the same.
# Set before torch is first imported, in this process and every subprocess.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

from sagan import paths  # noqa: E402
from sagan.data import prepare, split  # noqa: E402
from sagan.data.synthetic import write_synthetic_celeba  # noqa: E402
from sagan.params import load_params  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE_PARAMS = REPO_ROOT / "configs" / "smoke.yaml"
SYNTHETIC_IMAGES = 200


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> tuple[Path, Path]:
    """(zip_path, partition_path) of 200 synthetic CelebA images (seed 0), in CelebA's layout."""
    raw = tmp_path_factory.mktemp("synthetic_raw")
    zip_path, partition_path = raw / paths.RAW_ZIP.name, raw / paths.RAW_PARTITION.name
    write_synthetic_celeba(zip_path, partition_path, SYNTHETIC_IMAGES, seed=0)
    return zip_path, partition_path


@pytest.fixture(scope="session")
def prepared_project(tmp_path_factory, synthetic_raw) -> Path:
    """A project root with params.yaml (configs/smoke.yaml), data/raw, data/prepared and data/split.

    Built by the stages' own run() functions with the smoke params (32 px), like `sagan prepare`
    and `sagan split` would.
    """
    root = tmp_path_factory.mktemp("prepared_project")
    (root / paths.RAW_DIR).mkdir(parents=True)
    shutil.copy(synthetic_raw[0], root / paths.RAW_ZIP)
    shutil.copy(synthetic_raw[1], root / paths.RAW_PARTITION)
    shutil.copy(SMOKE_PARAMS, root / "params.yaml")
    params = load_params(root / "params.yaml")
    args = argparse.Namespace(params="params.yaml")
    cwd = Path.cwd()
    os.chdir(root)  # the stages use the contract's relative paths
    try:
        prepare.run(params, args)
        split.run(params, args)
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
