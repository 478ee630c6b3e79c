"""Resume exactness: an interrupted run, resumed, ends exactly where an uninterrupted one does
(CPU, deterministic): same generator tensors, same losses.csv (but img_per_s), same sample grids,
same MLflow run. In-process (interrupted right after a checkpoint) and with a real SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers import (assert_same_tensors, comparable, generator_tensors, make_project, read_losses, tiny_params,
                     tiny_raw_params, train)
from sagan import paths
from sagan.train import checkpoint

RESUME_TRAIN = dict(max_steps=12, ema_decay=0.9)  # checkpoints at 5, 8 (epoch end), 10, 12


def outputs() -> dict:
    losses = comparable(read_losses())
    return {"G": generator_tensors(), "losses": losses,
            "grids": {p.name: p.read_bytes() for p in sorted(paths.RUN.samples_dir.iterdir())},
            "run": yaml.safe_load(paths.RUN.run_record.read_text())}


def assert_same_outputs(a: dict, b: dict) -> None:
    assert_same_tensors(a["G"], b["G"])
    assert a["losses"] == b["losses"]
    assert a["grids"] == b["grids"] and list(a["grids"]) == ["epoch_001.png", "epoch_002.png"]
    assert a["run"]["steps"] == b["run"]["steps"] == 12


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mlflow_uri) -> dict:
    root = make_project(tmp_path_factory.mktemp("uninterrupted") / "project")
    cwd, env = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(root)
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    try:
        train(tiny_params(**RESUME_TRAIN))
        return outputs()
    finally:
        os.chdir(cwd)
        os.environ.pop("MLFLOW_TRACKING_URI") if env is None else os.environ.update(MLFLOW_TRACKING_URI=env)


@pytest.mark.parametrize("corrupt_newest", [False, True], ids=["newest", "corrupt-newest-falls-back"])
def test_resume_after_interruption_equals_uninterrupted_run(train_project, monkeypatch, capsys, uninterrupted,
                                                            corrupt_newest):
    real_save, saved = checkpoint.save, []

    def save_then_die(state, step, keep, *args):
        saved.append(real_save(state, step, keep, *args))
        if len(saved) == 2:  # steps 5 and 8: dies mid-log-window, at an epoch end
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_params(**RESUME_TRAIN))
    monkeypatch.setattr(checkpoint, "save", real_save)
    run_id = torch.load(saved[0], weights_only=True)["loop"]["mlflow_run_id"]
    if corrupt_newest:
        saved[1].write_bytes(saved[1].read_bytes()[:1000])  # a truncated file
    capsys.readouterr()

    train(tiny_params(**RESUME_TRAIN))
    captured = capsys.readouterr()
    resumed_from = saved[0] if corrupt_newest else saved[1]
    assert f"resuming from {resumed_from} (step {5 if corrupt_newest else 8} of 12)" in captured.out
    assert (f"{saved[1]}: corrupt checkpoint" in captured.err) == corrupt_newest
    result = outputs()
    assert_same_outputs(result, uninterrupted)
    assert result["run"]["mlflow_run_id"] == run_id  # the same MLflow run, reopened


def published() -> dict[str, bytes]:
    """The train stage's published outputs, by path."""
    files = [paths.RUN.generator, *sorted(paths.RUN.train_reports_dir.rglob("*"))]
    return {str(p): p.read_bytes() for p in files if p.is_file()}


def test_a_run_killed_after_its_first_checkpoint_leaves_the_published_outputs_untouched(train_project,
                                                                                        monkeypatch):
    train(tiny_params(seed=1, max_steps=8))  # an earlier run's outputs
    before = published()
    real_save, calls = checkpoint.save, []

    def die_at_the_second_checkpoint(state, step, keep, *args):  # step 8: after step 5's, at epoch 1's end
        calls.append(step)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_save(state, step, keep, *args)

    monkeypatch.setattr(checkpoint, "save", die_at_the_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_params(**RESUME_TRAIN))
    assert calls == [5, 8] and (paths.RUN.checkpoints_dir / "step_0000005.pt").is_file()
    assert published() == before


def newest_step(project: Path) -> int:
    return max((int(p.stem.split("_")[1]) for p in (project / paths.RUN.checkpoints_dir).glob("step_*.pt")), default=0)


