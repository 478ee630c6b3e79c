"""The `sagan` console script: one subcommand per stage, user errors as one line and exit 1."""
import importlib
import subprocess
import sys
from pathlib import Path

from conftest import write_params
from sagan import stages
from sagan.cli import COMMANDS, main
from sagan.params import Params, load_params
from sagan.stages import STAGES


def test_every_pipeline_stage_is_a_command_with_run_and_its_param_keys():
    """`sagan --help` lists the stages in graph order, and each stage module is runnable and
    declares the params the orchestrators track (read from its source by sagan.stages)."""
    assert list(COMMANDS)[: len(STAGES)] == [stages.command(s) for s in STAGES]
    for stage in STAGES:
        module = importlib.import_module(stages.module(stage))
        assert callable(module.run) and module.PARAM_KEYS == stages.param_keys(stage), stage


def test_bad_params_file_is_one_line_on_stderr_and_exit_1(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("split:\n  seeed: 1\n")
    proc = subprocess.run([sys.executable, "-m", "sagan", "split", "--params", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"sagan split: error: {bad}: unknown param 'split.seeed' (hint: did you mean 'split.seed'?)"
    ]


def test_missing_params_file_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["prepare"]) == 1
    assert "params.yaml: params file not found" in capsys.readouterr().err


def test_sagan_params_repairs_a_broken_params_file(tmp_path, monkeypatch):
    """Switching profiles must not need a valid params.yaml: that is how a user gets one back."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    broken = tmp_path / "params.yaml"
    broken.write_text("train: [unclosed\n")
    assert main(["prepare", "--params", str(broken)]) == 1
    assert main(["params", "--profile", "paper", "--params", str(broken)]) == 0
    assert load_params(broken) == Params()


def test_an_mlflow_failure_mid_stage_is_one_line(tmp_path, monkeypatch, capsys):
    from mlflow.exceptions import MlflowException

    from sagan.report import build

    def fail(params, args):
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: run 'abc' not found\n  (a long server trace)")

    monkeypatch.setattr(build, "run", fail)
    params = write_params(tmp_path / "params.yaml")
    assert main(["report", "--params", str(params)]) == 1
    assert capsys.readouterr().err == ("sagan report: error: MLflow: MlflowException: RESOURCE_DOES_NOT_EXIST: "
                                       "run 'abc' not found\n")
