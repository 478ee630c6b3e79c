"""Shared fixtures and hooks: synthetic CelebA and a prepared smoke project that later stages start
from, the training tests' tiny project and MLflow store, the report tests' store, chromium, and the
pipeline scenarios' start. The plain helpers the tests import are in helpers.py.

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
# Set before torch is first imported (helpers imports it), in this process and every subprocess.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

from helpers import REPO_ROOT, REPORT_EXPERIMENT, REPORT_RUNS, Store, make_project, make_store  # noqa: E402
from sagan import paths  # noqa: E402
from sagan.commands import prepare as prepare_command, split as split_command  # noqa: E402
from sagan.data.synthetic import write_synthetic_celeba  # noqa: E402
from sagan.params import load_params  # noqa: E402
from sagan.profiles import write_profile  # noqa: E402

SYNTHETIC_IMAGES = 200


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> tuple[Path, Path]:
    """(zip_path, partition_path) of 200 synthetic CelebA images (seed 0), in CelebA's layout."""
    raw = tmp_path_factory.mktemp("synthetic_raw")
    zip_path, partition_path = raw / paths.RAW_ZIP.name, raw / paths.RAW_PARTITION.name
    write_synthetic_celeba(zip_path, partition_path, SYNTHETIC_IMAGES, seed=0)
    return zip_path, partition_path


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


# -- the training tests' tiny project and MLflow store ----------------------------------------
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


# -- the report tests' store, and chromium ------------------------------------------------------
@pytest.fixture(scope="module")
def report_store(tmp_path_factory) -> Store:
    """The report tests' MLflow store (helpers.make_store), one per test module."""
    return make_store(tmp_path_factory.mktemp("mlflow"), REPORT_EXPERIMENT, REPORT_RUNS)


@pytest.fixture
def chromium() -> str:
    """Requested first by the test, so that a missing browser skips (or fails) before any setup."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI") == "1":
        pytest.fail("chromium is not installed; CI must run the browser test (apt-get install -y chromium)")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


@pytest.fixture
def artifacts(tmp_path) -> Path:
    """Where a browser test keeps its screenshots for a human look: $SAGAN_TEST_ARTIFACTS, default
    the test's tmp dir."""
    out = Path(os.environ.get("SAGAN_TEST_ARTIFACTS") or tmp_path / "artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


# -- the pipeline scenarios ---------------------------------------------------------------------
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
