"""Shared fixtures: synthetic CelebA and a prepared smoke project that later stages start from.

`prepared_project` is session-scoped and shared: treat it as read-only. A test that writes into
the project (train, fid_ref, evaluate, report) uses `project_copy`, its own copy with the working
directory set to it.
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import pytest

from sagan import paths
from sagan.data import prepare, split
from sagan.data.synthetic import write_synthetic_celeba
from sagan.params import load_params

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
