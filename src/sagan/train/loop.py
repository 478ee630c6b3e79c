"""`sagan train`: epochs over the on-device training set, logging, checkpoints, resume.

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
completed run only rewrites them. During training only checkpoints are written; rank 0 hands the
final state to its RunPublisher (sagan.train.publish), which publishes the outputs together and
keeps the MLflow run, whose failures never cost the training.

One run per project at a time (sagan.train.lock); before any rank reads a checkpoint, rank 0 leaves
in models/checkpoints/ only those of this run's identity (checkpoint.arrange).
"""
from __future__ import annotations

import contextlib
import math
import os
import time

import torch
from tqdm import tqdm

from sagan import paths
from sagan.data.loader import dataset_info, load_split
from sagan.errors import SaganError
from sagan.model.io import plain_state_dict
from sagan.params import Params
from sagan.train import checkpoint, dist, lock
from sagan.train.dist import DistContext
from sagan.train.evaluation import TrainingEvaluator
from sagan.train.publish import RunPublisher
from sagan.train.state import LoopState
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


class Training:
    """One training run (or its resumption) of one rank: its steps, checkpoints and resume. Rank 0
    also evaluates (train.eval_every) and hands the loop's state to its RunPublisher."""

    def __init__(self, params: Params, ctx: DistContext, outputs: paths.RunOutputs, study: dict | None = None,
                 tags: dict[str, str] | None = None):
        """`outputs`: where the run writes (paths.RUN, or a study cell's); `study`: what run.json
        records of the study cell it is, if any; `tags`: MLflow tags beside the run's own."""
        self.train, self.model, self.ctx, self.outputs = params.train, params.model, ctx, outputs
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
        # Rank 0 alone evaluates (a missing reference fails before step 1) and publishes.
        self.evaluator = TrainingEvaluator(params, self.info.size) if train.eval_every and ctx.is_main else None
        self.publisher = RunPublisher(params, self.info, ctx, outputs, study, tags or {}) if ctx.is_main else None

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
        self.publisher.log_row(row)

    def epoch_grid(self, epoch: int) -> None:
        """The fixed-z grid after an epoch: kept in the checkpoint (published at the end) and logged
        to MLflow now."""
        if not self.ctx.is_main:
            return
        grid = self.state.grids[epoch] = self.trainer.sample_u8(self.fixed_z)
        self.publisher.log_grid(epoch, grid, self.state.step)

    def evaluate_now(self) -> float:
        """Score the sampling generator (rank 0), keep the row and, at a new lowest FID, its
        weights; returns the seconds it took."""
        if self.evaluator is None:
            return 0.0
        began = time.perf_counter()
        state, generator = self.state, self.trainer.sampling_model()
        row = self.evaluator(generator, state.step)
        state.evals.append(row)
        if state.best is None or row["fid"] < state.best["fid"]:
            state.best = {"step": state.step, "fid": row["fid"], "state_dict": plain_state_dict(generator)}
        self.publisher.log_eval(row)
        return time.perf_counter() - began

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> None:
        """Resume and train the steps left; rank 0 also keeps the MLflow run and publishes the final state."""
        self.resume()
        if self.publisher is None:  # the other ranks train alongside rank 0 and publish nothing
            self.run_steps()
            return
        with self.publisher.tracked(self.state):
            self.run_steps()
            state = self.state
            self.publisher.publish(state, self.trainer, epochs=math.ceil(state.step / self.steps_per_epoch),
                                   images_seen=state.step * self.train.n_critic * self.global_batch)


def train(params: Params, outputs: paths.RunOutputs, study: dict | None = None,
          tags: dict[str, str] | None = None) -> None:
    """This process's rank of one training run writing `outputs` (see Training for the rest)."""
    ctx = dist.init(params.train.device)
    try:
        with lock.exclusive(ctx, outputs.models_dir), determinism(params.train.deterministic):
            Training(params, ctx, outputs, study, tags).run()
    finally:
        dist.shutdown(ctx)
