"""What a new user clones is a working DVC and Snakemake project, with no setup beyond `make install`.

The pipeline tests run in scratch copies of the working tree; this one runs on an untouched
`git clone` of the current commit, so a file that exists here but was never committed (the DVC
project itself, for example) cannot hide behind them.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from smoke import REPO_ROOT, run
from sagan.stages import PARAMS_CHECK, STAGES  # in graph order


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("fresh") / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(dest)], check=True)
    return dest


def test_clone_is_a_dvc_project_with_analytics_off(clone):
    assert (clone / ".dvc/config").is_file() and (clone / ".dvc/.gitignore").is_file()
    out = run(["dvc", "config", "core.analytics"], clone, capture_output=True, text=True)
    assert out.stdout.strip() == "false"


def test_dvc_status_accepts_the_clone(clone):
    out = run(["dvc", "status"], clone, check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "not inside of a DVC repository" not in out.stderr


def test_dvc_repro_dry_plans_every_stage(clone):
    # --force: without it DVC 3.67.1 hashes the deps of every stage it would run, and on an empty
    # workspace prepare's dep (download's output) does not exist yet (treeverse/dvc#9021).
    out = run(["dvc", "repro", "--dry", "--force"], clone, check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    at = {s: out.stdout.find(f"Running stage '{s}'") for s in (PARAMS_CHECK, *STAGES)}
    assert min(at.values()) >= 0, out.stdout
    assert min(at, key=at.get) == PARAMS_CHECK, out.stdout  # params.yaml checked before any other stage


def test_snakemake_dry_run_plans_every_rule(clone):
    out = run(["snakemake", "-n", "--cores", "1"], clone, check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert all(f"rule {s}:" in text for s in STAGES), text


def test_dry_runs_leave_the_clone_clean(clone):
    """Nothing a dry run writes may show up as an untracked or modified file."""
    out = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert out.stdout == ""


def test_a_scratch_copy_leaves_out_a_committed_run(tmp_path):
    """A user who commits their runs (docs/experiments.md) must still get a smoke copy with no run in it."""
    from sagan import paths
    from smoke import working_tree_files

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
    for rel in ("dvc.lock", paths.RUN.metrics, paths.RUN.metrics_protocol, paths.RUN.run_record, paths.RUN.losses_csv):
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        (clone / rel).write_text("{}\n")
    files = working_tree_files(clone)
    assert "dvc.yaml" in files and "reports/README.md" in files and "src/sagan/paths.py" in files
    run = paths.RUN
    assert not {"dvc.lock", *map(str, (run.metrics, run.metrics_protocol, run.run_record, run.losses_csv))} & set(files)
