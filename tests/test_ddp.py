"""`torchrun --nproc_per_node 2 -m sagan train` with gloo on the CPU.

Semantics (documented in sagan/train/loop.py): every rank draws the same permutation and global
latent batch and takes its slice, and DDP averages gradients, so 2 ranks x batch b equal one
process with batch 2b wherever per-rank statistics do not enter: no batch norm (or sync_bn) and no
gradient penalty (its interpolation weights are drawn per rank).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import generator_tensors, make_project, read_losses, tiny_raw_params, train_lock_held_elsewhere
from sagan import paths

pytestmark = pytest.mark.integration  # real torchrun subprocesses (about 35 s in all)
TORCHRUN = Path(sys.executable).with_name("torchrun")


def sagan_train(root: Path, raw: dict, env: dict, ranks: int) -> subprocess.CompletedProcess:
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    launcher = [str(TORCHRUN), "--standalone", f"--nproc_per_node={ranks}"] if ranks > 1 else [sys.executable]
    return subprocess.run(launcher + ["-m", "sagan", "train"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture
def env(mlflow_uri) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "OMP_NUM_THREADS": "1"}


def test_two_gloo_ranks_train_the_paper_setup_and_rank_0_alone_writes(tmp_path, env, monkeypatch):
    """Batch norm and the gradient penalty's double backward through DDP."""
    tracking = f"sqlite:///{tmp_path / 'own.db'}"
    root = make_project(tmp_path / "project")
    done = sagan_train(root, tiny_raw_params(max_steps=4, batch_size=8), {**env, "MLFLOW_TRACKING_URI": tracking}, 2)
    assert done.returncode == 0, done.stderr[-3000:]
    monkeypatch.chdir(root)
    record = json.loads(paths.RUN.run_record.read_text())
    assert record["device"] == "cpu x2" and record["steps"] == 4
    assert [int(r["step"]) for r in read_losses()] == [4]
    assert sorted(p.name for p in paths.RUN.checkpoints_dir.glob("*.pt")) == ["step_0000004.pt"]
    assert sorted(p.name for p in paths.RUN.samples_dir.iterdir()) == ["epoch_001.png"]
    import mlflow

    client = mlflow.MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [record["mlflow_run_id"]]  # one run: rank 0 alone logs


def test_when_another_train_holds_the_project_every_rank_stops(tmp_path, env):
    """Rank 0 alone takes models/.train.lock; when it cannot, no rank trains and none waits forever."""
    root = make_project(tmp_path / "project")
    with train_lock_held_elsewhere(root / paths.RUN.models_dir / ".train.lock") as holder:
        done = sagan_train(root, tiny_raw_params(max_steps=2, batch_size=8), env, 2)
    assert done.returncode != 0
    assert f"another `sagan train` (pid {holder.pid}) is running in this project" in done.stderr
    assert not (root / paths.RUN.checkpoints_dir).exists() and not (root / paths.RUN.train_reports_dir).exists()


def test_two_ranks_of_batch_8_equal_one_process_of_batch_16(tmp_path, env, monkeypatch):
    results = {}
    for ranks, batch in ((2, 8), (1, 16)):
        raw = tiny_raw_params(max_steps=4, batch_size=batch, gp_lambda=0.0)
        raw["model"].update(g_batchnorm=False, d_batchnorm=False)
        root = make_project(tmp_path / f"ranks{ranks}")
        done = sagan_train(root, raw, env, ranks)
        assert done.returncode == 0, done.stderr[-3000:]
        monkeypatch.chdir(root)
        results[ranks] = (generator_tensors(), read_losses())
    single, ddp = results[1][0], results[2][0]
    assert single.keys() == ddp.keys()
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
    from sagan.model.networks import Generator
    from sagan.params import parse_params

    torch.manual_seed(0)  # train.seed: the weights before training, to show that training moved them
    initial = Generator(parse_params(raw).model, 32).state_dict()
    assert any(not torch.allclose(initial[k], single[k]) for k in single if k.endswith("original"))
    for a, b in zip(results[1][1], results[2][1]):
        assert float(a["d_loss"]) == pytest.approx(float(b["d_loss"]), rel=1e-4)
