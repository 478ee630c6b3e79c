"""Plain helpers the test modules import: params files, tiny training projects, report inputs, chromium."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from sagan import paths
from sagan.data.layout import SHARD_SHA256_KEY, shard_name
from sagan.data.prepare import crop_resize
from sagan.data.synthetic import _jpeg_bytes, draw_face
from sagan.digest import file_digest
from sagan.metrics.results import Evaluation
from sagan.params import MlflowParams, Params, ReportParams, TrainParams, flatten, parse_params
from sagan.profiles import read_profile
from sagan.run_record import RunRecord
from sagan.report import build

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_MEAN_RGB = np.array([200.0, 80.0, 60.0])  # of the training project's images (make_project)


def write_params(path: Path, profile: str = "paper", **sections: dict) -> Path:
    """A complete params file (params files spell out every key): `profile`'s values with the
    keys in `sections` changed, e.g. write_params(p, prepare={"size": 32})."""
    raw = dataclasses.asdict(read_profile(profile, REPO_ROOT).params)
    for section, changes in sections.items():
        raw[section].update(changes)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


class PicklePayload:
    """Unpickling this runs code: open(marker, "w") creates the marker file. Planted in files that
    must be loaded safely (weights_only), a marker that exists afterwards means code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def prepared_faces(indices, size: int = 32) -> torch.Tensor:
    """Synthetic faces as `sagan prepare` stores them (the JPEG, centre-cropped to 160 px and
    resized by prepare's own crop_resize): uint8 NCHW."""
    images = [crop_resize(_jpeg_bytes(draw_face(0, i)), 160, size) for i in indices]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


