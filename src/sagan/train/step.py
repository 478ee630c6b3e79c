"""One GAN training step: `n_critic` discriminator updates, then one generator update.

The step never synchronises with the host: it returns its metrics as a device tensor that the
loop accumulates and reads only at log points.

Loss (train.loss): `bce` is the paper's (D: 1/2 (BCE real + BCE fake) + gp_lambda * gradient
penalty in one D step; G: non-saturating BCE); `hinge` is the alternative. With `train.gp_every`
k > 1 the penalty is computed on every k-th D update only (the 1st, k+1-th, ...), weighted
k * gp_lambda, so that its average weight is unchanged (StyleGAN2's lazy regularisation); the `gp`
metric is then k * penalty on those updates and 0 on the others, an unbiased average.

Precision (train.precision): `fp32`; `bf16` under autocast; `fp16` under autocast with one
GradScaler per optimiser. The gradient penalty runs under autocast for bf16 (fp32's range, so the
input gradient cannot underflow) and in fp32 for fp16 (whose range would underflow it).

DDP: each network's own update runs through its DDP wrapper (`g_synced`, `d_synced`). The
gradient penalty calls the plain discriminator and the G step's pass through D the unwrapped one
(`d_local`): DDP cannot take the penalty's double backward, and the G step must not all-reduce D
gradients that are thrown away. The penalty's parameter gradients still reach DDP's all-reduce,
because they accumulate into the same leaves during the D step's single backward.
"""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sagan.errors import SaganError
from sagan.model import losses
from sagan.model.networks import Discriminator, Generator
from sagan.params import ModelParams, TrainParams
from sagan.pixels import to_signed, to_uint8
from sagan.train.dist import DistContext

# A step's metrics travel as one float32 device tensor (no host sync per step), its entries named
# here. The losses come first, so that `metrics[:len(LOSSES)]` are the ones watched for NaN/Inf.
LOSSES = ("d_loss", "g_loss")
METRICS = (*LOSSES, "d_real", "d_fake", "gp")  # what a step returns and the loop accumulates
D_METRICS = ("d_loss", "d_real", "d_fake", "gp")  # what a D update returns


def stack_metrics(values: dict[str, torch.Tensor], names: tuple[str, ...] = METRICS) -> torch.Tensor:
    """The named 0-d device tensors as one float32 vector in the order of `names`."""
    return torch.stack([values[name].float() for name in names])


