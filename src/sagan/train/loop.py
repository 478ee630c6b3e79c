"""`sagan train`: epochs over the on-device training set, logging, checkpoints, resume, outputs.

Data path: the training split is loaded once onto the device as uint8 NHWC; each epoch draws a
permutation there from a seeded generator (its state is checkpointed) and each step gathers and
normalises its batches on the device. There are no DataLoader workers and no host syncs per step:
metrics accumulate in a device tensor, and a device-side "first non-finite step" tracker is read
only at log points and before checkpoints.

Steps and epochs: one step is `n_critic` D updates and one G update, and consumes `n_critic`
global batches. Under torchrun with N ranks, the global batch is N x train.batch_size: every rank
draws the same permutation and the same global latent batch from the shared seed and takes its
own slice, so with no batch norm (or sync_bn) and gp_lambda 0, N ranks x batch b compute the same
updates as one process with batch N x b. An epoch is floor(n_train / (global batch x n_critic))
steps (the incomplete tail is dropped); train.max_steps caps the run.

Outputs are a pure function of the newest checkpoint (whose LoopState holds the log rows and
sample grids), so a resumed run writes the same files as an uninterrupted one, and a rerun of a
completed run only rewrites them. During training only checkpoints are written; generator.pt,
losses.csv, samples/ and run.json are published together after a successful run, run.json last, so
that a killed or failed run leaves the previous run's outputs as they were, never half of each.
MLflow is written only at log points, epoch ends and the end of the run, never per step. A store
that stops answering mid-run (a tracking server gone) costs the logging from then on, never the
training or its outputs (Training.to_mlflow); rerunning `sagan train` logs what the run lacks.

One run per project at a time (sagan.train.lock); before any rank reads a checkpoint, rank 0 leaves
in models/checkpoints/ only those of this run's identity (checkpoint.arrange).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import tempfile
import time
from functools import cached_property
from pathlib import Path

import torch
from tqdm import tqdm

from sagan import paths, tracking
from sagan.atomic import atomic_dir, atomic_path
from sagan.errors import SaganError, one_line
from sagan.model.sample import save_grid
from sagan.params import Params, flatten
from sagan.run_record import RunRecord
from sagan.train import checkpoint, dist, lock, records
from sagan.train.dist import DistContext
from sagan.train.step import LOSSES, METRICS, GanTrainer



@contextlib.contextmanager
def determinism(enabled: bool):
    """torch.use_deterministic_algorithms for the run, restored afterwards (it is process-global)."""
    before, benchmark = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.benchmark = benchmark


def grid_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.png"


@dataclasses.dataclass
class LoopState:
    """Everything the loop carries from step to step, checkpointed and restored as one unit."""

    step: int  # steps done
    perm_state: torch.Tensor  # the permutation generator's state before the draw of the next step's epoch
    metric_sum: torch.Tensor  # METRICS summed over the current log window (on the device)
    window_steps: int  # steps in the current log window
    first_bad: torch.Tensor  # per LOSSES, the first step where it was NaN/Inf, else -1 (on the device)
    log_rows: list[dict]  # the rows of losses.csv
    grids: dict[int, torch.Tensor]  # epoch -> its fixed-z sample grid, uint8 NCHW
    mlflow_run_id: str
    wall_time_s: float  # training seconds up to the newest checkpoint, over all resumptions
    evals: list[dict]  # the rows of evals.csv (train.eval_every)
    best: dict | None  # the lowest-FID evaluation: step, fid and the sampling generator's weights (CPU)

    @classmethod
    def start(cls, perm_state: torch.Tensor, device: torch.device) -> LoopState:
        return cls(step=0, perm_state=perm_state, metric_sum=torch.zeros(len(METRICS), device=device),
                   window_steps=0, first_bad=torch.full((len(LOSSES),), -1, dtype=torch.long, device=device),
                   log_rows=[], grids={}, mlflow_run_id="", wall_time_s=0.0, evals=[], best=None)

    def state_dict(self) -> dict:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, state[field.name])
        self.metric_sum, self.first_bad = self.metric_sum.to(device), self.first_bad.to(device)


class Training:
    """One training run (or its resumption) of one rank."""

    def __init__(self, params: Params, ctx: DistContext, outputs: paths.RunOutputs, study: dict | None = None,
                 tags: dict[str, str] | None = None):
        """`outputs`: where the run writes (paths.RUN, or a study cell's); `study`: what run.json
        records of the study cell it is, if any; `tags`: MLflow tags beside the run's own."""
        from sagan.data.loader import dataset_info, load_split

        self.params, self.train, self.model, self.ctx = params, params.train, params.model, ctx
        self.outputs, self.study, self.tags = outputs, study, tags or {}
        train, device = self.train, ctx.device
        self.info = dataset_info()
        self.data = load_split("train", device=device, verify=params.data.verify_shards)
        n_train = self.data.shape[0]
        self.global_batch = train.batch_size * ctx.world_size
        self.steps_per_epoch = n_train // (self.global_batch * train.n_critic)
        if self.steps_per_epoch == 0:
            raise SaganError(f"train.batch_size: {train.batch_size} x {ctx.world_size} rank(s) x n_critic "
                             f"{train.n_critic} needs more than the {n_train} training images",
                             hint="lower train.batch_size or train.n_critic")
        self.total_steps = train.epochs * self.steps_per_epoch
        if train.max_steps:
            self.total_steps = min(self.total_steps, train.max_steps)

        self.trainer = GanTrainer(self.model, train, self.info.size, ctx)
        self.perm_gen = torch.Generator(device).manual_seed(train.seed)
        self.noise_gen = torch.Generator(device).manual_seed(train.seed + 1)
        # Fixed latents for the per-epoch grids, drawn on the CPU so no training generator moves.
        self.fixed_z = torch.randn(train.sample_grid, self.model.z_dim,
                                   generator=torch.Generator().manual_seed(train.seed + 2)).to(device)
        self.identity = checkpoint.training_identity(params, self.info.fingerprint, ctx.world_size)
        self.state = LoopState.start(self.perm_gen.get_state(), device)
        self.last_checkpoint: str | None = None
        self.mlflow_run: tracking.MlflowRun | None = None
        self.mlflow_lost: str | None = None  # why MLflow stopped taking this run's logging, and when
        self.evaluator = None
        if train.eval_every and ctx.is_main:  # rank 0 evaluates; a missing reference fails before step 1
            from sagan.train.evaluation import TrainingEvaluator

            self.evaluator = TrainingEvaluator(params, self.info.size)

    # -- checkpoints -------------------------------------------------------------------------
    def resume(self) -> None:
        """Load the newest checkpoint of these params at or below this run's last step.

        A newer one is a longer run's of the same params (train.max_steps or train.epochs lowered
        since), and is never published as this run: this run resumes from the newest kept checkpoint
        at or below its last step (the same trajectory: a shorter run ends where it would have from
        scratch), as an MLflow run of its own unless that checkpoint is already this run's, and the
        longer run's checkpoints stay for when the limit comes back. With none kept, it is refused.
        """
        superseded, directory = False, self.outputs.checkpoints_dir
        if self.ctx.is_main:  # other identities' and formats' checkpoints out, this identity's set back in
            superseded = checkpoint.arrange(self.identity, self.train.superseded_max_gb, directory)
        dist.barrier(self.ctx)  # rank 0 has arranged the checkpoints before any rank reads them
        found = checkpoint.load_newest_valid(directory, identity=self.identity)
        if found is not None and found[1]["loop"]["step"] > self.total_steps:
            longer = found[1]["loop"]
            found = checkpoint.load_newest_valid(directory, identity=self.identity, max_step=self.total_steps)
            if found is None:
                key, value = (("train.max_steps", self.train.max_steps) if self.total_steps == self.train.max_steps
                              else ("train.epochs", self.train.epochs))
                raise SaganError(f"{key}: {value} ends the run at step {self.total_steps}, but {directory} holds "
                                 f"these params trained to step {longer['step']} and none of their checkpoints at "
                                 f"or below step {self.total_steps}",
                                 hint=f"raise {key} to publish that run, or move {directory} aside to train "
                                      f"{self.total_steps} steps from scratch")
            if found[1]["loop"]["mlflow_run_id"] == longer["mlflow_run_id"]:
                found[1]["loop"]["mlflow_run_id"] = ""  # a new MLflow run: the longer run's record stays its own
            if self.ctx.is_main:
                print(f"sagan train: {directory} holds these params trained to step {longer['step']}, beyond this "
                      f"run's {self.total_steps}; those checkpoints are kept for a longer run")
        if found is None:
            if superseded:
                print("sagan train: no checkpoint of these params; training from scratch")
            return
        path, state = found
        self.trainer.load_state_dict(state["trainer"])
        checkpoint.restore_rng(state["rng"], self.ctx.device, {"noise": self.noise_gen})
        self.state.load_state_dict(state["loop"], self.ctx.device)
        self.perm_gen.set_state(self.state.perm_state)  # the loop redraws this epoch's permutation
        self.last_checkpoint = str(path)
        if self.ctx.is_main:
            print(f"sagan train: resuming from {path} (step {self.state.step} of {self.total_steps})")

    def save_checkpoint(self, wall_time_s: float) -> None:
        self.check_finite()
        self.state.wall_time_s = wall_time_s
        if not self.ctx.is_main:
            return
        epoch, position = divmod(self.state.step, self.steps_per_epoch)
        state = {"identity": self.identity, "epoch": epoch, "position": position,
                 "trainer": self.trainer.state_dict(),
                 "rng": checkpoint.capture_rng(self.ctx.device, {"noise": self.noise_gen}),
                 "loop": self.state.state_dict()}
        self.last_checkpoint = str(checkpoint.save(state, self.state.step, self.train.keep_checkpoints,
                                                   self.outputs.checkpoints_dir))

    def check_finite(self) -> None:
        """Stop at the first non-finite loss (one host sync; called at log points and checkpoints)."""
        first_bad = dist.all_reduce_max(self.ctx, self.state.first_bad.clone()).tolist()
        bad = [(step, name) for name, step in zip(LOSSES, first_bad) if step >= 0]
        if bad:
            step, name = min(bad)  # the loss that went first (D's, on a tie: it runs first)
            raise SaganError(f"train: {name} became NaN/Inf at step {step}; training stopped "
                             f"(last good checkpoint: {self.last_checkpoint or 'none yet'})",
                             hint="lower train.lr_d / train.lr_g or use train.precision: fp32")

    # -- the loop ----------------------------------------------------------------------------
    def run_steps(self) -> None:
        train, ctx, state = self.train, self.ctx, self.state
        if state.step >= self.total_steps:  # a completed run: only the outputs are rewritten
            return
        rank_slice = slice(ctx.rank * train.batch_size, (ctx.rank + 1) * train.batch_size)

        def draw_z() -> torch.Tensor:
            z = torch.randn(self.global_batch, self.model.z_dim, generator=self.noise_gen, device=ctx.device)
            return z[rank_slice]

        bar = tqdm(total=self.total_steps, initial=state.step, unit="step", desc="train",
                   disable=not ctx.is_main, dynamic_ncols=True)
        started, wall_before = time.perf_counter(), state.wall_time_s
        window_start = started
        permutation = None
        while state.step < self.total_steps:
            epoch, position = divmod(state.step, self.steps_per_epoch)
            if position == 0 or permutation is None:
                permutation = torch.randperm(self.data.shape[0], generator=self.perm_gen, device=ctx.device)
            first = position * train.n_critic * self.global_batch
            batches = [self.data[permutation[first + k * self.global_batch:][rank_slice]]
                       for k in range(train.n_critic)]
            metrics = self.trainer.step(batches, draw_z, self.noise_gen)
            state.metric_sum += metrics
            state.window_steps += 1
            state.step += 1
            state.first_bad = torch.where((state.first_bad < 0) & ~torch.isfinite(metrics[:len(LOSSES)]),
                                          state.step, state.first_bad)

            epoch_end = state.step % self.steps_per_epoch == 0
            if epoch_end:  # where the next epoch's permutation is drawn from, also after a resume
                state.perm_state = self.perm_gen.get_state()
            last = state.step == self.total_steps
            if state.step % train.log_every == 0 or last:
                now = time.perf_counter()
                self.log_point(epoch + 1, now - window_start, bar)
                window_start = now
            if epoch_end or last:
                self.epoch_grid(epoch + 1)
            if train.eval_every and (state.step % train.eval_every == 0 or last):
                paused = self.evaluate_now()  # not training time: the clocks skip it
                started, window_start = started + paused, window_start + paused
            if state.step % train.checkpoint_every == 0 or epoch_end or last:
                self.save_checkpoint(wall_before + time.perf_counter() - started)
        bar.close()

    def log_point(self, epoch: int, seconds: float, bar: tqdm) -> None:
        self.check_finite()
        state = self.state
        means = dist.all_reduce_mean(self.ctx, state.metric_sum / state.window_steps).tolist()
        images = state.window_steps * self.train.n_critic * self.global_batch
        state.metric_sum.zero_()
        state.window_steps = 0
        if not self.ctx.is_main:
            return
        gamma_g, gamma_d = self.trainer.gammas()
        row = {"step": state.step, "epoch": epoch, **dict(zip(METRICS, means)),
               "gamma_g": gamma_g, "gamma_d": gamma_d, "img_per_s": images / max(seconds, 1e-9)}
        state.log_rows.append(row)
        bar.update(state.step - bar.n)
        bar.set_postfix(d=f"{row['d_loss']:.3f}", g=f"{row['g_loss']:.3f}", img_s=f"{row['img_per_s']:.0f}")
        self.to_mlflow(lambda run: self.log_row(run, row))

    def epoch_grid(self, epoch: int) -> None:
        """The fixed-z grid after an epoch: kept in the checkpoint (published by write_outputs at the
        end) and logged to MLflow now, from a temporary file."""
        if not self.ctx.is_main:
            return
        self.state.grids[epoch] = self.trainer.sample_u8(self.fixed_z)
        self.to_mlflow(lambda run: self.log_grid(run, epoch))

    def evaluate_now(self) -> float:
        """Score the sampling generator (rank 0), keep the row and, at a new lowest FID, its
        weights; returns the seconds it took."""
        if self.evaluator is None:
            return 0.0
        from sagan.model.io import plain_state_dict

        began = time.perf_counter()
        state, generator = self.state, self.trainer.sampling_model()
        row = self.evaluator(generator, state.step)
        state.evals.append(row)
        if state.best is None or row["fid"] < state.best["fid"]:
            state.best = {"step": state.step, "fid": row["fid"], "state_dict": plain_state_dict(generator)}
        self.to_mlflow(lambda run: self.log_eval(run, row))
        return time.perf_counter() - began

    # -- MLflow ------------------------------------------------------------------------------
    def to_mlflow(self, log) -> None:
        """`log(mlflow_run)`, unless there is no MLflow run or logging to it failed before: a failure
        (the tracking server gone, a full disk) is recorded in mlflow_lost and ends this run's logging,
        never the training; finish_mlflow says what was not logged."""
        if self.mlflow_run is None or self.mlflow_lost:
            return
        try:
            log(self.mlflow_run)
        except Exception as exc:  # MLflow, requests and the server's refusals raise many types
            self.mlflow_lost = f"at step {self.state.step} ({one_line(exc, limit=300)})"

    def log_row(self, run: tracking.MlflowRun, row: dict) -> None:
        run.log_metrics({f"train/{k}": float(v) for k, v in row.items() if k != "step"}, step=row["step"])

    def log_eval(self, run: tracking.MlflowRun, row: dict) -> None:
        run.log_metrics({f"eval/{k}": float(v) for k, v in row.items() if k != "step" and not k.startswith("n_")},
                        step=row["step"])

    def log_grid(self, run: tracking.MlflowRun, epoch: int) -> None:
        with tempfile.TemporaryDirectory(prefix="sagan-grid-") as tmp:
            path = Path(tmp) / grid_name(epoch)
            save_grid(self.state.grids[epoch], path)
            run.log_artifact(path, "samples")

    def log_missing(self, run: tracking.MlflowRun) -> None:
        """The log points, evaluations and grids of the run's state that its MLflow run lacks (they
        came while the store did not answer): a rerun of a completed run logs them."""
        logged = run.metric_steps("train/d_loss")
        for row in self.state.log_rows:
            if row["step"] not in logged:
                self.log_row(run, row)
        logged = run.metric_steps("eval/fid")
        for row in self.state.evals:
            if row["step"] not in logged:
                self.log_eval(run, row)
        logged = run.artifact_names("samples")
        for epoch in sorted(self.state.grids):
            if grid_name(epoch) not in logged:
                self.log_grid(run, epoch)

    def finish_mlflow(self, ok: bool) -> None:
        """End the MLflow run; if logging to it failed, say in one line what it lacks and how to add it."""
        if self.mlflow_run is None:
            return
        self.mlflow_run.stop_system_metrics()
        self.to_mlflow(lambda run: run.finish(ok))
        if self.mlflow_lost:
            model = ", the model" if self.params.mlflow.log_model else ""
            print(f"sagan train: warning: MLflow stopped logging {self.mlflow_lost}: run {self.state.mlflow_run_id} in "
                  f"{tracking.shown_uri(self.params.mlflow)} lacks the metrics and sample grids from then on, the "
                  f"run's summary{model} and its end{'; the outputs are written' if ok else ''}; rerun `sagan train` "
                  f"once the store answers, and it logs them", file=sys.stderr)

    # -- records and outputs -----------------------------------------------------------------
    @cached_property
    def metadata(self) -> dict:
        """tracking.run_metadata of this run (rank 0 only): the MLflow tags and run.json share it."""
        metadata = tracking.run_metadata(self.params.mlflow, self.info.fingerprint, self.info.synthetic)
        return {**metadata, "study": self.study} if self.study else metadata

    def open_mlflow(self) -> None:
        tags = tracking.run_tags(self.metadata) | self.tags
        self.mlflow_run = tracking.MlflowRun.start_or_resume(self.params.mlflow, self.state.mlflow_run_id or None, tags,
                                                             flatten(self.params), tracking.training_input(self.info))
        self.state.mlflow_run_id = self.mlflow_run.run_id

    def write_outputs(self) -> None:
        """generator.pt, generator_best.pt, losses.csv, evals.csv, samples/, run.json, all from the
        final state, published together. Without evaluations the best generator is the last one.

        Each is written to its temporary name first; only when all are written are they renamed into
        place, run.json last (ExitStack renames in reverse order of entry). A failure before that
        leaves the previous outputs untouched."""
        from sagan.model.io import save_generator
        from sagan.model.networks import Generator

        state = self.state
        images_seen = state.step * self.train.n_critic * self.global_batch
        img_per_s = images_seen / state.wall_time_s if state.wall_time_s > 0 else 0.0
        device = self.ctx.device.type + (f" x{self.ctx.world_size}" if self.ctx.distributed else "")
        with contextlib.ExitStack() as publish:
            out = self.outputs
            run_record = publish.enter_context(atomic_path(out.run_record))
            samples = publish.enter_context(atomic_dir(out.samples_dir))
            losses = publish.enter_context(atomic_path(out.losses_csv))
            evals = publish.enter_context(atomic_path(out.evals_csv))
            best = publish.enter_context(atomic_path(out.generator_best))
            generator = publish.enter_context(atomic_path(out.generator))
            ema = self.trainer.ema is not None
            save_generator(generator, self.trainer.sampling_model(), self.model, self.info.size, ema=ema)
            best_generator = self.trainer.sampling_model()
            if state.best is not None:
                best_generator = Generator(self.model, self.info.size)
                best_generator.load_state_dict(state.best["state_dict"])
            save_generator(best, best_generator, self.model, self.info.size, ema=ema)
            records.write_losses(state.log_rows, state.mlflow_run_id, losses)
            records.write_evals(state.evals, state.mlflow_run_id, evals)
            for epoch, images in sorted(state.grids.items()):
                save_grid(images, samples / grid_name(epoch))
            RunRecord(**{
                **self.metadata, "mlflow_run_id": state.mlflow_run_id, "steps": state.step,
                "epochs": math.ceil(state.step / self.steps_per_epoch), "wall_time_s": state.wall_time_s,
                "img_per_s": img_per_s, "device": device, "params": flatten(self.params),
                "best_step": state.best["step"] if state.best else None,
                "best_fid": state.best["fid"] if state.best else None,
            }).write(run_record)
        self.to_mlflow(self.log_missing)
        # the run-level summary, for the report's run-history table
        self.to_mlflow(lambda run: run.log_metrics({tracking.METRIC_STEPS: state.step, tracking.METRIC_IMG_PER_S:
                                                    img_per_s, tracking.METRIC_WALL_TIME: state.wall_time_s},
                                                   step=state.step))
        if self.params.mlflow.log_model:
            self.to_mlflow(self.log_model)

    def log_model(self, run: tracking.MlflowRun) -> None:
        """The published generator as an MLflow model of this run (and a registered version). It
        is logged after the outputs are published, so a store that refuses it costs a warning, not
        the trained generator."""
        from sagan.model.registry import ARTIFACT, log_generator

        step = self.state.step
        if any(output.step == step and run.client.get_logged_model(output.model_id).name == ARTIFACT
               for output in run.client.get_run(run.run_id).outputs.model_outputs):
            return  # the outputs of a completed run rewritten: this generator is logged already
        try:
            info = log_generator(self.params.mlflow, self.state.mlflow_run_id, self.outputs.generator, step)
        except Exception as exc:  # MLflow and torch.export raise many types; the outputs are safe
            print(f"sagan train: warning: the generator was not logged to MLflow ({type(exc).__name__}: "
                  f"{one_line(exc)})", file=sys.stderr)
            return
        version = (f", registered as models:/{self.params.mlflow.registered_model}/{info.registered_model_version}"
                   if info.registered_model_version else "")
        print(f"sagan train: MLflow model {info.model_uri} (runs:/{self.state.mlflow_run_id}/generator){version}")


def train(params: Params, outputs: paths.RunOutputs, study: dict | None = None,
          tags: dict[str, str] | None = None) -> None:
    """This process's rank of one training run writing `outputs` (see Training for the rest)."""
    ctx = dist.init(params.train.device)
    try:
        with lock.exclusive(ctx, outputs.models_dir), determinism(params.train.deterministic):
            training = Training(params, ctx, outputs, study, tags)
            training.resume()
            if ctx.is_main:
                training.open_mlflow()
            ok = False
            try:
                training.run_steps()
                if ctx.is_main:
                    training.write_outputs()
                ok = True
            finally:
                training.finish_mlflow(ok)
    finally:
        dist.shutdown(ctx)
