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

Outputs are a pure function of the newest checkpoint (which holds the log rows and sample grids),
so a resumed run writes the same files as an uninterrupted one, and a rerun of a completed run
only rewrites them.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import time

import torch
from tqdm import tqdm

from sagan import paths, tracking
from sagan.atomic import atomic_dir
from sagan.errors import SaganError
from sagan.params import Params, flatten
from sagan.train import checkpoint, dist, records
from sagan.train.dist import DistContext
from sagan.train.step import METRICS, GanTrainer


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


def save_grid_png(images_u8: torch.Tensor, path) -> None:
    from sagan.model.sample import save_grid

    save_grid(images_u8.float().div(127.5).sub(1.0), path)


class Training:
    """One training run (or its resumption) of one rank."""

    def __init__(self, params: Params, ctx: DistContext):
        from sagan.data.loader import dataset_info, load_split

        self.params, self.cfg, self.ctx = params, params.train, ctx
        cfg, device = self.cfg, ctx.device
        self.info = dataset_info()
        self.data = load_split("train", device=device)
        n_train = self.data.shape[0]
        self.global_batch = cfg.batch_size * ctx.world_size
        self.steps_per_epoch = n_train // (self.global_batch * cfg.n_critic)
        if self.steps_per_epoch == 0:
            raise SaganError(f"train.batch_size: {cfg.batch_size} x {ctx.world_size} rank(s) x n_critic "
                             f"{cfg.n_critic} needs more than the {n_train} training images",
                             hint="lower train.batch_size or train.n_critic")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)

        self.trainer = GanTrainer(params.model, cfg, self.info.size, ctx)
        self.perm_gen = torch.Generator(device).manual_seed(cfg.seed)
        self.noise_gen = torch.Generator(device).manual_seed(cfg.seed + 1)
        # Fixed latents for the per-epoch grids, drawn on the CPU so no training generator moves.
        self.fixed_z = torch.randn(cfg.sample_grid, params.model.z_dim,
                                   generator=torch.Generator().manual_seed(cfg.seed + 2)).to(device)
        self.identity = checkpoint.training_identity(params, self.info.fingerprint, ctx.world_size)

        # Loop state: everything here is checkpointed.
        self.step = 0
        self.epoch_perm_state = self.perm_gen.get_state()  # perm generator before this epoch's draw
        self.metric_sum = torch.zeros(len(METRICS), device=device)
        self.window_steps = 0
        self.first_bad = torch.full((2,), -1, dtype=torch.long, device=device)  # d_loss, g_loss
        self.log_rows: list[dict] = []
        self.grids: dict[int, torch.Tensor] = {}
        self.mlflow_run_id = ""
        self.wall_time_s = 0.0  # training seconds up to the newest checkpoint, over all resumptions
        self.last_checkpoint: str | None = None
        self.mlflow: records.MlflowRun | None = None

    # -- checkpoints -------------------------------------------------------------------------
    def resume(self) -> None:
        found = checkpoint.load_newest_valid()
        dist.barrier(self.ctx)  # every rank has read the checkpoints before rank 0 may move them
        if found is None:
            return
        path, state = found
        change = checkpoint.identity_change(state["identity"], self.identity)
        if change:
            if self.ctx.is_main:
                moved = checkpoint.supersede()
                print(f"sagan train: {path} was trained with other params ({change}); "
                      f"moved its checkpoints to {moved}/ and training from scratch")
            return
        self.trainer.load_state_dict(state["trainer"])
        checkpoint.restore_rng(state["rng"], self.ctx.device, {"perm": self.perm_gen, "noise": self.noise_gen})
        loop = state["loop"]
        self.step = loop["step"]
        self.metric_sum = loop["metric_sum"].to(self.ctx.device)
        self.window_steps = loop["window_steps"]
        self.first_bad = loop["first_bad"].to(self.ctx.device)
        self.log_rows = loop["log_rows"]
        self.grids = loop["grids"]
        self.mlflow_run_id = loop["mlflow_run_id"]
        self.wall_time_s = loop["wall_time_s"]
        self.last_checkpoint = str(path)
        if self.ctx.is_main:
            print(f"sagan train: resuming from {path} (step {self.step} of {self.total_steps})")

    def save_checkpoint(self, wall_time_s: float) -> None:
        self.check_finite()
        self.wall_time_s = wall_time_s
        if not self.ctx.is_main:
            return
        mid_epoch = self.step % self.steps_per_epoch != 0
        # Mid-epoch, the resumed run must redraw this epoch's permutation: store the state before it.
        perm_state = self.epoch_perm_state if mid_epoch else self.perm_gen.get_state()
        rng = checkpoint.capture_rng(self.ctx.device, {"perm": self.perm_gen, "noise": self.noise_gen})
        rng["generators"]["perm"] = perm_state
        epoch, position = divmod(self.step, self.steps_per_epoch)
        state = {
            "identity": self.identity, "step": self.step, "epoch": epoch, "position": position,
            "trainer": self.trainer.state_dict(), "rng": rng,
            "loop": {"step": self.step, "metric_sum": self.metric_sum, "window_steps": self.window_steps,
                     "first_bad": self.first_bad, "log_rows": self.log_rows, "grids": self.grids,
                     "mlflow_run_id": self.mlflow_run_id, "wall_time_s": wall_time_s},
        }
        self.last_checkpoint = str(checkpoint.save(state, self.step, self.cfg.keep_checkpoints))
        records.write_losses(self.log_rows)

    def check_finite(self) -> None:
        """Stop at the first non-finite loss (one host sync; called at log points and checkpoints)."""
        first_bad = dist.all_reduce_max(self.ctx, self.first_bad.clone()).tolist()
        bad = [(step, name) for name, step in zip(("d_loss", "g_loss"), first_bad) if step >= 0]
        if bad:
            step, name = min(bad)  # the loss that went first (D's, on a tie: it runs first)
            raise SaganError(f"train: {name} became NaN/Inf at step {step}; training stopped "
                             f"(last good checkpoint: {self.last_checkpoint or 'none yet'})",
                             hint="lower train.lr_d / train.lr_g or use train.precision: fp32")

    # -- the loop ----------------------------------------------------------------------------
    def train(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        if self.step >= self.total_steps:  # a completed run: only the outputs are rewritten
            return
        rank_slice = slice(ctx.rank * cfg.batch_size, (ctx.rank + 1) * cfg.batch_size)
        z_dim = self.params.model.z_dim

        def draw_z() -> torch.Tensor:
            z = torch.randn(self.global_batch, z_dim, generator=self.noise_gen, device=ctx.device)
            return z[rank_slice]

        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", desc="train",
                   disable=not ctx.is_main, dynamic_ncols=True)
        started, wall_before = time.perf_counter(), self.wall_time_s
        window_start = started
        permutation = None
        while self.step < self.total_steps:
            epoch, position = divmod(self.step, self.steps_per_epoch)
            if position == 0 or permutation is None:
                self.epoch_perm_state = self.perm_gen.get_state()
                permutation = torch.randperm(self.data.shape[0], generator=self.perm_gen, device=ctx.device)
            first = position * cfg.n_critic * self.global_batch
            batches = [self.data[permutation[first + k * self.global_batch:][rank_slice]]
                       for k in range(cfg.n_critic)]
            metrics = self.trainer.step(batches, draw_z, self.noise_gen)
            self.metric_sum += metrics
            self.window_steps += 1
            self.step += 1
            self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(metrics[:2]),
                                         self.step, self.first_bad)

            epoch_end = self.step % self.steps_per_epoch == 0
            last = self.step == self.total_steps
            if self.step % cfg.log_every == 0 or last:
                now = time.perf_counter()
                self.log_point(epoch + 1, now - window_start, bar)
                window_start = now
            if epoch_end or last:
                self.epoch_grid(epoch + 1)
            if self.step % cfg.checkpoint_every == 0 or epoch_end or last:
                self.save_checkpoint(wall_before + time.perf_counter() - started)
        bar.close()

    def log_point(self, epoch: int, seconds: float, bar: tqdm) -> None:
        self.check_finite()
        means = dist.all_reduce_mean(self.ctx, self.metric_sum / self.window_steps).tolist()
        images = self.window_steps * self.cfg.n_critic * self.global_batch
        self.metric_sum.zero_()
        self.window_steps = 0
        if not self.ctx.is_main:
            return
        gamma_g, gamma_d = self.trainer.gammas()
        row = {"step": self.step, "epoch": epoch, **dict(zip(METRICS, means)),
               "gamma_g": gamma_g, "gamma_d": gamma_d, "img_per_s": images / max(seconds, 1e-9)}
        self.log_rows.append(row)
        bar.update(self.step - bar.n)
        bar.set_postfix(d=f"{row['d_loss']:.3f}", g=f"{row['g_loss']:.3f}", img_s=f"{row['img_per_s']:.0f}")
        if self.mlflow is not None:
            self.mlflow.log_metrics(self.step, {k: float(v) for k, v in row.items() if k != "step"})

    def epoch_grid(self, epoch: int) -> None:
        """The fixed-z grid after an epoch (kept in the checkpoint, shown now, logged to MLflow)."""
        if not self.ctx.is_main:
            return
        self.grids[epoch] = self.trainer.sample_u8(self.fixed_z)
        path = paths.SAMPLES_DIR / grid_name(epoch)
        save_grid_png(self.grids[epoch], path)
        if self.mlflow is not None:
            self.mlflow.log_artifact(path, "samples")

    # -- records and outputs -----------------------------------------------------------------
    def open_mlflow(self) -> None:
        p = self.params.mlflow
        tags = {"sagan.git_commit": tracking.git_commit(), "mlflow.source.git.commit": tracking.git_commit(),
                "sagan.data_fingerprint": self.info.fingerprint, "sagan.profile": p.profile,
                "sagan.orchestrator": tracking.orchestrator(),
                "sagan.synthetic_data": str(bool(self.info.synthetic)).lower()}
        self.mlflow = records.MlflowRun(p, self.mlflow_run_id or None, tags, flatten(self.params))
        self.mlflow_run_id = self.mlflow.run_id

    def write_outputs(self) -> None:
        """generator.pt, losses.csv, samples/, run.json, all from the final state."""
        from sagan.model.io import save_generator

        save_generator(paths.GENERATOR, self.trainer.sampling_model(), self.params.model, self.info.size,
                       ema=self.trainer.ema is not None)
        records.write_losses(self.log_rows)
        with atomic_dir(paths.SAMPLES_DIR) as tmp:
            for epoch, images in sorted(self.grids.items()):
                save_grid_png(images, tmp / grid_name(epoch))
        p = self.params.mlflow
        images_seen = self.step * self.cfg.n_critic * self.global_batch
        device = self.ctx.device.type + (f" x{self.ctx.world_size}" if self.ctx.distributed else "")
        record = {
            "mlflow_run_id": self.mlflow_run_id, "mlflow_experiment": p.experiment,
            "tracking_uri": tracking.tracking_uri(p), "steps": self.step,
            "epochs": math.ceil(self.step / self.steps_per_epoch), "wall_time_s": self.wall_time_s,
            "img_per_s": images_seen / self.wall_time_s if self.wall_time_s > 0 else 0.0,
            "device": device, "profile": p.profile, "git_commit": tracking.git_commit(),
            "data_fingerprint": self.info.fingerprint, "synthetic_data": bool(self.info.synthetic),
            "orchestrator": tracking.orchestrator(),
        }
        records.write_run_record(record)
        if self.mlflow is not None:  # run-level summary, for the report's run-history table
            self.mlflow.log_metrics(self.step, {"steps": self.step, "train_wall_time_s": self.wall_time_s,
                                                "mean_img_per_s": record["img_per_s"]})


def run(params: Params, args: argparse.Namespace | None = None) -> None:
    ctx = dist.init(params.train.device)
    try:
        with determinism(params.train.deterministic):
            training = Training(params, ctx)
            training.resume()
            if ctx.is_main:
                training.open_mlflow()
            ok = False
            try:
                training.train()
                if ctx.is_main:
                    training.write_outputs()
                ok = True
            finally:
                if training.mlflow is not None:
                    training.mlflow.finish(ok)
    finally:
        dist.shutdown(ctx)