def to_model_input(batch_u8: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 NHWC on the device -> float NCHW in [-1, 1], normalised where the data lives.

    NHWC permuted to NCHW already has channels_last strides; contiguous() makes it NCHW-dense.
    """
    x = to_signed(batch_u8.permute(0, 3, 1, 2))
    return x if channels_last else x.contiguous()


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (BN stats, SN vectors) copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


class GanTrainer:
    """G, D, their EMA, optimisers and scalers, and the step that updates them."""

    def __init__(self, model: ModelParams, train: TrainParams, image_size: int, ctx: DistContext):
        self.train, self.ctx, self.image_size = train, ctx, image_size
        device = ctx.device
        torch.manual_seed(train.seed)  # weight init and spectral-norm start vectors
        # G and D: the plain networks, which hold the weights (checkpointed, published, the EMA's
        # source) and which the gradient penalty differentiates twice.
        memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
        self.G = Generator(model, image_size).to(device, memory_format=memory_format)
        self.D = Discriminator(model, image_size).to(device, memory_format=memory_format)
        if train.sync_bn and ctx.distributed:
            if device.type != "cuda":
                raise SaganError("train.sync_bn: SyncBatchNorm runs on CUDA devices only",
                                 hint="set train.sync_bn: false for CPU (gloo) runs")
            self.G = nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
            self.D = nn.SyncBatchNorm.convert_sync_batchnorm(self.D)
        self.ema = None
        if train.ema_decay > 0:
            self.ema = copy.deepcopy(self.G).eval().requires_grad_(False)

        fused = True if device.type == "cuda" else None
        betas = (train.beta1, train.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=train.lr_g, betas=betas, fused=fused)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=train.lr_d, betas=betas, fused=fused)
        scaling = train.precision == "fp16"
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=scaling)
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=scaling)
        self.d_updates = 0  # D updates so far: which of them carry the penalty under gp_every

        # The networks as the step calls them. `*_local`: compiled with train.compile, for the
        # passes whose gradients stay on this rank (G drawing the fakes of D's update, D scoring
        # them in G's). `*_synced`: those, DDP-wrapped under torchrun for the network's own update,
        # so that its gradients are all-reduced over the ranks; in a world of one, the local ones.
        self.g_local = torch.compile(self.G) if train.compile else self.G
        self.d_local = torch.compile(self.D) if train.compile else self.D
        self.g_synced, self.d_synced = self.g_local, self.d_local
        if ctx.distributed:
            ids = [device.index] if device.type == "cuda" else None
            self.g_synced = DistributedDataParallel(self.g_local, device_ids=ids)
            self.d_synced = DistributedDataParallel(self.d_local, device_ids=ids)

    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.train.precision)
        return torch.autocast(self.ctx.device.type, dtype=dtype, enabled=dtype is not None)

    def _penalty_precision(self):
        return torch.autocast(self.ctx.device.type, enabled=False) if self.train.precision == "fp16" \
            else contextlib.nullcontext()

    def d_step(self, real: torch.Tensor, z: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        """One D update; returns its D_METRICS on the device."""
        train = self.train
        with torch.no_grad(), self._autocast():
            fake = self.g_local(z)
        fake = fake.float()
        with self._autocast():
            real_logits = self.d_synced(real).float()
            fake_logits = self.d_synced(fake).float()
            loss = losses.d_loss(train.loss, real_logits, fake_logits)
        if train.gp_lambda > 0 and self.d_updates % train.gp_every == 0:
            with self._penalty_precision():
                gp = train.gp_every * losses.gradient_penalty(self.D, real, fake, generator=noise).float()
            loss = loss + train.gp_lambda * gp
        else:
            gp = torch.zeros((), device=real.device)
        self.d_updates += 1
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(loss).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        return stack_metrics({"d_loss": loss.detach(), "d_real": torch.sigmoid(real_logits.detach()).mean(),
                              "d_fake": torch.sigmoid(fake_logits.detach()).mean(), "gp": gp.detach()}, D_METRICS)

    def g_step(self, z: torch.Tensor) -> torch.Tensor:
        """One G update (and the EMA); returns the G loss on the device."""
        with self._autocast():
            fake_logits = self.d_local(self.g_synced(z)).float()
            loss = losses.g_loss(self.train.loss, fake_logits)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        if self.ema is not None:
            update_ema(self.ema, self.G, self.train.ema_decay)
        return loss.detach()

    def step(self, real_batches: list[torch.Tensor], draw_z, noise: torch.Generator) -> torch.Tensor:
        """n_critic D updates on `real_batches` (uint8 NHWC), then one G update.

        `draw_z()` returns this rank's latent batch. Returns METRICS as one float32 device tensor
        (the D metrics averaged over the D updates).
        """
        d_metrics = torch.zeros(len(D_METRICS), device=self.ctx.device)
        for batch in real_batches:
            d_metrics += self.d_step(to_model_input(batch, self.train.channels_last), draw_z(), noise)
        d_metrics /= len(real_batches)
        return stack_metrics({**dict(zip(D_METRICS, d_metrics.unbind())), "g_loss": self.g_step(draw_z())})

    def gammas(self) -> tuple[float, float]:
        """Attention gammas of G and D (NaN without attention); reading them syncs."""
        def gamma(net):
            attention = getattr(net, "attention", None)
            return float(attention.gamma.detach().float().reshape(-1)[0]) if attention is not None else float("nan")
        return gamma(self.G), gamma(self.D)

    def sampling_model(self) -> nn.Module:
        """The generator whose weights are published: the EMA when it is on."""
        return self.ema if self.ema is not None else self.G

    @torch.no_grad()
    def sample_u8(self, z: torch.Tensor) -> torch.Tensor:
        """Images from fixed `z` as uint8 NCHW on the CPU, in eval mode (no state changes)."""
        generator = self.sampling_model()
        was_training = generator.training
        generator.eval()
        images = to_uint8(generator(z))
        generator.train(was_training)
        return images.cpu()

    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(),
                "EMA": self.ema.state_dict() if self.ema is not None else None,
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict(),
                "d_updates": self.d_updates}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        if self.ema is not None:
            self.ema.load_state_dict(state["EMA"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.d_updates = state["d_updates"]
        if state["scaler_g"]:
            self.scaler_g.load_state_dict(state["scaler_g"])
            self.scaler_d.load_state_dict(state["scaler_d"])
