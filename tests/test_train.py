"""`sagan train` on a tiny prepared project: outputs per contract, learning, determinism, NaN stop,
precision, completed-run reruns and param changes.

The project (helpers.make_project: uint8 shards, manifest and split per docs/contracts.md) has
reddish images of a known mean colour, so that learning is measurable against an independent number.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import (DATA_MEAN_RGB, assert_same_tensors, comparable, generator_tensors, make_project,
                     read_losses, tiny_params, tiny_raw_params, train, train_lock_held_elsewhere)
from sagan import paths
from sagan.errors import SaganError
from sagan.params import Params, flatten
from sagan.train import checkpoint

LOSS_COLUMNS = ["step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "gp", "gamma_g", "gamma_d", "img_per_s",
                "run_id"]
SUPERSEDED = paths.RUN.checkpoints_dir / "superseded"
LOCK = paths.RUN.models_dir / ".train.lock"


def mean_rgb(images_u8: torch.Tensor) -> np.ndarray:
    return images_u8.double().mean(dim=(0, 2, 3)).numpy()


def test_outputs_follow_the_contract(train_project, monkeypatch):
    from sagan import tracking

    git_calls = []
    real_git_commit = tracking.git_commit
    monkeypatch.setattr(tracking, "git_commit", lambda: git_calls.append(1) or real_git_commit())
    params = tiny_params()
    train(params)
    assert len(git_calls) == 1  # one run metadata for the MLflow tags and run.json

    rows = read_losses()
    assert list(rows[0]) == LOSS_COLUMNS
    assert [(int(r["step"]), int(r["epoch"])) for r in rows] == [(4, 1), (8, 1), (12, 2)]
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("d_loss", "g_loss", "gp"))
    assert all(0 < float(r["d_real"]) < 1 and 0 < float(r["d_fake"]) < 1 for r in rows)
    # 12 steps of 8 per epoch: epoch 1 ends at step 8, the partial epoch 2 gets its own grid.
    assert sorted(p.name for p in paths.RUN.samples_dir.iterdir()) == ["epoch_001.png", "epoch_002.png"]
    # keep_checkpoints 3 of those written at steps 5, 8 (epoch end), 10, 12 (end).
    assert sorted(p.name for p in paths.RUN.checkpoints_dir.glob("*.pt")) == \
        ["step_0000008.pt", "step_0000010.pt", "step_0000012.pt"]

    saved = torch.load(paths.RUN.generator, map_location="cpu", weights_only=True)
    assert saved["config"]["image_size"] == 32 and saved["config"]["z_dim"] == 16 and saved["ema"] is False
    last = torch.load(paths.RUN.checkpoints_dir / "step_0000012.pt", map_location="cpu", weights_only=True)
    assert_same_tensors(saved["state_dict"], last["trainer"]["G"])
    assert last["loop"]["step"] == 12 and last["epoch"] == 1 and last["position"] == 4

    record = json.loads(paths.RUN.run_record.read_text())
    assert record["steps"] == 12 and record["epochs"] == 2 and record["synthetic_data"] is True
    assert record["profile"] == "smoke" and record["device"] == "cpu"
    # The files of one run name it: every losses.csv row its MLflow run, run.json its params.
    assert {r["run_id"] for r in rows} == {record["mlflow_run_id"]}
    assert record["params"] == json.loads(json.dumps(flatten(params)))
    import mlflow

    run = mlflow.MlflowClient(record["tracking_uri"]).get_run(record["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr_d"] == "0.0004" and run.data.params["model.z_dim"] == "16"
    assert run.data.tags["sagan.synthetic_data"] == "true" and run.data.tags["sagan.profile"] == "smoke"
    assert run.data.tags["sagan.data_fingerprint"] == record["data_fingerprint"]
    assert run.data.tags["sagan.git_commit"] == run.data.tags["mlflow.source.git.commit"] == record["git_commit"]
    history = mlflow.MlflowClient(record["tracking_uri"]).get_metric_history(run.info.run_id, "train/d_loss")
    assert [m.step for m in history] == [4, 8, 12]
    assert [m.value for m in history] == pytest.approx([float(r["d_loss"]) for r in rows])


def test_the_generator_is_an_mlflow_model_of_its_run_and_registered(train_project, capsys):
    import dataclasses

    from sagan.model import registry
    from sagan.model.io import load_generator

    params = tiny_params(max_steps=2)
    params = dataclasses.replace(params, mlflow=dataclasses.replace(params.mlflow, log_model=True,
                                                                    registered_model="test-train-generator"))
    train(params)
    paths.RUN.generator.unlink()
    train(params)  # a completed run: the outputs are rewritten, the model not logged again
    record = json.loads(paths.RUN.run_record.read_text())
    import mlflow

    client = mlflow.MlflowClient(record["tracking_uri"])
    (output,) = client.get_run(record["mlflow_run_id"]).outputs.model_outputs
    assert client.get_logged_model(output.model_id).name == registry.ARTIFACT
    (version,) = client.search_model_versions("name='test-train-generator'")
    assert version.run_id == record["mlflow_run_id"]
    assert f"registered as models:/test-train-generator/{version.version}" in capsys.readouterr().out
    module, z_dim = registry.load_model(params.mlflow, f"models:/test-train-generator/{version.version}")
    z = torch.randn(4, z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(module(z), load_generator(paths.RUN.generator)[0](z))  # the published file's weights


def _evaluated_project(root: Path, monkeypatch, mlflow_uri) -> None:
    """A make_project project with its FID reference (stand-in weights), as the working directory."""
    import argparse

    from sagan.commands import fid_ref

    make_project(root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    fid_ref.run(_eval_params(), argparse.Namespace())


def _eval_params(**train) -> Params:
    """tiny_params with a reference of 8 images: a few Inception passes per evaluation."""
    import dataclasses

    params = tiny_params(**train)
    return dataclasses.replace(params, fid=dataclasses.replace(params.fid, reference_max_images=8))


def test_evaluations_during_training_never_change_the_weights_and_survive_a_resume(tmp_path, monkeypatch,
                                                                                    mlflow_uri):
    """The same run with train.eval_every 4 and 0: bitwise the same generator and checkpoints; the
    evaluated one has its curve and keeps the lowest-FID generator as generator_best.pt. Stopped at
    step 6 and resumed to 12 (from the step-6 checkpoint, as after a kill), it has the same curve
    and best generator as the run straight to 12."""
    from sagan.model.io import load_generator

    runs = {}
    for name, eval_every, stops in (("evaluated", 6, (12,)), ("plain", 0, (12,)), ("resumed", 6, (6, 12))):
        _evaluated_project(tmp_path / name, monkeypatch, mlflow_uri)
        for max_steps in stops:
            train(_eval_params(eval_every=eval_every, eval_samples=4, max_steps=max_steps))
        runs[name] = {"generator": paths.RUN.generator.read_bytes(), "best": paths.RUN.generator_best.read_bytes(),
                      "checkpoint": torch.load(checkpoint.checkpoint_path(12, paths.RUN.checkpoints_dir),
                                               weights_only=True),
                      "evals": read_losses(paths.RUN.evals_csv), "record": json.loads(paths.RUN.run_record.read_text()),
                      "configs": (load_generator(paths.RUN.generator_best)[1], load_generator(paths.RUN.generator)[1])}
    evaluated, plain, resumed = runs["evaluated"], runs["plain"], runs["resumed"]
    assert evaluated["generator"] == plain["generator"]
    assert_same_tensors(evaluated["checkpoint"]["trainer"]["G"], plain["checkpoint"]["trainer"]["G"])
    assert_same_tensors(evaluated["checkpoint"]["trainer"]["D"], plain["checkpoint"]["trainer"]["D"])

    rows = evaluated["evals"]
    assert [int(r["step"]) for r in rows] == [6, 12] and all(r["n_gen"] == "4" for r in rows)
    assert {r["run_id"] for r in rows} == {evaluated["record"]["mlflow_run_id"]}
    best = min(rows, key=lambda r: float(r["fid"]))
    assert (evaluated["record"]["best_step"], evaluated["record"]["best_fid"]) == (int(best["step"]),
                                                                                 float(best["fid"]))
    assert all(float(r["swd"]) > 0 and 0 <= float(r["precision"]) <= 1 for r in rows)
    assert plain["evals"] == [] and plain["record"]["best_step"] is None
    assert plain["best"] == plain["generator"]  # without evaluations the best is the last
    assert (evaluated["best"] == evaluated["generator"]) == (best["step"] == "12")  # else an earlier step's
    assert evaluated["configs"][0] == evaluated["configs"][1]

    assert comparable(resumed["evals"]) == comparable(rows) and resumed["best"] == evaluated["best"]


def test_two_runs_are_identical(tmp_path, monkeypatch, mlflow_uri):
    results = []
    for name in ("a", "b"):
        root = make_project(tmp_path / name)
        monkeypatch.chdir(root)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
        train(tiny_params(max_steps=3, log_every=1, ema_decay=0.9))
        results.append((generator_tensors(), comparable(read_losses())))
    assert_same_tensors(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_a_completed_run_is_not_trained_again(train_project):
    params = tiny_params(max_steps=6)
    train(params)
    first = (generator_tensors(), read_losses(), paths.RUN.run_record.read_text())
    checkpoints = sorted(paths.RUN.checkpoints_dir.glob("*.pt"))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    import shutil

    shutil.rmtree("reports")  # as DVC does before rerunning a stage
    paths.RUN.generator.unlink()
    train(params)
    assert sorted(paths.RUN.checkpoints_dir.glob("*.pt")) == checkpoints
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps  # nothing trained, nothing saved
    assert_same_tensors(generator_tensors(), first[0])
    assert read_losses() == first[1]
    assert paths.RUN.run_record.read_text() == first[2]
    assert sorted(p.name for p in paths.RUN.samples_dir.iterdir()) == ["epoch_001.png"]


def identity_set(identity: dict) -> Path:
    """Where a superseded run's checkpoints are kept: sha256 of its identity's sorted JSON, 16 hex."""
    return SUPERSEDED / hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def test_changed_params_train_from_scratch_and_keep_old_checkpoints(train_project, capsys):
    train(tiny_params(max_steps=6))
    old = sorted(p.name for p in paths.RUN.checkpoints_dir.glob("*.pt"))
    kept = identity_set(torch.load(paths.RUN.checkpoints_dir / old[-1], weights_only=True)["identity"])
    train(tiny_params(max_steps=3, lr_g=3e-4))
    out = capsys.readouterr().out
    assert f"trained with other params (train.lr_g 0.0001 -> 0.0003); moved its checkpoints to {kept}/" in out
    assert "training from scratch" in out
    assert sorted(p.name for p in paths.RUN.checkpoints_dir.glob("*.pt")) == ["step_0000003.pt"]
    assert sorted(p.name for p in kept.glob("*.pt")) == old
    assert [int(r["step"]) for r in read_losses()] == [3]


def test_a_mistaken_run_keeps_the_first_runs_checkpoints_and_the_first_run_resumes_from_them(train_project,
                                                                                             capsys):
    """A -> B (other params) -> A: A's second run resumes from A's newest checkpoint, trains nothing."""
    a = tiny_params()  # 12 steps: checkpoints 8, 10, 12 kept
    train(a)
    a_checkpoints = {p.name: p.read_bytes() for p in paths.RUN.checkpoints_dir.glob("step_*.pt")}
    a_generator, a_record = generator_tensors(), json.loads(paths.RUN.run_record.read_text())
    a_set = identity_set(torch.load(paths.RUN.checkpoints_dir / "step_0000012.pt", weights_only=True)["identity"])
    train(tiny_params(seed=1, max_steps=5))  # the mistake
    b_set = identity_set(torch.load(paths.RUN.checkpoints_dir / "step_0000005.pt", weights_only=True)["identity"])
    capsys.readouterr()

    train(a)
    out = capsys.readouterr().out
    assert f"{a_set}/" in out and "back" in out  # says that it moved A's set back
    assert "resuming from models/checkpoints/step_0000012.pt (step 12 of 12)" in out
    assert {p.name: p.read_bytes() for p in paths.RUN.checkpoints_dir.glob("step_*.pt")} == a_checkpoints
    assert not a_set.exists()
    assert sorted(p.name for p in b_set.glob("*.pt")) == ["step_0000005.pt"]  # B's set kept in its turn
    assert_same_tensors(generator_tensors(), a_generator)
    assert json.loads(paths.RUN.run_record.read_text())["mlflow_run_id"] == a_record["mlflow_run_id"]


def test_superseded_sets_over_the_cap_are_removed_oldest_first(train_project, capsys):
    sets = [SUPERSEDED / (letter * 16) for letter in "abc"]
    for age, kept in zip((3, 2, 1), sets):  # hours; a is the oldest
        kept.mkdir(parents=True)
        (kept / "step_0000001.pt").write_bytes(b"\0" * 1_000_000)
        os.utime(kept, (time.time() - age * 3600,) * 2)
    train(tiny_params(max_steps=2, superseded_max_gb=0.0025))
    out = capsys.readouterr().out
    assert sorted(SUPERSEDED.iterdir()) == sets[1:]
    assert f"removed {sets[0]}/ (1.0 MB)" in out


def test_a_second_train_in_the_project_stops_while_the_first_runs(train_project, monkeypatch):
    """A second `sagan train` started during a run stops at once, naming the running one's pid."""
    params = tiny_params()
    Path("params.yaml").write_text(yaml.safe_dump(tiny_raw_params()))
    real_save, second = checkpoint.save, []

    def save_and_start_another(state, step, keep, *args):
        if not second:
            second.append(subprocess.run([sys.executable, "-m", "sagan", "train"], capture_output=True, text=True,
                                         timeout=300))
        return real_save(state, step, keep, *args)

    monkeypatch.setattr(checkpoint, "save", save_and_start_another)
    train(params)
    assert second[0].returncode == 1, second[0].stderr[-2000:]
    assert f"another `sagan train` (pid {os.getpid()}) is running in this project" in second[0].stderr
    assert len(second[0].stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in paths.RUN.checkpoints_dir.glob("*.pt")) == \
        ["step_0000008.pt", "step_0000010.pt", "step_0000012.pt"]
    assert [int(r["step"]) for r in read_losses()] == [4, 8, 12]
    monkeypatch.setattr(checkpoint, "save", real_save)
    train(params)  # the lock went with the run: a rerun is not blocked


