"""The smoke pipeline end to end through DVC and Snakemake, in scratch git repos.

Proves the caching behaviour users rely on: a second run does nothing; a report param reruns only
report; a training param reruns train, evaluate and report but not the data stages or fid_ref; a
kill during training resumes from the checkpoint; and the FID regression check passes (in the
Snakemake scenario, the shorter of the two). What each orchestrator did is recorded once per
session by tests/scenarios.py (started in the background by conftest.py); these tests assert on
the records.
"""
from __future__ import annotations

import pytest

from sagan import paths
from scenarios import AFTER_TRAIN, ALL_STAGES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def dvc_scenario(pipeline_scenarios) -> dict:
    return pipeline_scenarios["dvc"].result()


@pytest.fixture(scope="session")
def snakemake_scenario(pipeline_scenarios) -> dict:
    return pipeline_scenarios["snakemake"].result()


class TestDvc:
    def test_first_run_runs_every_stage_and_second_none(self, dvc_scenario):
        assert dvc_scenario["first"] == ALL_STAGES
        assert dvc_scenario["second"] == set()

    def test_report_param_reruns_only_report(self, dvc_scenario):
        assert dvc_scenario["report_param"] == {"report"}

    def test_exp_run_with_train_param_reruns_train_evaluate_report(self, dvc_scenario):
        assert dvc_scenario["exp_run"] == AFTER_TRAIN
        assert '"fid"' in dvc_scenario["exp_show"] and "2e-04" in dvc_scenario["exp_show"].replace("0.0002", "2e-04")

    def test_kill_during_train_then_rerun_resumes(self, dvc_scenario):
        assert dvc_scenario["killed_at"] > 0
        assert dvc_scenario["resume_ran"] == AFTER_TRAIN
        assert f"(step {dvc_scenario['killed_at']} of" in dvc_scenario["resume_log"]

    def test_outputs_and_labels(self, dvc_scenario):
        project, metrics = dvc_scenario["project"], dvc_scenario["metrics"]
        assert (project / paths.REPORT_HTML).stat().st_size > 10_000
        assert metrics["weights_kind"] == "standin" and metrics["synthetic_data"] is True
        assert metrics["fid"] > 0 and metrics["n_gen"] == 128

    def test_runs_are_tagged_with_dvc(self, dvc_scenario):
        assert {t.get("sagan.orchestrator") for t in dvc_scenario["tags"]} == {"dvc"}


class TestSnakemake:
    def test_first_run_plans_every_rule_and_second_none(self, snakemake_scenario):
        assert snakemake_scenario["first"] == ALL_STAGES
        assert snakemake_scenario["second"] == set()

    def test_report_param_reruns_only_report(self, snakemake_scenario):
        assert snakemake_scenario["report_param"] == {"report"}

    def test_train_param_reruns_train_evaluate_report(self, snakemake_scenario):
        assert snakemake_scenario["train_param"] == AFTER_TRAIN

    def test_kill_during_train_then_rerun_resumes(self, snakemake_scenario):
        assert f"(step {snakemake_scenario['killed_at']} of" in snakemake_scenario["resume_log"]
        assert snakemake_scenario["after_resume"] == set()

    def test_fid_regression_check_passes(self, snakemake_scenario):
        rc, out = snakemake_scenario["check_fid"]
        assert rc == 0, out

    def test_runs_are_tagged_with_snakemake(self, snakemake_scenario):
        assert {t.get("sagan.orchestrator") for t in snakemake_scenario["tags"]} == {"snakemake"}
