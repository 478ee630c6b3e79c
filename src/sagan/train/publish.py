"""What a training run makes public, on rank 0 only: its MLflow run (RunPublisher) and its outputs.

The MLflow run is opened once the run has resumed, logged to at log points, epoch ends and
evaluations (never per step), and ended whatever happens. A store that stops answering mid-run (a
tracking server gone) costs the logging from then on, never the training or its outputs
(RunPublisher.to_mlflow); rerunning `sagan train` logs what the run lacks (log_missing).

The outputs (generator.pt, generator_best.pt, losses.csv, evals.csv, samples/, run.json) are made
from the final LoopState alone and published together after a successful run, run.json last, so
that a killed or failed run leaves the previous run's outputs as they were, never half of each.
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Iterator

import torch

from sagan import paths, tracking
from sagan.atomic import atomic_dir, atomic_path
from sagan.data.loader import DatasetInfo
from sagan.errors import one_line
from sagan.model.io import save_generator
from sagan.model.networks import Generator
from sagan.model.registry import ARTIFACT, log_generator
from sagan.model.sample import save_grid
from sagan.params import Params, flatten
from sagan.run_record import RunRecord
from sagan.train import records
from sagan.train.dist import DistContext
from sagan.train.state import LoopState
from sagan.train.step import GanTrainer


def grid_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.png"


def train_metrics(row: dict) -> dict[str, float]:
    """A losses.csv row as the MLflow run's `train/` metrics."""
    return {f"train/{k}": float(v) for k, v in row.items() if k != "step"}


def eval_metrics(row: dict) -> dict[str, float]:
    """An evals.csv row as the MLflow run's `eval/` metrics (without the sample counts)."""
    return {f"eval/{k}": float(v) for k, v in row.items() if k != "step" and not k.startswith("n_")}


def log_grid_artifact(run: tracking.MlflowRun, epoch: int, images: torch.Tensor) -> None:
    """An epoch's sample grid as the run's artifact samples/epoch_NNN.png, from a temporary file."""
    with tempfile.TemporaryDirectory(prefix="sagan-grid-") as tmp:
        path = Path(tmp) / grid_name(epoch)
        save_grid(images, path)
        run.log_artifact(path, "samples")


def log_missing(run: tracking.MlflowRun, state: LoopState) -> None:
    """The log points, evaluations and grids of `state` that its MLflow run lacks (they came while
    the store did not answer): a rerun of a completed run logs them."""
    logged = run.metric_steps("train/d_loss")
    for row in state.log_rows:
        if row["step"] not in logged:
            run.log_metrics(train_metrics(row), step=row["step"])
    logged = run.metric_steps("eval/fid")
    for row in state.evals:
        if row["step"] not in logged:
            run.log_metrics(eval_metrics(row), step=row["step"])
    logged = run.artifact_names("samples")
    for epoch in sorted(state.grids):
        if grid_name(epoch) not in logged:
            log_grid_artifact(run, epoch, state.grids[epoch])