def test_a_running_trains_lock_stops_another_and_goes_with_a_kill(train_project):
    with train_lock_held_elsewhere(LOCK) as holder:
        with pytest.raises(SaganError, match=rf"^another `sagan train` \(pid {holder.pid}\) is running in this "
                                             r"project"):
            train(tiny_params(max_steps=2))
        assert not paths.RUN.checkpoints_dir.exists() and not paths.RUN.train_reports_dir.exists()
    train(tiny_params(max_steps=2))  # the OS released the killed holder's lock
    assert [int(r["step"]) for r in read_losses()] == [2]


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
    kept = torch.load(paths.RUN.checkpoints_dir / "step_0000005.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(t).all() for t in kept["trainer"]["G"].values() if t.is_floating_point())
    assert sorted(p.name for p in paths.RUN.checkpoints_dir.glob("*.pt")) == ["step_0000005.pt"]
    assert not paths.RUN.generator.exists()


def published() -> dict[str, bytes]:
    """The train stage's published outputs, by path."""
    files = [paths.RUN.generator, paths.RUN.generator_best, *sorted(paths.RUN.train_reports_dir.rglob("*"))]
    return {str(p): p.read_bytes() for p in files if p.is_file()}


def test_a_non_finite_loss_leaves_the_published_outputs_untouched(train_project, monkeypatch):
    train(tiny_params(seed=1, max_steps=8))  # an earlier run's outputs, epoch_001.png among them
    before = published()
    assert str(paths.RUN.samples_dir / "epoch_001.png") in before and str(paths.RUN.losses_csv) in before
    from sagan.model import losses

    real_g_loss, calls = losses.g_loss, []

    def g_loss_nan_from_step_9(kind, fake_logits):  # after epoch 1 (8 steps) and its grid
        calls.append(1)
        loss = real_g_loss(kind, fake_logits)
        return loss * float("nan") if len(calls) >= 9 else loss

    monkeypatch.setattr(losses, "g_loss", g_loss_nan_from_step_9)
    with pytest.raises(SaganError, match=r"^train: g_loss became NaN/Inf at step 9"):
        train(tiny_params())
    assert published() == before


def test_an_old_format_checkpoint_is_superseded_not_reported_corrupt(train_project, capsys):
    old = checkpoint.checkpoint_path(100, paths.RUN.checkpoints_dir)  # a higher step than the new run's
    old.parent.mkdir(parents=True)
    torch.save({"format": 1, "identity": {}, "step": 100, "trainer": {}, "rng": {}, "loop": {}}, old)
    old_bytes = old.read_bytes()
    train(tiny_params())
    captured = capsys.readouterr()
    assert "corrupt" not in captured.err
    assert f"moved it to {SUPERSEDED / 'format-1'}/" in captured.out
    assert (SUPERSEDED / "format-1" / old.name).read_bytes() == old_bytes
    assert sorted(p.name for p in paths.RUN.checkpoints_dir.glob("*.pt")) == \
        ["step_0000008.pt", "step_0000010.pt", "step_0000012.pt"]


def test_pruning_considers_only_the_current_runs_checkpoints(tmp_path):
    def state(seed: int) -> dict:
        return {"identity": {"train.seed": seed}, "trainer": {}, "rng": {}, "loop": {}}

    checkpoint.save(state(1), 100, 2, tmp_path)  # another run's, at a higher step
    for step in (1, 2, 3):
        checkpoint.save(state(0), step, 2, tmp_path)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == \
        ["step_0000100.pt", "step_0000003.pt", "step_0000002.pt"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_runs_with_gradient_penalty(train_project, precision):
    train(tiny_params(max_steps=4, precision=precision))
    rows = read_losses()
    assert [int(r["step"]) for r in rows] == [4]
    assert float(rows[0]["gp"]) > 0 and np.isfinite(float(rows[0]["d_loss"]))
    saved = torch.load(paths.RUN.checkpoints_dir / "step_0000004.pt", map_location="cpu", weights_only=True)
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

    G, _ = load_generator(paths.RUN.generator, torch.device("cpu"))
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
