"""The MLflow UI (`make ui`) in a real headless browser (Debian's chromium), against a store holding
two real training runs made by the project's own train and evaluate: the page `make ui` prints
(sagan.tracking.ui_url) opens on the runs table, not the GenAI overview; the table names each run,
what it was trained on (Dataset) and its entry point (Source); the compare page shows each run's FID.

Without chromium the test skips locally but FAILS under CI=1 (conftest's chromium fixture). The
screenshot is kept under $SAGAN_TEST_ARTIFACTS (default: the test's tmp dir) for a human look.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

from helpers import UI_WINDOW, free_port, make_project, render_dom, tiny_params, train, visible_lines
from sagan import paths, tracking
from sagan.cli import build_parser
from sagan.commands import evaluate as evaluate_command, fid_bounds, fid_ref
from sagan.metrics import extractor
from sagan.params import MlflowParams

# Two runs named as `dvc exp run` names them (DVC_EXP_NAME), each with its train.lr_d.
RUNS = {"lr-d-4e-4": 4e-4, "lr-d-2e-4": 2e-4}
SERVER_TIMEOUT_S = 120  # `mlflow ui` imports MLflow's server before it answers: seconds, more on a busy machine
ARGS = build_parser().parse_args(["evaluate", "--params", "params.yaml"])


@dataclasses.dataclass
class Ui:
    url: str  # the server's root
    mlflow_params: MlflowParams
    runs: dict[str, dict]  # run name -> {"run_id", "fid" (metrics.json's), "data_fingerprint", "reference_sha256"}
    experiment_id: str


def _log_tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.is_file() else "(no log)"


def _wait_until_up(url: str, server: subprocess.Popen, log: Path) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"`mlflow ui` exited with {server.returncode} before answering; its log ends:\n"
                        f"{_log_tail(log)}")
        try:
            with opener.open(f"{url}/health", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    pytest.fail(f"`mlflow ui` did not answer {url}/health within {SERVER_TIMEOUT_S} s; its log ends:\n{_log_tail(log)}")


def _stop(server: subprocess.Popen) -> None:
    """The server and its workers: its own session (start_new_session), signalled by its PID."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _ui_params():
    """tiny_params in an experiment of its own, 4 steps a run, evaluated on 6 generated images against
    4 reference images (stand-in Inception): seconds."""
    params = tiny_params(max_steps=4, log_every=2)
    # Each run logs its generator (the Models column), unregistered: the registry has tests of its own.
    mlflow_params = dataclasses.replace(params.mlflow, experiment="test-mlflow-ui", log_model=True, registered_model="")
    return dataclasses.replace(params, mlflow=mlflow_params,
                               fid=dataclasses.replace(params.fid, reference_max_images=4, num_samples=6,
                                                       kid_subset_size=3, batch_size=8, device="cpu"))


