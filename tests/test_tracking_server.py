"""The team's tracking path: an MLflow tracking server started and stopped by the project's
workflow/mlflow/server.sh, with basic authentication on, and the pipeline's stages logging through
it over HTTP exactly as into a SQLite file; its refusals, its absence and its going away mid-run.

One server (on 127.0.0.1, a free port) serves the module: started by the script, stopped by it by
PID at the end. Users: `alice` trains; `bob` may not touch her experiment.
"""
from __future__ import annotations

import dataclasses
import http.server
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
import requests
import yaml

from helpers import (REPO_ROOT, free_port, make_project, read_losses, render_dom, tiny_params, tiny_raw_params,
                     visible_lines)
from sagan import cli, paths, tracking
from sagan.metrics import extractor

SCRIPT = REPO_ROOT / "workflow/mlflow/server.sh"
ALICE, BOB = ("alice", "alice-password-1"), ("bob", "bob-password-12")
MODEL = "server-test-generator"


@dataclasses.dataclass
class Server:
    url: str
    state: Path
    port: int

    def script(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPT), *args], env={**os.environ, "SAGAN_MLFLOW_DIR": str(self.state)},
                              capture_output=True, text=True, timeout=300)

    def start(self) -> subprocess.CompletedProcess:
        started = self.script("start", "--port", str(self.port), "--workers", "1")
        assert started.returncode == 0, started.stdout + started.stderr
        return started

    def pid(self) -> int:
        return int((self.state / "server.pid").read_text())

    def admin(self) -> tuple[str, str]:
        return "admin", (self.state / "admin-password").read_text().strip()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    port = free_port()
    srv = Server(f"http://127.0.0.1:{port}", tmp_path_factory.mktemp("mlflow-server") / "state", port)
    started = srv.start()
    try:
        assert f"export MLFLOW_TRACKING_URI={srv.url}" in started.stdout
        assert "MLFLOW_TRACKING_USERNAME" in started.stdout and "never in params.yaml" in started.stdout
        from mlflow.server import get_app_client

        with pytest.MonkeyPatch.context() as env:
            user, password = srv.admin()
            env.setenv("MLFLOW_TRACKING_USERNAME", user)
            env.setenv("MLFLOW_TRACKING_PASSWORD", password)
            users = get_app_client("basic-auth", tracking_uri=srv.url)
            for name, secret in (ALICE, BOB):
                users.create_user(name, secret)
        yield srv
    finally:
        pid = srv.pid() if (srv.state / "server.pid").is_file() else None
        stopped = srv.script("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert pid is None or not _alive(pid)


def _as(monkeypatch, server: Server, user: tuple[str, str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a server gone is told at once, not after minutes


def _project(tmp_path, monkeypatch, experiment: str, **mlflow) -> Path:
    """A make_project project (the working directory) with tiny params in `experiment`: 4 steps,
    evaluated on 6 generated images against 4 reference images (stand-in Inception)."""
    root = make_project(tmp_path / "project")
    monkeypatch.chdir(root)
    raw = tiny_raw_params(max_steps=4, log_every=2)
    raw["fid"].update(reference_max_images=4, num_samples=6, kid_subset_size=3, batch_size=8, device="cpu")
    raw["mlflow"].update(experiment=experiment, **mlflow)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    extractor.standin_weights(paths.STANDIN_WEIGHTS_DIR)
    return root


def _sagan(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_the_pipeline_logs_through_an_authenticated_server(server, tmp_path, monkeypatch, capsys):
    """train, fid-ref, fid-bounds, evaluate, report and `sample --model-uri models:/NAME/1`, as
    alice over HTTP: the run, its inputs, metrics, model, registry version and the report's run
    history are the server's; no password reaches a file of the pipeline or MLflow's params."""
    root = _project(tmp_path, monkeypatch, "server-pipeline", log_model=True, registered_model=MODEL)
    _as(monkeypatch, server, ALICE)
    for stage in ("train", "fid-ref", "fid-bounds", "evaluate", "report"):
        rc, out, err = _sagan(capsys, stage)
        assert rc == 0, (stage, out, err)
    rc, out, err = _sagan(capsys, "sample", "--model-uri", f"models:/{MODEL}/1", "--out", "registry.png")
    assert rc == 0, err
    assert _sagan(capsys, "sample", "--generator", str(paths.RUN.generator), "--out", "file.png")[0] == 0

    record, metrics = json.loads(paths.RUN.run_record.read_text()), json.loads(paths.RUN.metrics.read_text())
    assert record["tracking_uri"] == server.url
    from mlflow import MlflowClient

    client = MlflowClient(server.url)  # as alice
    run = client.get_run(record["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied: the server's file system only
    assert run.data.params["train.max_steps"] == "4" and run.data.tags["sagan.data_fingerprint"] == record[
        "data_fingerprint"]
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert inputs["training"].name == "synthetic CelebA" and inputs["training"].digest == record["data_fingerprint"][:8]
    assert inputs["evaluation"].name == "synthetic CelebA FID reference (val)"
    assert run.data.metrics["fid"] == pytest.approx(metrics["fid"]) and run.data.metrics[tracking.METRIC_STEPS] == 4
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/d_loss")] == [2, 4]
    [output] = run.outputs.model_outputs
    assert client.get_logged_model(output.model_id).name == "generator"
    [version] = client.search_model_versions(f"name='{MODEL}'")
    assert (version.version, version.run_id, version.tags["fid"]) == ("1", run.info.run_id, f"{metrics['fid']:.4f}")
    assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "report")} >= {"report.md", "report.html"}
    assert list((server.state / "artifacts").rglob("model.pt2")), "artifacts are kept by the server"
    assert not (root / "mlartifacts").exists() and not (root / "mlruns").exists()

    report = paths.REPORT_MD.read_text()
    assert run.info.run_name in report and f"{metrics['fid']:.2f}" in report  # the run-history table

    import numpy as np
    from PIL import Image

    registry, file = (np.asarray(Image.open(name), dtype=int) for name in ("registry.png", "file.png"))
    assert registry.shape == file.shape and np.abs(registry - file).max() <= 1

    written = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".csv", ".md", ".html", ".yaml")]
    assert not [p for p in written if ALICE[1] in p.read_text(errors="replace")]
    assert ALICE[1] not in json.dumps(run.data.params) + json.dumps(run.data.tags)


class _SignedInBrowser(http.server.ThreadingHTTPServer):
    """A browser signed in to the server: every request passed on with alice's basic-auth header, as
    a browser sends it once she has typed her password at its prompt (headless Chromium has no
    prompt, and refuses a page URL with credentials in it for the UI's own requests)."""

    def __init__(self, upstream: str, user: tuple[str, str]):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802  (http.server's names)
                self._pass_on()

            do_POST = do_PATCH = do_DELETE = do_GET  # noqa: N815

            def _pass_on(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = requests.request(self.command, upstream + self.path, data=body, headers=headers,
                                          auth=outer.user, timeout=60)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "content-encoding", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args):
                pass

        self.user = user
        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


def test_the_servers_ui_shows_the_runs_table_to_a_signed_in_user_only(chromium, server, tmp_path,
                                                                     monkeypatch):
    """The MLflow UI that a team opens is the server itself: the page `make ui` prints for it
    (tracking.ui_url) shows alice's run to a browser that sends her credentials, and none of it
    without them."""
    from mlflow import MlflowClient

    _as(monkeypatch, server, ALICE)
    client = MlflowClient(server.url)
    experiment_id = client.create_experiment("server-ui")
    run = client.create_run(experiment_id, run_name="ui-run-of-alice")
    client.log_metric(run.info.run_id, "fid", 12.5)
    client.set_terminated(run.info.run_id)
    mlflow_params = dataclasses.replace(tiny_params().mlflow, tracking_uri=server.url, experiment="server-ui")
    page = tracking.ui_url(mlflow_params, server.url)
    assert page.startswith(f"{server.url}/#/experiments/{experiment_id}/runs")

    browser = _SignedInBrowser(server.url, ALICE)
    threading.Thread(target=browser.serve_forever, daemon=True).start()
    try:
        dom = render_dom(chromium, tmp_path / "profile-alice", page.replace(server.url, browser.url),
                         lambda d: "ui-run-of-alice" in visible_lines(d))
    finally:
        browser.shutdown()
        browser.server_close()
    lines = visible_lines(dom)
    assert lines[0] == f"Runs - Experiment {experiment_id} - MLflow", lines[:12]
    assert "ui-run-of-alice" in lines, "\n".join(lines[:40])

    anonymous = render_dom(chromium, tmp_path / "profile-anonymous", page, lambda d: True)
    # Refused (401) before the UI loads: neither its page nor the run.
    assert "ui-run-of-alice" not in anonymous and not any("MLflow" in line for line in visible_lines(anonymous))


def test_an_unauthenticated_request_and_a_user_without_permission_are_refused(server, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    answer = requests.post(f"{server.url}/api/2.0/mlflow/experiments/search", json={"max_results": 10}, timeout=30)
    assert answer.status_code == 401
    assert requests.get(f"{server.url}/api/2.0/mlflow/experiments/search", auth=("alice", "wrong"),
                        timeout=30).status_code == 401

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ALICE[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ALICE[1])
    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    experiment_id = client.create_experiment("alice-only")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", BOB[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", BOB[1])
    with pytest.raises(MlflowException) as refused:
        client.delete_experiment(experiment_id)
    assert refused.value.get_http_status_code() == 403
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ALICE[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ALICE[1])
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"


class _OlderServer(http.server.BaseHTTPRequestHandler):
    """An MLflow server of another version, as far as a client sees: it answers /health and
    /version, and has none of the endpoints this MLflow calls."""

    def do_GET(self):  # noqa: N802
        body, status = {"/health": (b"OK", 200), "/version": (b"2.9.2", 200)}.get(self.path, (b"Not Found", 404))
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def older_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OlderServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_bad_servers_and_credentials_are_one_line_each(server, older_server, tmp_path, monkeypatch, capsys):
    _project(tmp_path, monkeypatch, "server-bad-cases")

    def train_error(url: str, user: tuple[str, str]) -> str:
        _as(monkeypatch, server, user)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        rc, _, err = _sagan(capsys, "train")
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 1 and len(lines) == 1, err
        return lines[0]

    nobody = f"http://127.0.0.1:{free_port()}"
    assert train_error(nobody, ALICE) == (
        f"sagan train: error: MLFLOW_TRACKING_URI: no MLflow tracking server answers at {nobody} (ConnectionError) "
        f"(hint: start it: `workflow/mlflow/server.sh start` (`workflow/mlflow/server.sh status` tells whether it "
        f"runs), or ask whoever runs it)")
    assert train_error(server.url, (ALICE[0], "wrong-password")).startswith(
        f"sagan train: error: MLFLOW_TRACKING_URI: the tracking server at {server.url} refused the credentials "
        f"(401 Unauthorized) (hint: export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    from mlflow import __version__

    assert train_error(older_server, ALICE) == (
        f"sagan train: error: MLFLOW_TRACKING_URI: the tracking server at {older_server} (MLflow 2.9.2) has no "
        f"endpoint /api/2.0/mlflow/experiments/search, which this project's MLflow {__version__} calls (hint: run "
        f"the server with MLflow {__version__}: `workflow/mlflow/server.sh start` uses the project's)")

    # alice's experiment, denied to bob by the admin
    _as(monkeypatch, server, ALICE)
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    experiment_id = MlflowClient(server.url).create_experiment("server-alice-private")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.admin()[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin()[1])
    get_app_client("basic-auth", tracking_uri=server.url).grant_user_permission(BOB[0], "experiment", experiment_id,
                                                                                 "DENY")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["mlflow"]["experiment"] = "server-alice-private"
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert train_error(server.url, BOB) == (
        f"sagan train: error: MLFLOW_TRACKING_URI: the tracking server at {server.url} denied user 'bob' "
        f"/api/2.0/mlflow/experiments/get-by-name (403 Permission denied) (hint: ask the server's admin for EDIT permission "
        f"on the experiment (or registered model))")


def test_a_run_outlives_its_server_and_a_rerun_logs_what_it_lacks(server, tmp_path, monkeypatch, capsys):
    """The server stops (by the script, by PID) at the second log point: training finishes and
    writes its outputs, one line says what MLflow lacks; with the server back, `sagan train` again
    logs it. (Last in the module: it restarts the module's server.)"""
    _project(tmp_path, monkeypatch, "server-goes-away")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["train"].update(max_steps=12, log_every=4)  # log points at 4, 8, 12; grids at 8 (epoch 1) and 12
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _as(monkeypatch, server, ALICE)
    log_metrics = tracking.MlflowRun.log_metrics

    def stop_at_step_8(run, metrics, step=0):
        if step == 8 and (server.state / "server.pid").is_file():
            assert server.script("stop").returncode == 0
        return log_metrics(run, metrics, step)

    monkeypatch.setattr(tracking.MlflowRun, "log_metrics", stop_at_step_8)
    rc, _, err = _sagan(capsys, "train")
    assert rc == 0, err
    record = json.loads(paths.RUN.run_record.read_text())
    assert record["steps"] == 12 and [row["step"] for row in read_losses()] == ["4", "8", "12"]
    assert paths.RUN.generator.is_file() and sorted(p.name for p in paths.RUN.samples_dir.iterdir()) == [
        "epoch_001.png", "epoch_002.png"]
    [warning] = [line for line in err.splitlines() if "MLflow stopped logging" in line]
    assert warning.startswith(f"sagan train: warning: MLflow stopped logging at step 8 (MLFLOW_TRACKING_URI: no "
                              f"MLflow tracking server answers at {server.url}")
    assert warning.endswith(f"run {record['mlflow_run_id']} in {server.url} lacks the metrics and sample grids from "
                            f"then on, the run's summary and its end; the outputs are written; rerun `sagan train` "
                            f"once the store answers, and it logs them")

    monkeypatch.setattr(tracking.MlflowRun, "log_metrics", log_metrics)
    server.start()
    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    run_id = record["mlflow_run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "train/d_loss")] == [4]
    assert client.get_run(run_id).info.status == "RUNNING"
    rc, _, err = _sagan(capsys, "train")
    assert rc == 0 and "MLflow stopped logging" not in err, err
    assert json.loads(paths.RUN.run_record.read_text())["mlflow_run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics[tracking.METRIC_STEPS] == 12
    assert sorted(m.step for m in client.get_metric_history(run_id, "train/d_loss")) == [4, 8, 12]
    assert {Path(a.path).name for a in client.list_artifacts(run_id, "samples")} == {"epoch_001.png", "epoch_002.png"}
