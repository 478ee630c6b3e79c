"""The `sagan` console script: one subcommand per stage, user errors as one line and exit 1."""
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_params
from sagan import atomic, paths, stages
from sagan.cli import main
from sagan.errors import one_line
from sagan.stages import COMMANDS
from sagan.metrics import gate
from sagan.metrics.results import Evaluation
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

    from sagan.commands import report

    def fail(params, args):
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: run 'abc' not found\n  (a long server trace)")

    monkeypatch.setattr(report, "run", fail)
    params = write_params(tmp_path / "params.yaml")
    assert main(["report", "--params", str(params)]) == 1
    assert capsys.readouterr().err == ("sagan report: error: MLflow: MlflowException: RESOURCE_DOES_NOT_EXIST: "
                                       "run 'abc' not found\n")


def test_an_exception_is_put_on_one_line():
    state_dict = RuntimeError('Error(s) in loading state_dict for Generator:\n\tMissing key(s) in state_dict: "a".\n')
    assert one_line(state_dict) == "Error(s) in loading state_dict for Generator:"  # a library's point comes first
    assert one_line(state_dict, whole=True) == ('Error(s) in loading state_dict for Generator: Missing key(s) in '
                                                'state_dict: "a".')
    assert one_line(ValueError()) == "ValueError"  # no message: its type
    assert one_line(ValueError("x" * 300)) == "x" * 197 + "..."
    assert one_line(ValueError("x" * 300), limit=None) == "x" * 300


# The evaluation (sagan.metrics.results) whose two files `sagan check-fid` reads.
EVALUATION = {"fid": 9.0, "n_gen": 6, "n_ref": 4, "wall_time_s": 1.0, "floor": {"fid": 2.0}, "ceiling": {"fid": 30.0},
              "run_id": None, "generator": "last", "reference_split": "val", "extractor": "inception-v3-compat",
              "weights_sha256": "ab" * 32, "weights_kind": "standin", "preprocessing": {"crop": 160, "size": 32},
              "synthetic_data": True, "metric_protocols": {}}


@pytest.mark.parametrize("old", ["", "{not json", "\x89PNG\r\n\x1a\n\x00\xff", '{"fid": 8.0, "tolerance": "wide"}'],
                         ids=["empty", "corrupt", "binary", "bad-tolerance"])
def test_check_fid_update_rewrites_an_empty_or_corrupt_baseline(tmp_path, monkeypatch, capsys, old):
    """Before, `--update` refused the baseline that its own hint said to rewrite with it."""
    params = write_params(tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    paths.RUN.metrics.parent.mkdir()
    Evaluation.from_dict(EVALUATION).write(paths.RUN)
    Path("baseline.json").write_bytes(old.encode("latin-1"))
    assert main(["check-fid", "--params", str(params), "--baseline", "baseline.json", "--update"]) == 0
    assert capsys.readouterr().err == ""
    baseline = gate.read_baseline(Path("baseline.json"))
    assert (baseline["fid"], baseline["tolerance"], baseline["protocol"]["n_gen"]) == (9.0, gate.DEFAULT_TOLERANCE, 6)
    assert main(["check-fid", "--params", str(params), "--baseline", "baseline.json"]) == 0


def test_check_fid_update_onto_a_directory_is_one_line(tmp_path, monkeypatch, capsys):
    """Before, `sagan check-fid --update --baseline DIR` ended in an IsADirectoryError traceback."""
    params = write_params(tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    paths.RUN.metrics.parent.mkdir()
    Evaluation.from_dict(EVALUATION).write(paths.RUN)
    Path("baselines").mkdir()
    assert main(["check-fid", "--params", str(params), "--baseline", "baselines", "--update"]) == 1
    assert capsys.readouterr().err == ("sagan check-fid: error: baselines: is a directory, so it cannot be written "
                                       "as a file (hint: give the path of the file to write)\n")
    assert os.listdir("baselines") == []


def test_an_error_under_a_progress_bar_starts_on_its_own_line(tmp_path, monkeypatch, capsys):
    """Before, a disk-full line was printed onto the end of the training progress bar."""
    from tqdm import tqdm

    from sagan.commands import train

    def fail(params, args):
        bar = tqdm(total=10, desc="train")  # open, as the training loop's bar is when a write fails
        bar.update(3)
        raise atomic.no_space_error("models/checkpoints/step_0000003.pt")

    monkeypatch.setattr(train, "run", fail)
    assert main(["train", "--params", str(write_params(tmp_path / "params.yaml"))]) == 1
    err = capsys.readouterr().err
    assert "train:  30%" in err
    assert err.endswith("\nsagan train: error: no space left on device while writing "
                        f"models/checkpoints/step_0000003.pt (hint: {atomic.NO_SPACE_HINT})\n")
