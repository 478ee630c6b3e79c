"""`sagan train` on a tiny prepared project: outputs per contract, learning, determinism, NaN stop,
precision, completed-run reruns and param changes.

The project is built here (uint8 shards, manifest and split per docs/contracts.md) with reddish
images of a known mean colour, so that learning is measurable against an independent number.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from sagan.errors import SaganError
from sagan.params import Params, parse_params

REPO = Path(__file__).resolve().parents[1]
DATA_MEAN_RGB = np.array([200.0, 80.0, 60.0])
LOSS_COLUMNS = ["step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "gp", "gamma_g", "gamma_d", "img_per_s"]


def make_project(root: Path, n_images: int = 160, size: int = 32, shard_size: int = 100, seed: int = 0) -> Path:
    """Shards, manifest and split of `n_images` noisy reddish images (80% train)."""
    rng = np.random.default_rng(seed)
    colour = DATA_MEAN_RGB + rng.normal(0, 15, (n_images, 1, 1, 3))
    images = np.clip(colour + rng.normal(0, 10, (n_images, size, size, 3)), 0, 255).round().astype(np.uint8)
    prepared = root / "data/prepared"
    prepared.mkdir(parents=True)
    for i, start in enumerate(range(0, n_images, shard_size)):
        np.save(prepared / f"shard_{i:05d}.npy", images[start:start + shard_size])
    files = [f"{i + 1:06d}.jpg" for i in range(n_images)]
    manifest = pa.table({"file": files,
                         "shard": pa.array([i // shard_size for i in range(n_images)], pa.int32()),
                         "row": pa.array([i % shard_size for i in range(n_images)], pa.int32()),
                         "partition": pa.array([0] * n_images, pa.int8())})
    meta = {b"crop": b"160", b"size": str(size).encode(), b"synthetic": b"true", b"source_zip_md5": b"0" * 32}
    pq.write_table(manifest.replace_schema_metadata(meta), prepared / "manifest.parquet")
    n_val = round(n_images * 0.2)
    (root / "data/split").mkdir(parents=True)
    pq.write_table(pa.table({"index": pa.array(range(n_images), pa.int64()), "file": files,
                             "split": ["val" if i < n_val else "train" for i in range(n_images)]}),
                   root / "data/split/split.parquet")
    return root


def tiny_params(**train) -> Params:
    return parse_params(tiny_raw_params(**train))


def tiny_raw_params(**train) -> dict:
    """The smoke profile with a tiny model: 128 train images / batch 16 = 8 steps per epoch."""
    raw = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    raw["model"].update(z_dim=16, g_channels=8, d_channels=8, attention_after=2)  # 8x8 attention maps: fast
    raw["train"].update({"batch_size": 16, "max_steps": 12, "log_every": 4, "checkpoint_every": 5,
                         "sample_grid": 16, "device": "cpu", "deterministic": True, **train})
    return raw


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One SQLite store for the session (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def project(tmp_path, monkeypatch, mlflow_uri) -> Path:
    root = make_project(tmp_path / "project")
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    return root


def train(params: Params) -> None:
    from sagan.train import loop

    loop.run(params, None)


def read_losses(path: Path = Path("reports/train/losses.csv")) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def without_speed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "img_per_s"} for row in rows]


def generator_tensors(path: Path = Path("models/generator.pt")) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def mean_rgb(images_u8: torch.Tensor) -> np.ndarray:
    return images_u8.double().mean(dim=(0, 2, 3)).numpy()


def test_outputs_follow_the_contract(project):
    train(tiny_params())

    rows = read_losses()
    assert list(rows[0]) == LOSS_COLUMNS
    assert [(int(r["step"]), int(r["epoch"])) for r in rows] == [(4, 1), (8, 1), (12, 2)]
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("d_loss", "g_loss", "gp"))
    assert all(0 < float(r["d_real"]) < 1 and 0 < float(r["d_fake"]) < 1 for r in rows)
    # 12 steps of 8 per epoch: epoch 1 ends at step 8, the partial epoch 2 gets its own grid.
    assert sorted(p.name for p in Path("reports/train/samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    # keep_checkpoints 3 of those written at steps 5, 8 (epoch end), 10, 12 (end).
    assert sorted(p.name for p in Path("models/checkpoints").glob("*.pt")) == \
        ["step_0000008.pt", "step_0000010.pt", "step_0000012.pt"]

    saved = torch.load("models/generator.pt", map_location="cpu", weights_only=True)
    assert saved["config"]["image_size"] == 32 and saved["config"]["z_dim"] == 16 and saved["ema"] is False
    last = torch.load("models/checkpoints/step_0000012.pt", map_location="cpu", weights_only=True)
    assert_same_tensors(saved["state_dict"], last["trainer"]["G"])
    assert last["step"] == 12 and last["epoch"] == 1 and last["position"] == 4

    record = json.loads(Path("reports/train/run.json").read_text())
    assert record["steps"] == 12 and record["epochs"] == 2 and record["synthetic_data"] is True
    assert record["profile"] == "smoke" and record["device"] == "cpu"
    import mlflow

    run = mlflow.MlflowClient(record["tracking_uri"]).get_run(record["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr_d"] == "0.0004" and run.data.params["model.z_dim"] == "16"
    assert run.data.tags["sagan.synthetic_data"] == "true" and run.data.tags["sagan.profile"] == "smoke"
    assert run.data.tags["sagan.data_fingerprint"] == record["data_fingerprint"]
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


def test_a_completed_run_is_not_trained_again(project):
    params = tiny_params(max_steps=6)
    train(params)
    first = (generator_tensors(), read_losses(), Path("reports/train/run.json").read_text())
    checkpoints = sorted(Path("models/checkpoints").glob("*.pt"))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    import shutil

    shutil.rmtree("reports")  # as DVC does before rerunning a stage
    Path("models/generator.pt").unlink()
    train(params)
    assert sorted(Path("models/checkpoints").glob("*.pt")) == checkpoints
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps  # nothing trained, nothing saved
    assert_same_tensors(generator_tensors(), first[0])
    assert read_losses() == first[1]
    assert Path("reports/train/run.json").read_text() == first[2]
    assert sorted(p.name for p in Path("reports/train/samples").iterdir()) == ["epoch_001.png"]


def test_changed_params_train_from_scratch_and_keep_old_checkpoints(project, capsys):
    train(tiny_params(max_steps=6))
    old = sorted(p.name for p in Path("models/checkpoints").glob("*.pt"))
    train(tiny_params(max_steps=3, lr_g=3e-4))
    assert "trained with other params (train.lr_g 0.0001 -> 0.0003)" in capsys.readouterr().out
    assert sorted(p.name for p in Path("models/checkpoints").glob("*.pt")) == ["step_0000003.pt"]
    assert sorted(p.name for p in Path("models/checkpoints/superseded").glob("*.pt")) == old
    assert [int(r["step"]) for r in read_losses()] == [3]


def test_a_non_finite_loss_stops_with_step_and_loss_named(project, monkeypatch):
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
    kept = torch.load("models/checkpoints/step_0000005.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(t).all() for t in kept["trainer"]["G"].values() if t.is_floating_point())
    assert sorted(p.name for p in Path("models/checkpoints").glob("*.pt")) == ["step_0000005.pt"]
    assert not Path("models/generator.pt").exists()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_runs_with_gradient_penalty(project, precision):
    train(tiny_params(max_steps=4, precision=precision))
    rows = read_losses()
    assert [int(r["step"]) for r in rows] == [4]
    assert float(rows[0]["gp"]) > 0 and np.isfinite(float(rows[0]["d_loss"]))
    saved = torch.load("models/checkpoints/step_0000004.pt", map_location="cpu", weights_only=True)
    assert bool(saved["trainer"]["scaler_g"]) == (precision == "fp16")  # fp16 alone uses a GradScaler


def test_too_large_a_batch_is_a_clear_error(project):
    with pytest.raises(SaganError, match=r"^train.batch_size: 100 x 1 rank\(s\) x n_critic 2 needs more "
                                         r"than the 128 training images"):
        train(tiny_params(batch_size=100, n_critic=2))


def generated_mean_rgb(params: Params) -> np.ndarray:
    from sagan.model.io import load_generator

    G, _ = load_generator(Path("models/generator.pt"), torch.device("cpu"))
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
def test_training_moves_the_mean_colour_towards_the_data(project, steps, lr, bound):
    # Without the penalty and at a higher lr, a few steps move the colour measurably.
    params = tiny_params(max_steps=steps, gp_lambda=0.0, lr_g=lr, lr_d=lr, log_every=10, checkpoint_every=100)
    before = np.abs(initial_mean_rgb(params) - DATA_MEAN_RGB).mean()
    train(params)
    after = np.abs(generated_mean_rgb(params) - DATA_MEAN_RGB).mean()
    assert after < bound * before, (before, after)