# -- the training tests' tiny project -----------------------------------------------------------
def make_project(root: Path, n_images: int = 160, size: int = 32, shard_size: int = 100, seed: int = 0) -> Path:
    """Shards, manifest and split of `n_images` noisy reddish images (80% train), built here per
    docs/contracts.md with a known mean colour, so that learning is measurable against it."""
    rng = np.random.default_rng(seed)
    colour = DATA_MEAN_RGB + rng.normal(0, 15, (n_images, 1, 1, 3))
    images = np.clip(colour + rng.normal(0, 10, (n_images, size, size, 3)), 0, 255).round().astype(np.uint8)
    prepared = root / paths.PREPARED_DIR
    prepared.mkdir(parents=True)
    for i, start in enumerate(range(0, n_images, shard_size)):
        np.save(prepared / shard_name(i), images[start:start + shard_size])
    files = [f"{i + 1:06d}.jpg" for i in range(n_images)]
    manifest = pa.table({"file": files,
                         "shard": pa.array([i // shard_size for i in range(n_images)], pa.int32()),
                         "row": pa.array([i % shard_size for i in range(n_images)], pa.int32()),
                         "partition": pa.array([0] * n_images, pa.int8())})
    checksums = [file_digest(prepared / shard_name(i)) for i in range(-(-n_images // shard_size))]
    meta = {b"crop": b"160", b"size": str(size).encode(), b"synthetic": b"true", b"source_zip_md5": b"0" * 32,
            SHARD_SHA256_KEY: json.dumps(checksums).encode()}
    pq.write_table(manifest.replace_schema_metadata(meta), prepared / "manifest.parquet")
    n_val = round(n_images * 0.2)
    (root / paths.SPLIT_DIR).mkdir(parents=True)
    pq.write_table(pa.table({"index": pa.array(range(n_images), pa.int64()), "file": files,
                             "split": ["val" if i < n_val else "train" for i in range(n_images)]}),
                   root / paths.SPLIT_FILE)
    return root


def tiny_params(**train) -> Params:
    return parse_params(tiny_raw_params(**train))


def tiny_raw_params(**train) -> dict:
    """The smoke profile with a tiny model: 128 train images / batch 16 = 8 steps per epoch."""
    raw = dataclasses.asdict(read_profile("smoke", REPO_ROOT).params)
    raw["model"].update(z_dim=16, g_channels=8, d_channels=8, attention_after=2)  # 8x8 attention maps: fast
    raw["train"].update({"batch_size": 16, "max_steps": 12, "log_every": 4, "checkpoint_every": 5,
                         "sample_grid": 16, "device": "cpu", "deterministic": True, "eval_every": 0,
                         # the paper's optimiser and no EMA, whatever the smoke profile tunes for its demo
                         "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.5, "beta2": 0.999, "ema_decay": 0.0, **train})
    raw["mlflow"]["log_model"] = False  # seconds per run; tests/test_train.py logs one and test_registry.py more
    return raw


def train(params: Params) -> None:
    from sagan.train import loop

    loop.train(params, paths.RUN)


def read_losses(path: Path = paths.RUN.losses_csv) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.ftruncate(fd, 0)
os.write(fd, f"{os.getpid()} 2024-01-01T00:00:00\\n".encode())
print("locked", flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def train_lock_held_elsewhere(lock: Path):
    """Another process holding `sagan train`'s project lock (as a running train does), killed with
    SIGKILL when the block ends; yields the process."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def comparable(rows: list[dict]) -> list[dict]:
    """losses.csv rows less what differs between two runs of the same params: speed and MLflow run id."""
    return [{k: v for k, v in row.items() if k not in ("img_per_s", "run_id")} for row in rows]


def generator_tensors(path: Path = paths.RUN.generator) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the report's inputs (test_report, test_report_browser) -------------------------------------
REPORT_EXPERIMENT = "sagan-report-test"
# (run name, logged params that vary, metrics); "beta" is the training run the report is about.
REPORT_RUNS = [
    ("alpha", {"train.lr_d": "0.0004", "train.loss": "bce"},
     {"fid": 30.5, "kid_mean": 0.021, "steps": 100, "train_wall_time_s": 12.5, "mean_img_per_s": 512.0}),
    ("beta", {"train.lr_d": "0.0002", "train.loss": "bce"},
     {"fid": 12.25, "kid_mean": 0.011, "steps": 200, "train_wall_time_s": 25.0, "mean_img_per_s": 480.0}),
    ("gamma", {"train.lr_d": "0.0004", "train.loss": "hinge"}, {"steps": 50}),
    ("delta", {"train.lr_d": "0.0004", "train.loss": "bce"}, {"fid": 50.0}),
]
REPORT_SHARED_PARAMS = {"model.attention": "True", "prepare.size": "32"}  # identical in every run: no column
REPORT_LOSSES = [  # step, epoch, d_loss, g_loss
    (10, 1, 1.5, 0.5), (20, 1, 1.3, 0.9), (30, 2, 1.2, 0.8), (40, 2, 1.0, 1.0), (50, 10, 1.1, 0.85),
]
REPORT_EVALS = [(100, 250.0, 180.0), (200, 150.0, 120.0), (300, 160.0, 100.0)]  # step, FID, SWD during training
REPORT_SAMPLE_COLOURS = {"epoch_001.png": (255, 0, 0), "epoch_002.png": (0, 255, 0), "epoch_010.png": (0, 0, 255)}
STANDIN_SHA256 = hashlib.sha256(b"stand-in weights").hexdigest()


@dataclasses.dataclass
class Store:
    uri: str
    run_ids: dict[str, str]
    experiment: str = REPORT_EXPERIMENT


def make_store(root: Path, experiment: str, runs: list[tuple[str, dict, dict]]) -> Store:
    """A real MLflow sqlite store at `root` with `runs` (name, params that vary, metrics) in `experiment`."""
    import mlflow

    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment(experiment, artifact_location=str(root / "artifacts"))
    run_ids = {}
    for name, varying, metrics in runs:
        run = client.create_run(experiment_id, run_name=name)
        for key, value in {**REPORT_SHARED_PARAMS, **varying}.items():
            client.log_param(run.info.run_id, key, value)
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
        run_ids[name] = run.info.run_id
    return Store(uri, run_ids, experiment)


def report_params(store: Store, **report) -> Params:
    return Params(mlflow=MlflowParams(tracking_uri=store.uri, experiment=store.experiment),
                  train=TrainParams(lr_d=2e-4), report=ReportParams(**report))


def evaluation(run_id: str, **changes) -> Evaluation:
    """An evaluation of run `run_id` in the contract's format (docs/contracts.md, evaluate), with `changes`."""
    return Evaluation.from_dict({
        "run_id": run_id, "generator": "last", "fid": 123.456789, "kid_mean": 0.0123, "kid_std": 0.001, "n_gen": 256,
        "n_ref": 400, "reference_split": "val", "extractor": "inception-v3-compat", "weights_sha256": STANDIN_SHA256,
        "weights_kind": "standin",
        "preprocessing": {"crop": 160, "size": 32, "resize_to_inception": "torch-fidelity bilinear 299"},
        "synthetic_data": True, "wall_time_s": 3.0, "precision": 0.5, "recall": 0.25, "swd": 80.0,
        "n_swd": 256, "floor": {"fid": 20.0, "kid_mean": 0.001, "precision": 0.75, "recall": 0.75, "swd": 30.0,
                                "n_gen": 256},
        "ceiling": {"fid": 300.0, "kid_mean": 0.3, "precision": 0.0, "recall": 0.0, "swd": 230.0, "n_gen": 256},
        "metric_protocols": {"kid": "KID-PROTOCOL", "precision_recall": "PRC-PROTOCOL", "swd": "SWD-PROTOCOL"},
        **changes})


def write_inputs(root: Path, store: Store, *, fid: float = 123.456789, weights_kind: str = "standin",
                 weights_sha256: str = STANDIN_SHA256, synthetic_metrics: bool = True, synthetic_run: bool = True,
                 params: Params | None = None) -> None:
    """The upstream stages' outputs in their contract formats (docs/contracts.md), all of run "beta"
    trained with `params` (default: report_params(store))."""
    run_id = store.run_ids["beta"]
    (root / paths.RUN.train_reports_dir).mkdir(parents=True, exist_ok=True)
    evaluation(run_id, fid=fid, weights_kind=weights_kind, weights_sha256=weights_sha256,
               synthetic_data=synthetic_metrics).write(paths.RunOutputs(root))
    lines = ["run_id,step,epoch,d_loss,g_loss,d_real,d_fake,gp,gamma_g,gamma_d,img_per_s"]
    lines += [f"{run_id},{s},{e},{d},{g},0.6,0.4,0.01,0.0,0.0,500.0" for s, e, d, g in REPORT_LOSSES]
    (root / paths.RUN.losses_csv).write_text("\n".join(lines) + "\n")
    evals = ["step,fid,kid_mean,kid_std,precision,recall,swd,swd_32,swd_16,n_gen,run_id"]
    evals += [f"{step},{fid_at},0.1,0.01,0.2,0.1,{swd_at},{swd_at},{swd_at},64,{run_id}"
              for step, fid_at, swd_at in REPORT_EVALS]
    (root / paths.RUN.evals_csv).write_text("\n".join(evals) + "\n")
    (root / paths.RUN.samples_dir).mkdir(parents=True, exist_ok=True)
    for name, colour in REPORT_SAMPLE_COLOURS.items():
        Image.new("RGB", (48, 48), colour).save(root / paths.RUN.samples_dir / name)
    run_record = {"mlflow_run_id": run_id, "mlflow_experiment": store.experiment,
                  "tracking_uri": store.uri, "steps": 200, "epochs": 10, "wall_time_s": 25.0,
                  "img_per_s": 480.0, "device": "cpu", "profile": "smoke", "git_commit": "0123abc",
                  "data_fingerprint": "f" * 64, "synthetic_data": synthetic_run, "orchestrator": "dvc",
                  "dvc_experiment": "rabid-plop", "best_step": 200, "best_fid": 150.0,
                  "params": flatten(params or report_params(store))}
    (root / paths.RUN.run_record).write_text(json.dumps(run_record))


@contextlib.contextmanager
def project_dir(root: Path):
    """Run a stage with `root` as the project root, against the test's own tracking store."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield


def make_report(root: Path, store: Store, params: Params | None = None, **inputs) -> Path:
    write_inputs(root, store, params=params, **inputs)
    with project_dir(root):
        build.build_report(params or report_params(store), paths.RUN, [])
    return root


# -- chromium (test_report_browser, test_mlflow_ui, test_tracking_server) -----------------------
UI_WINDOW = (1920, 1000)  # the window MLflow's pages are rendered in


def run_chromium(binary: str, profile: Path, *args: str) -> str:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


def visible_lines(dom: str) -> list[str]:
    """The page's text, one line per element, as a reader sees it (no scripts, styles or tags)."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return [line.strip() for line in re.sub(r"<[^>]+>", "\n", text).splitlines() if line.strip()]


def render_dom(binary: str, profile: Path, url: str, ready, *extra: str) -> str:
    """The DOM of `url` once the page shows what `ready(dom)` looks for. MLflow's pages fetch their
    data after loading; the virtual time budget lets them finish, and a page still loading on a busy
    machine is rendered again, in a fresh profile each time (the UI keeps its state in the browser)."""
    for attempt in range(3):
        dom = run_chromium(binary, Path(f"{profile}-{attempt}"), "--no-proxy-server", "--virtual-time-budget=20000",
                           f"--window-size={UI_WINDOW[0]},{UI_WINDOW[1]}", *extra, "--dump-dom", url)
        if ready(dom):
            break
    return dom


def run_record(run_id: str, **fields) -> RunRecord:
    """The run.json of a finished training run `run_id` as `sagan train` writes it, with `fields` changed."""
    return RunRecord(**{"mlflow_run_id": run_id, "mlflow_experiment": "sagan-celeba",
                        "tracking_uri": "sqlite:///mlflow.db", "steps": 200, "epochs": 10, "wall_time_s": 25.0,
                        "img_per_s": 480.0, "device": "cpu", "profile": "smoke", "git_commit": "0123abc",
                        "data_fingerprint": "f" * 64, "synthetic_data": True, "orchestrator": "dvc",
                        "dvc_experiment": "", "best_step": None, "best_fid": None, "params": flatten(Params()),
                        **fields})