class RunPublisher:
    """Rank 0's MLflow run of one training run, and the outputs it publishes at the end."""

    def __init__(self, params: Params, info: DatasetInfo, ctx: DistContext, outputs: paths.RunOutputs,
                 study: dict | None, tags: dict[str, str]):
        """`study`: what run.json records of the study cell the run is, if any; `tags`: MLflow tags
        beside the run's own."""
        self.params, self.info, self.ctx, self.outputs = params, info, ctx, outputs
        self.study, self.tags = study, tags
        self.mlflow_run: tracking.MlflowRun | None = None
        self.mlflow_lost: str | None = None  # why MLflow stopped taking this run's logging, and when

    @cached_property
    def metadata(self) -> dict:
        """tracking.run_metadata of this run: the MLflow tags and run.json share it."""
        metadata = tracking.run_metadata(self.params.mlflow, self.info.fingerprint, self.info.synthetic)
        return {**metadata, "study": self.study} if self.study else metadata

    # -- MLflow ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def tracked(self, state: LoopState) -> Iterator[None]:
        """The MLflow run open for the block: the one that `state` (a resumed checkpoint's) names
        reopened, or a new one, whose id `state` records; ended FINISHED when the block succeeds,
        FAILED otherwise, with one line saying what it lacks if logging to it failed."""
        tags = tracking.run_tags(self.metadata) | self.tags
        self.mlflow_run = tracking.MlflowRun.start_or_resume(self.params.mlflow, state.mlflow_run_id or None, tags,
                                                             flatten(self.params), tracking.training_input(self.info))
        state.mlflow_run_id = self.mlflow_run.run_id
        ok = False
        try:
            yield
            ok = True
        finally:
            self.finish_mlflow(ok, state.step)

    def to_mlflow(self, step: int, log) -> None:
        """`log(mlflow_run)`, unless logging to it failed before: a failure (the tracking server
        gone, a full disk) at `step` is recorded in mlflow_lost and ends this run's logging, never
        the training; finish_mlflow says what was not logged."""
        if self.mlflow_lost:
            return
        try:
            log(self.mlflow_run)
        except Exception as exc:  # MLflow, requests and the server's refusals raise many types
            self.mlflow_lost = f"at step {step} ({one_line(exc, limit=300)})"

    def log_row(self, row: dict) -> None:
        """A log point: a losses.csv row, at its step."""
        self.to_mlflow(row["step"], lambda run: run.log_metrics(train_metrics(row), step=row["step"]))

    def log_eval(self, row: dict) -> None:
        """An evaluation during training: an evals.csv row, at its step."""
        self.to_mlflow(row["step"], lambda run: run.log_metrics(eval_metrics(row), step=row["step"]))

    def log_grid(self, epoch: int, images: torch.Tensor, step: int) -> None:
        """An epoch's sample grid, now; the file in samples/ is published at the end."""
        self.to_mlflow(step, lambda run: log_grid_artifact(run, epoch, images))

    def log_model(self, run: tracking.MlflowRun, step: int) -> None:
        """The published generator as an MLflow model of this run (and a registered version). It
        is logged after the outputs are published, so a store that refuses it costs a warning, not
        the trained generator."""
        if any(output.step == step and run.client.get_logged_model(output.model_id).name == ARTIFACT
               for output in run.client.get_run(run.run_id).outputs.model_outputs):
            return  # the outputs of a completed run rewritten: this generator is logged already
        try:
            info = log_generator(self.params.mlflow, run.run_id, self.outputs.generator, step)
        except Exception as exc:  # MLflow and torch.export raise many types; the outputs are safe
            print(f"sagan train: warning: the generator was not logged to MLflow ({type(exc).__name__}: "
                  f"{one_line(exc)})", file=sys.stderr)
            return
        version = (f", registered as models:/{self.params.mlflow.registered_model}/{info.registered_model_version}"
                   if info.registered_model_version else "")
        print(f"sagan train: MLflow model {info.model_uri} (runs:/{run.run_id}/generator){version}")

    def finish_mlflow(self, ok: bool, step: int) -> None:
        """End the MLflow run; if logging to it failed, say in one line what it lacks and how to add it."""
        self.mlflow_run.stop_system_metrics()
        self.to_mlflow(step, lambda run: run.finish(ok))
        if self.mlflow_lost:
            model = ", the model" if self.params.mlflow.log_model else ""
            print(f"sagan train: warning: MLflow stopped logging {self.mlflow_lost}: run {self.mlflow_run.run_id} in "
                  f"{tracking.shown_uri(self.params.mlflow)} lacks the metrics and sample grids from then on, the "
                  f"run's summary{model} and its end{'; the outputs are written' if ok else ''}; rerun `sagan train` "
                  f"once the store answers, and it logs them", file=sys.stderr)

    # -- outputs -----------------------------------------------------------------------------
    def publish(self, state: LoopState, trainer: GanTrainer, epochs: int, images_seen: int) -> None:
        """The outputs of the final `state` (`epochs` begun, `images_seen` over all ranks), then to
        MLflow what the run lacks of it, the run's summary and, with mlflow.log_model, the generator.

        Each output is written to its temporary name first; only when all are written are they
        renamed into place, run.json last (ExitStack renames in reverse order of entry). A failure
        before that leaves the previous outputs untouched. Without evaluations the best generator is
        the last one."""
        img_per_s = images_seen / state.wall_time_s if state.wall_time_s > 0 else 0.0
        device = self.ctx.device.type + (f" x{self.ctx.world_size}" if self.ctx.distributed else "")
        model, size, ema = self.params.model, self.info.size, trainer.ema is not None
        with contextlib.ExitStack() as publishing:
            out = self.outputs
            run_record = publishing.enter_context(atomic_path(out.run_record))
            samples = publishing.enter_context(atomic_dir(out.samples_dir))
            losses = publishing.enter_context(atomic_path(out.losses_csv))
            evals = publishing.enter_context(atomic_path(out.evals_csv))
            best = publishing.enter_context(atomic_path(out.generator_best))
            generator = publishing.enter_context(atomic_path(out.generator))
            save_generator(generator, trainer.sampling_model(), model, size, ema=ema)
            best_generator = trainer.sampling_model()
            if state.best is not None:
                best_generator = Generator(model, size)
                best_generator.load_state_dict(state.best["state_dict"])
            save_generator(best, best_generator, model, size, ema=ema)
            records.write_losses(state.log_rows, state.mlflow_run_id, losses)
            records.write_evals(state.evals, state.mlflow_run_id, evals)
            for epoch, images in sorted(state.grids.items()):
                save_grid(images, samples / grid_name(epoch))
            RunRecord(**{
                **self.metadata, "mlflow_run_id": state.mlflow_run_id, "steps": state.step, "epochs": epochs,
                "wall_time_s": state.wall_time_s, "img_per_s": img_per_s, "device": device,
                "params": flatten(self.params),
                "best_step": state.best["step"] if state.best else None,
                "best_fid": state.best["fid"] if state.best else None,
            }).write(run_record)
        step = state.step
        self.to_mlflow(step, lambda run: log_missing(run, state))
        # the run-level summary, for the report's run-history table
        self.to_mlflow(step, lambda run: run.log_metrics({tracking.METRIC_STEPS: step, tracking.METRIC_IMG_PER_S:
                                                          img_per_s, tracking.METRIC_WALL_TIME: state.wall_time_s},
                                                         step=step))
        if self.params.mlflow.log_model:
            self.to_mlflow(step, lambda run: self.log_model(run, step))