@pytest.fixture
def mlflow_ui(chromium, tmp_path, monkeypatch, mlflow_uri) -> Ui:  # chromium first: no browser, no setup
    root = make_project(tmp_path / "project")
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)  # the session's store: creating one takes seconds
    params = _ui_params()
    tracking.client(params.mlflow)  # creates the store's tables (if new) before the server opens it
    url, log = f"http://127.0.0.1:{free_port()}", tmp_path / "mlflow-ui.log"
    mlflow_cli = Path(sys.executable).with_name("mlflow")  # the venv's, as `make ui` runs it
    with open(log, "wb") as out:
        # Started now so that it imports while the runs train; the job runner (GenAI jobs) is left out.
        server = subprocess.Popen([str(mlflow_cli), "ui", "--backend-store-uri", tracking.tracking_uri(params.mlflow),
                                   "--host", "127.0.0.1", "--port", url.rpartition(":")[2], "--workers", "1"],
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        runs = {}
        extractor.standin_weights(paths.STANDIN_WEIGHTS_DIR)
        for i, (name, lr_d) in enumerate(RUNS.items()):
            monkeypatch.setenv("DVC_EXP_NAME", name)
            run_params = dataclasses.replace(params, train=dataclasses.replace(params.train, lr_d=lr_d))
            train(run_params)
            if i == 0:
                fid_ref.run(run_params, ARGS)
                fid_bounds.run(run_params, ARGS)
            evaluate_command.run(run_params, ARGS)
            record = json.loads(paths.RUN.run_record.read_text())
            runs[name] = {"run_id": record["mlflow_run_id"], "data_fingerprint": record["data_fingerprint"],
                          "fid": json.loads(paths.RUN.metrics.read_text())["fid"],
                          "reference_sha256": hashlib.sha256(paths.FID_REFERENCE.read_bytes()).hexdigest()}
        experiment = tracking.client(params.mlflow).get_experiment_by_name(params.mlflow.experiment)
        _wait_until_up(url, server, log)
        yield Ui(url, params.mlflow, runs, experiment.experiment_id)
    finally:
        _stop(server)


def _metric_row(dom: str, key: str) -> list[float]:
    """The values in the compare page's row of metric `key`: in its Metrics table, the cells at the
    same height as the metric's name."""
    metrics = dom[dom.index(">Metrics<"):dom.index(">Artifacts<")]
    name = re.search(r'top: (\d+)px;[^"]*"><a [^>]*(?:\?|&amp;)metric=%22' + re.escape(quote(key, safe="")) + '%22',
                     metrics)
    assert name, f"metric {key!r} is not in the compare page's Metrics table"
    return [float(v) for v in re.findall(r'top: %spx;[^"]*"><span[^>]*>([^<]+)</span>' % name.group(1), metrics)]


def test_the_mlflow_ui_opens_on_the_runs_table_and_compares_fid(chromium, mlflow_ui, artifacts, tmp_path):
    names = list(mlflow_ui.runs)

    # The page `make ui` prints: the runs table in Model training mode, lowest FID first.
    screenshot = artifacts / "mlflow_ui_runs.png"
    dom = render_dom(chromium, tmp_path / "profile-runs", tracking.ui_url(mlflow_ui.mlflow_params, mlflow_ui.url),
                     lambda d: all(name in visible_lines(d) for name in names), f"--screenshot={screenshot}")
    lines = visible_lines(dom)
    assert lines[0] == f"Runs - Experiment {mlflow_ui.experiment_id} - MLflow", f"not the runs table: {lines[:12]}"
    assert "Overview" not in lines, "the GenAI overview's navigation is shown"
    assert {"Run Name", "Dataset", "Source", "Models"} <= set(lines), lines
    assert set(names) <= set(lines), f"the runs table does not list both runs: {lines}"
    (fingerprint,) = {run["data_fingerprint"] for run in mlflow_ui.runs.values()}  # both trained on the same data
    assert lines.count(f"synthetic CelebA ({fingerprint[:8]})") == len(names), "Dataset column: the training data"
    assert lines.count("training") == len(names)  # the input's context
    reference_sha256 = mlflow_ui.runs[names[0]]["reference_sha256"]
    assert f"synthetic CelebA FID reference (val) ({reference_sha256[:8]})" in lines
    assert lines.count("sagan train") == len(names), "Source column: the entry point"
    assert lines.count("generator") == len(names), "Models column: each run's logged generator"
    assert "Sort: fid" in lines
    with Image.open(screenshot) as shot:
        assert shot.size == UI_WINDOW

    # The compare page of both runs: FID beside FID, as metrics.json has it (the UI shows 4 digits).
    run_ids = [run["run_id"] for run in mlflow_ui.runs.values()]
    compare = (f"{mlflow_ui.url}/#/compare-runs?runs={quote(json.dumps(run_ids))}"
               f"&experiments={quote(json.dumps([mlflow_ui.experiment_id]))}")
    dom = render_dom(chromium, tmp_path / "profile-compare", compare, lambda d: ">Metrics<" in d and ">Artifacts<" in d)
    assert f"Comparing {len(names)} Runs from 1 Experiment" in visible_lines(dom)
    fids = [run["fid"] for run in mlflow_ui.runs.values()]
    assert _metric_row(dom, "fid") == pytest.approx(fids, rel=1e-3)
