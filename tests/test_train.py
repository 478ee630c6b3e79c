"""`sagan train` on a tiny prepared project: outputs per contract, learning, determinism, NaN stop,
precision, completed-run reruns and param changes.

The project (conftest.make_project: uint8 shards, manifest and split per docs/contracts.md) has
reddish images of a known mean colour, so that learning is measurable against an independent number.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import (DATA_MEAN_RGB, assert_same_tensors, generator_tensors, make_project, read_losses,
                      tiny_params, train, without_speed)
from sagan import paths
from sagan.errors import SaganError
from sagan.params import Params

LOSS_COLUMNS = ["step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "gp", "gamma_g", "gamma_d", "img_per_s"]


def mean_rgb(images_u8: torch.Tensor) -> np.ndarray:
    return images_u8.double().mean(dim=(0, 2, 3)).numpy()


def test_outputs_follow_the_contract(train_project, monkeypatch):
    from sagan import tracking

    git_calls = []
    real_git_commit = tracking.git_commit
    monkeypatch.setattr(tracking, "git_commit", lambda: git_calls.append(1) or real_git_commit())
    train(tiny_params())
    assert len(git_calls) == 1  # one run metadata for the MLflow tags and run.json

    rows = read_losses()
    assert list(rows[0]) == LOSS_COLUMNS
    assert [(int(r["step"]), int(r["epoch"])) for r in rows] == [(4, 1), (8, 1), (12, 2)]
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("d_loss", "g_loss", "gp"))
    assert all(0 < float(r["d_real"]) < 1 and 0 < float(r["d_fake"]) < 1 for r in rows)
    # 12 steps of 8 per epoch: epoch 1 ends at step 8, the partial epoch 2 gets its own grid.
    assert sorted(p.name for p in paths.SAMPLES_DIR.iterdir()) == ["epoch_001.png", "epoch_002.png"]
    # keep_checkpoints 3 of those written at steps 5, 8 (epoch end), 10, 12 (end).
    assert sorted(p.name for p in paths.CHECKPOINTS_DIR.glob("*.pt")) == \
        ["step_0000008.pt", "step_0000010.pt", "step_0000012.pt"]

    saved = torch.load(paths.GENERATOR, map_location="cpu", weights_only=True)
    assert saved["config"]["image_size"] == 32 and saved["config"]["z_dim"] == 16 and saved["ema"] is False
    last = torch.load(paths.CHECKPOINTS_DIR / "step_0000012.pt", map_location="cpu", weights_only=True)
    assert_same_tensors(saved["state_dict"], last["trainer"]["G"])
    assert last["loop"]["step"] == 12 and last["epoch"] == 1 and last["position"] == 4

    record = json.loads(paths.RUN_RECORD.read_text())
    assert record["steps"] == 12 and record["epochs"] == 2 and record["synthetic_data"] is True
    assert record["profile"] == "smoke" and record["device"] == "cpu"
    import mlflow

    run = mlflow.MlflowClient(record["tracking_uri"]).get_run(record["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr_d"] == "0.0004" and run.data.params["model.z_dim"] == "16"
    assert run.data.tags["sagan.synthetic_data"] == "true" and run.data.tags["sagan.profile"] == "smoke"
    assert run.data.tags["sagan.data_fingerprint"] == record["data_fingerprint"]
    assert run.data.tags["sagan.git_commit"] == run.data.tags["mlflow.source.git.commit"] == record["git_commit"]
    history = mlflow.MlflowClient(record["tracking_uri"]).get_metric_history(run.info.run_id, "d_loss")
    assert [m.step for m in history] == [4, 8, 12]
    assert [m.value for m in history] == pytest.approx([float(r["d_loss"]) for r in rows])


def test_two_runs_are_identical(tmp_path, monkeypatch, mlflow_uri):
    results = []
    for name in ("a", "b"):
        root = make_project(tmp_path / name)
        monkeypatch.chdir(root)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
        train(tiny_params(max_steps=3, log_every=1, ema_decay=0.9))
        results.append((generator_tensors(), without_speed(read_losses())))
    assert_same_tensors(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_a_completed_run_is_not_trained_again(train_project):
    params = tiny_params(max_steps=6)
    train(params)
    first = (generator_tensors(), read_losses(), paths.RUN_RECORD.read_text())
    checkpoints = sorted(paths.CHECKPOINTS_DIR.glob("*.pt"))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    import shutil

    shutil.rmtree("reports")  # as DVC does before rerunning a stage
    paths.GENERATOR.unlink()
    train(params)
    assert sorted(paths.CHECKPOINTS_DIR.glob("*.pt")) == checkpoints
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps  # nothing trained, nothing saved
    assert_same_tensors(generator_tensors(), first[0])
    assert read_losses() == first[1]
    assert paths.RUN_RECORD.read_text() == first[2]
    assert sorted(p.name for p in paths.SAMPLES_DIR.iterdir()) == ["epoch_001.png"]


def test_changed_params_train_from_scratch_and_keep_old_checkpoints(train_project, capsys):
    train(tiny_params(max_steps=6))
    old = sorted(p.name for p in paths.CHECKPOINTS_DIR.glob("*.pt"))
    train(tiny_params(max_steps=3, lr_g=3e-4))
    assert "trained with other params (train.lr_g 0.0001 -> 0.0003)" in capsys.readouterr().out
    assert sorted(p.name for p in paths.CHECKPOINTS_DIR.glob("*.pt")) == ["step_0000003.pt"]
    assert sorted(p.name for p in (paths.CHECKPOINTS_DIR / "superseded").glob("*.pt")) == old
    assert [int(r["step"]) for r in read_losses()] == [3]


def test_a_non_finite_loss_stops_with_step_and_loss_named(train_project, monkeypatch):
    from sagan.model import losses

    real_g_loss, calls = losses.g_loss, []

    def g_loss_nan_from_step_7(kind, fake_logits):
        calls.append(1)
        loss = real_g_loss(kind, fake_logits)
        return loss * float("nan") if len(calls) >= 7 else loss

    monkeypatch.setattr(losses, "g_loss", g_loss_nan_from_step_7)
    with pytest.raises(SaganError, match=r"^train: g_loss became NaN/Inf at step 7; training stopped "
                                         r"\(last good checkpoint: models/checkpoints/step_0000005.pt\)"):
        train(tiny_params())
    kept = torch.load(paths.CHECKPOINTS_DIR / "step_0000005.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(t).all() for t in kept["trainer"]["G"].values() if t.is_floating_point())
    assert sorted(p.name for p in paths.CHECKPOINTS_DIR.glob("*.pt")) == ["step_0000005.pt"]
    assert not paths.GENERATOR.exists()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_runs_with_gradient_penalty(train_project, precision):
    train(tiny_params(max_steps=4, precision=precision))
    rows = read_losses()
    assert [int(r["step"]) for r in rows] == [4]
    assert float(rows[0]["gp"]) > 0 and np.isfinite(float(rows[0]["d_loss"]))
    saved = torch.load(paths.CHECKPOINTS_DIR / "step_0000004.pt", map_location="cpu", weights_only=True)
    assert bool(saved["trainer"]["scaler_g"]) == (precision == "fp16")  # fp16 alone uses a GradScaler


def test_too_large_a_batch_is_a_clear_error(train_project):
    with pytest.raises(SaganError, match=r"^train.batch_size: 100 x 1 rank\(s\) x n_critic 2 needs more "
                                         r"than the 128 training images"):
        train(tiny_params(batch_size=100, n_critic=2))


def test_an_unknown_device_is_a_clear_error(train_project):
    with pytest.raises(SaganError, match=r"^train.device: unknown device 'gpu0' \(hint: use auto, cpu or cuda\)$"):
        train(tiny_params(device="gpu0"))


def generated_mean_rgb(params: Params) -> np.ndarray:
    from sagan.model.io import load_generator

    G, _ = load_generator(paths.GENERATOR, torch.device("cpu"))
    with torch.no_grad():
        images = G(torch.randn(256, params.model.z_dim, generator=torch.Generator().manual_seed(1)))
    return mean_rgb(((images + 1) * 127.5).clamp(0, 255))


def initial_mean_rgb(params: Params) -> np.ndarray:
    """The same generator before any update: built from the same seed, independently of the loop."""
    from sagan.model.networks import Generator

    torch.manual_seed(params.train.seed)
    G = Generator(params.model, 32).eval()
    with torch.no_grad():
        images = G(torch.randn(256, params.model.z_dim, generator=torch.Generator().manual_seed(1)))
    return mean_rgb(((images + 1) * 127.5).clamp(0, 255))


@pytest.mark.parametrize("steps, lr, bound", [
    (15, 2e-3, 0.65),  # measured: 62 -> 33
    pytest.param(30, 1e-3, 0.5, marks=pytest.mark.slow),  # measured: 62 -> 11
])
def test_training_moves_the_mean_colour_towards_the_data(train_project, steps, lr, bound):
    # Without the penalty and at a higher lr, a few steps move the colour measurably.
    params = tiny_params(max_steps=steps, gp_lambda=0.0, lr_g=lr, lr_d=lr, log_every=10, checkpoint_every=100)
    before = np.abs(initial_mean_rgb(params) - DATA_MEAN_RGB).mean()
    train(params)
    after = np.abs(generated_mean_rgb(params) - DATA_MEAN_RGB).mean()
    assert after < bound * before, (before, after)
