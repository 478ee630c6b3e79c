"""GAN losses against hand-computed values; the gradient penalty against an independent autograd reference."""
import math

import pytest
import torch
from torch import nn

from sagan.model.losses import d_loss, g_loss, gradient_penalty
from sagan.model.networks import Discriminator
from sagan.params import ModelParams

REAL = torch.tensor([0.0, 2.0])
FAKE = torch.tensor([-1.0, 0.5])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_bce_losses_match_hand_computed_values():
    # BCE(x, 1) = log(1 + e^-x), BCE(x, 0) = log(1 + e^x)
    l_real = (softplus(-0.0) + softplus(-2.0)) / 2
    l_fake = (softplus(-1.0) + softplus(0.5)) / 2
    assert d_loss("bce", REAL, FAKE).item() == pytest.approx(0.5 * (l_real + l_fake), abs=1e-6)
    assert g_loss("bce", FAKE).item() == pytest.approx((softplus(1.0) + softplus(-0.5)) / 2, abs=1e-6)


def test_hinge_losses_match_hand_computed_values():
    # relu(1 - real) = [1, 0] -> 0.5; relu(1 + fake) = [0, 1.5] -> 0.75
    assert d_loss("hinge", REAL, FAKE).item() == pytest.approx(1.25, abs=1e-7)
    assert g_loss("hinge", FAKE).item() == pytest.approx(0.25, abs=1e-7)


def test_unknown_loss_is_rejected():
    with pytest.raises(ValueError, match="'wasserstein'"):
        d_loss("wasserstein", REAL, FAKE)
    with pytest.raises(ValueError, match="'wasserstein'"):
        g_loss("wasserstein", FAKE)


def test_penalty_of_a_linear_critic_is_its_weight_norm_minus_one_squared():
    torch.manual_seed(0)
    weight = torch.randn(3, 4, 4)
    critic = lambda x: (x * weight).sum(dim=(1, 2, 3))  # noqa: E731 - gradient is `weight` everywhere
    penalty = gradient_penalty(critic, torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4))
    assert penalty.item() == pytest.approx((weight.norm().item() - 1.0) ** 2, rel=1e-6)


def small_discriminator() -> nn.Module:
    torch.manual_seed(0)
    # eval mode: BN uses running statistics and spectral norm no power iteration, so the same D
    # (per-sample, stateless) is evaluated by the penalty and by the reference below.
    return Discriminator(ModelParams(d_channels=8, attention_after=2), 32).eval()


def reference_penalty(D: nn.Module, real, fake, alpha) -> torch.Tensor:
    """One sample at a time: ||dD(x_i)/dx_i||_2 from autograd, then mean (norm - 1)^2."""
    terms = []
    for a, r, f in zip(alpha, real, fake):
        x = (a * r + (1 - a) * f).unsqueeze(0).requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        terms.append((torch.sqrt((grad ** 2).sum()) - 1) ** 2)
    return torch.stack(terms).mean()


def test_gradient_penalty_equals_an_independent_autograd_computation():
    D = small_discriminator()
    with torch.no_grad():
        D.attention.gamma.fill_(0.5)  # the attention path contributes to the gradient too
    torch.manual_seed(1)
    real, fake = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    penalty = gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(7))
    alpha = torch.rand(4, generator=torch.Generator().manual_seed(7))  # the same per-sample alpha
    reference = reference_penalty(D, real, fake, alpha)
    assert penalty.dtype == torch.float32 and penalty.shape == ()
    assert penalty.item() == pytest.approx(reference.item(), abs=1e-6)
    assert penalty.item() > 1e-3  # not trivially zero

    # create_graph: the penalty trains D, with the same parameter gradients as the reference.
    # (the last layer's bias does not move the input gradient: its gradient is zero, hence materialize)
    grads = torch.autograd.grad(penalty, list(D.parameters()), allow_unused=True, materialize_grads=True)
    ref_grads = torch.autograd.grad(reference, list(D.parameters()), allow_unused=True, materialize_grads=True)
    assert any(g.abs().sum() > 0 for g in grads)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-6, rtol=1e-4)


def test_gradient_penalty_runs_the_attention_with_a_double_backward(monkeypatch):
    # The fused kernels have no double backward: one standing in for them must never be called.
    def no_double_backward(*args, **kwargs):
        raise AssertionError("scaled_dot_product_attention inside the gradient penalty")

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", no_double_backward)
    D = small_discriminator()
    with torch.no_grad():
        D.attention.gamma.fill_(0.5)
    penalty = gradient_penalty(D, torch.rand(4, 3, 32, 32), -torch.rand(4, 3, 32, 32))
    penalty.backward()
    assert D.attention.query.parametrizations.weight.original.grad.abs().sum() > 0
    with pytest.raises(AssertionError, match="inside the gradient penalty"):
        D(torch.rand(4, 3, 32, 32))  # outside the penalty D's attention is the fused one


def test_alpha_comes_from_the_given_generator():
    D = small_discriminator()
    real, fake = torch.rand(4, 3, 32, 32), -torch.rand(4, 3, 32, 32)
    first = gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(3))
    again = gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(3))
    other = gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(4))
    assert first.item() == again.item() != other.item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gradient_penalty_under_autocast_is_fp32_and_close(dtype):
    D = small_discriminator()
    torch.manual_seed(2)
    real, fake = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    exact = gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=dtype):
        low = gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(0))
    assert low.dtype == torch.float32 and torch.isfinite(low)
    assert low.item() == pytest.approx(exact.item(), rel=0.05)
    (grad,) = torch.autograd.grad(low, D.head[0][0].parametrizations.weight.original)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
