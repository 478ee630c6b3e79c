"""Issue 27's training-speed options: lazy regularisation (train.gp_every), a compiled training step,
and the benchmark scripts' quick modes."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sagan.errors import SaganError
from sagan.params import ModelParams, Params, TrainParams, parse_params
from sagan.train.checkpoint import training_identity
from sagan.train.dist import DistContext
from sagan.train.step import METRICS, GanTrainer

ROOT = Path(__file__).resolve().parents[1]
MODEL = ModelParams(z_dim=16, g_channels=8, d_channels=8)
BATCH = 8


def trainer(**train) -> GanTrainer:
    train = TrainParams(**{"batch_size": BATCH, "channels_last": False, **train})
    return GanTrainer(MODEL, train, 32, DistContext(0, 1, torch.device("cpu")))


def batches(n: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (BATCH, 32, 32, 3), dtype=torch.uint8, generator=gen) for _ in range(n)]


def run_steps(t: GanTrainer, n: int) -> torch.Tensor:
    """METRICS of n training steps (one D update each) on fixed data, latents and noise."""
    z_gen, noise = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    return torch.stack([t.step([b], lambda: torch.randn(BATCH, MODEL.z_dim, generator=z_gen), noise)
                        for b in batches(n)])


# ---------------------------------------------------------------- lazy regularisation

def test_gp_every_is_validated():
    with pytest.raises(SaganError, match=r"'train.gp_every' must be an integer >= 1; got 0"):
        parse_params({"train": {"gp_every": 0}}, partial=True)
    with pytest.raises(SaganError, match=r"'train.gp_every' must be int, got 2.5"):
        parse_params({"train": {"gp_every": 2.5}}, partial=True)
    assert parse_params({"train": {"gp_every": 4}}, partial=True).train.gp_every == 4
    assert Params().train.gp_every == 1  # the paper: the penalty on every D update


def test_gp_every_is_part_of_the_checkpoint_identity():
    lazy = dataclasses.replace(Params(), train=TrainParams(gp_every=4))
    assert training_identity(Params(), "data", 1)["train.gp_every"] == 1
    assert training_identity(lazy, "data", 1)["train.gp_every"] == 4


def test_gp_every_applies_the_penalty_on_every_kth_d_update_weighted_k():
    every, lazy = trainer(), trainer(gp_every=3)
    gp = METRICS.index("gp")
    first_every, first_lazy = run_steps(every, 1), run_steps(lazy, 1)
    # the same first update (same weights, data, noise): the penalty weighted 3x
    assert first_lazy[0, gp].item() == pytest.approx(3 * first_every[0, gp].item(), rel=1e-5)
    assert first_every[0, gp].item() > 0
    later = run_steps(lazy, 5)  # updates 2..6 of the lazy trainer: the penalty on the 4th only
    assert [bool(v > 0) for v in later[:, gp]] == [False, False, True, False, False]
    assert lazy.d_updates == 6 and lazy.state_dict()["d_updates"] == 6

    resumed = trainer(gp_every=3)
    resumed.load_state_dict(lazy.state_dict())
    assert resumed.d_updates == 6  # a resumed run keeps the phase: its next update carries the penalty
    assert run_steps(resumed, 1)[0, gp].item() > 0


# ---------------------------------------------------------------- torch.compile

@pytest.mark.slow
def test_a_compiled_training_step_gives_the_eager_losses():
    """train.compile: True (inductor on the CPU) trains like eager for a few steps, to float rounding."""
    eager = run_steps(trainer(), 3)
    compiled = run_steps(trainer(compile=True), 3)
    assert torch.isfinite(compiled).all()
    assert torch.allclose(compiled, eager, rtol=1e-3, atol=1e-4), (compiled, eager)


# ---------------------------------------------------------------- benchmarks/train.py and gpu.py

def load_benchmark(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_train_benchmark_prints_each_variant_as_a_ratio_to_the_eager_step(capsys):
    load_benchmark("train").main(["--configs", "smoke", "--steps", "1", "--warmup", "1", "--repeats", "1",
                                  "--variants", "before", "no-gp", "--no-baseline"])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| smoke")]
    assert [row[3] for row in rows] == ["eager", "before", "no-gp"]
    assert rows[0][5] == "1.00" and all(float(row[5]) > 0 for row in rows)
    assert all(row[:3] == ["| smoke", "32", "16"] for row in rows)


@pytest.mark.slow
def test_gpu_benchmark_runs_every_row_on_the_cpu_in_quick_mode(tmp_path):
    out = tmp_path / "gpu.md"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick",
                    "--out", str(out)], check=True, cwd=tmp_path, timeout=900)
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    assert [row[0] for row in rows[1:]] == [
        "| step, fp32", "| step, bf16", "| step, bf16 + channels_last", "| reference-style loop, fp32",
        "| Inception (FID), batch 200", "| DDP, bf16 + channels_last, 2 ranks, 4 steps", "| step, bf16 + compile"]
    assert all(float(row[2]) > 0 for row in rows[1:])  # img/s of every row
    assert rows[1][3] == "1.00"  # the ratios are to the fp32 step


def test_gpu_benchmark_fails_loudly_when_a_configuration_errors(tmp_path, monkeypatch):
    gpu = load_benchmark("gpu")
    monkeypatch.setitem(gpu.STEPS, "bf16", {"train": {"precision": "fp8"}})
    out = tmp_path / "gpu.md"
    with pytest.raises(SaganError, match="'train.precision' must be one of fp32, bf16, fp16; got 'fp8'"):
        gpu.main(["--device", "cpu", "--quick", "--out", str(out)])
    assert not out.exists()  # no table with a row missing
