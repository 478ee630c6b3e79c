"""GAN losses on D's logits, and the WGAN-GP gradient penalty (the caller multiplies it by lambda).

- bce (the paper): D minimises 1/2 (BCE(real, 1) + BCE(fake, 0)); G the non-saturating BCE(fake, 1).
- hinge: D minimises mean relu(1 - real) + mean relu(1 + fake); G minimises -mean(fake).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from sagan.model.attention import double_backward

LOSSES = ("bce", "hinge")


def _check(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")


def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss (a scalar) from its logits on real and generated images."""
    _check(kind)
    if kind == "bce":
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return 0.5 * (real + fake)
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's loss (a scalar) from D's logits on generated images."""
    _check(kind)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    return -fake_logits.mean()


def gradient_penalty(discriminator: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP: mean over the batch of (||dD(x_hat)/dx_hat||_2 - 1)^2, x_hat = a*real + (1-a)*fake.

    `a` is uniform per sample, drawn from `generator` (on the device of `real`) when given. The
    graph is kept (create_graph=True) so the penalty trains D; D's attention runs in its explicit
    form (`attention.double_backward`), the one with a double backward.

    Precision: the interpolates are built in float32 and D's logits are cast to float32 before the
    gradient, so under an active autocast (bf16/fp16) only D's own layers run in low precision; the
    gradient w.r.t. the float32 interpolates comes back in float32 and the norm, the square and the
    mean are taken in float32. The result is always a float32 scalar. (For fp16 the caller may also
    disable autocast around this call to avoid fp16 overflow in the double backward.)
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator)
    mixed = (alpha * real.float() + (1.0 - alpha) * fake.detach().float()).requires_grad_(True)
    with double_backward():
        logits = discriminator(mixed).float()
    (grad,) = torch.autograd.grad(logits.sum(), mixed, create_graph=True)
    return ((grad.float().flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()
