"""The `sagan` console script: one subcommand per stage, user errors as one line and exit 1."""
import subprocess
import sys

import pytest

from sagan.cli import COMMANDS, build_parser, main

PIPELINE_STAGES = ["download", "prepare", "split", "fid-ref", "train", "evaluate", "report"]


def test_every_pipeline_stage_is_a_subcommand_with_params():
    assert list(COMMANDS)[: len(PIPELINE_STAGES)] == PIPELINE_STAGES
    for stage in PIPELINE_STAGES:
        args = build_parser().parse_args([stage])
        assert args.params == "params.yaml"


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


def test_unknown_stage_is_rejected_by_argparse():
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["trian"])
    assert exc.value.code == 2