def test_sigkill_then_resume_equals_a_run_never_killed(tmp_path, monkeypatch, mlflow_uri):
    """`sagan train` subprocesses: one killed by SIGKILL after its first checkpoint, then resumed."""
    raw = tiny_raw_params(max_steps=40, checkpoint_every=10, ema_decay=0.9)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri}
    sagan = [sys.executable, "-m", "sagan", "train"]
    projects = {}
    for name in ("never_killed", "killed"):
        projects[name] = make_project(tmp_path / name)
        (projects[name] / "params.yaml").write_text(yaml.safe_dump(raw))
    subprocess.run(sagan, cwd=projects["never_killed"], env=env, check=True, capture_output=True)

    killed = projects["killed"]
    proc = subprocess.Popen(sagan, cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while newest_step(killed) == 0:
        assert proc.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = newest_step(killed)
    assert 0 < killed_at < 40 and not (killed / paths.RUN.generator).exists()
    assert not (killed / paths.RUN.train_reports_dir).exists()  # nothing published before the end

    resumed = subprocess.run(sagan, cwd=killed, env=env, check=True, capture_output=True, text=True)
    assert f"resuming from models/checkpoints/step_{killed_at:07d}.pt" in resumed.stdout
    results = {}
    for name, root in projects.items():
        monkeypatch.chdir(root)
        results[name] = outputs()
    assert_same_tensors(results["killed"]["G"], results["never_killed"]["G"])
    assert results["killed"]["losses"] == results["never_killed"]["losses"]
    assert results["killed"]["grids"] == results["never_killed"]["grids"]


def test_a_lower_step_limit_resumes_from_a_checkpoint_at_or_below_it_or_is_refused(tmp_path, monkeypatch,
                                                                                   mlflow_uri, capsys):
    """Before, lowering train.max_steps below a finished run resumed "step 12 of 9", trained nothing
    and published the 12-step generator with `train.max_steps: 9` in its run.json."""
    from mlflow import MlflowClient

    from sagan import tracking
    from sagan.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.chdir(make_project(tmp_path / "nine"))
    train(tiny_params(max_steps=9))
    nine = outputs()
    monkeypatch.chdir(make_project(tmp_path / "project"))
    train(tiny_params())  # 12 steps: checkpoints 8, 10 and 12 kept
    twelve = outputs()
    capsys.readouterr()

    train(tiny_params(max_steps=9))
    assert "resuming from models/checkpoints/step_0000008.pt (step 8 of 9)" in capsys.readouterr().out
    shorter = outputs()
    assert_same_tensors(shorter["G"], nine["G"])  # as if trained for 9 steps from the start
    assert shorter["losses"] == nine["losses"] and shorter["grids"] == nine["grids"]
    assert (shorter["run"]["steps"], shorter["run"]["params"]["train.max_steps"]) == (9, 9)
    assert shorter["run"]["mlflow_run_id"] != twelve["run"]["mlflow_run_id"]  # a run of its own
    history = MlflowClient(mlflow_uri).get_metric_history(twelve["run"]["mlflow_run_id"], tracking.METRIC_STEPS)
    assert [m.value for m in history] == [12]  # the 12-step run's record is left as it was
    assert [p.name for p in checkpoint.list_checkpoints(paths.RUN.checkpoints_dir)] == \
        ["step_0000012.pt", "step_0000010.pt", "step_0000009.pt", "step_0000008.pt"]  # the longer run's kept

    before, kept = published(), [p.read_bytes() for p in checkpoint.list_checkpoints(paths.RUN.checkpoints_dir)]
    Path("params.yaml").write_text(yaml.safe_dump(tiny_raw_params(max_steps=4)))
    assert main(["train", "--params", "params.yaml"]) == 1
    assert capsys.readouterr().err == (
        "sagan train: error: train.max_steps: 4 ends the run at step 4, but models/checkpoints holds these params "
        "trained to step 12 and none of their checkpoints at or below step 4 (hint: raise train.max_steps to "
        "publish that run, or move models/checkpoints aside to train 4 steps from scratch)\n")
    assert published() == before
    assert [p.read_bytes() for p in checkpoint.list_checkpoints(paths.RUN.checkpoints_dir)] == kept

    train(tiny_params(max_steps=0, epochs=1))  # 8 steps: the 12-step run's checkpoint at step 8, published
    record = yaml.safe_load(paths.RUN.run_record.read_text())
    assert (record["steps"], record["params"]["train.epochs"]) == (8, 1)
    assert record["mlflow_run_id"] not in (twelve["run"]["mlflow_run_id"], shorter["run"]["mlflow_run_id"])

    train(tiny_params())  # the limit back: the 12-step run is published again, nothing trained
    again = outputs()
    assert_same_tensors(again["G"], twelve["G"])
    assert again["run"]["mlflow_run_id"] == twelve["run"]["mlflow_run_id"]
