"""Self-attention over feature-map positions (Zhang et al., 2019), in two styles.

- `sagan`: query and key are 1x1 convolutions to C/8, the value a 1x1 convolution at C
  (Zhang et al.); every position attends to every position.
- `biggan`: query and key at C/8, value at C/2; key and value are 2x2 max-pooled (4x fewer
  positions to attend to), and a 1x1 output convolution maps the value back to C (Brock et al.).

The result is added back to the input scaled by a learnable `gamma` initialised to 0, so the
module starts as the identity and the network learns how much non-local evidence to use.

Two implementations of the same softmax(q^T k) v (SAGAN does not scale by 1/sqrt(d), so
`scale=1.0`): `scaled_dot_product_attention` by default (CUDA's memory-efficient kernel; on the
CPU, whose flash kernel needs equal query and value widths, its math fallback, as fast as the
explicit form), and an explicit softmax of the materialised [N, M] weights inside
`double_backward()`, which the gradient penalty enters: the fused kernels have no double backward.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

STYLES = ("sagan", "biggan")
_explicit_depth = 0  # > 0 inside double_backward()


@contextlib.contextmanager
def double_backward():
    """Run every SelfAttention by its explicit softmax, whose graph supports a double backward."""
    global _explicit_depth
    _explicit_depth += 1
    try:
        yield
    finally:
        _explicit_depth -= 1


def dcgan_conv(conv: nn.Module, spectral_norm: bool) -> nn.Module:
    """DCGAN init (weights N(0, 0.02), zero bias), then spectral norm if asked.

    Initialised before wrapping, so the spectral norm's start vectors match the initial weight.
    `parametrizations.spectral_norm` normalises along dim 1 for transposed convolutions.
    """
    nn.init.normal_(conv.weight, 0.0, 0.02)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return nn.utils.parametrizations.spectral_norm(conv) if spectral_norm else conv


def conv1x1(in_channels: int, out_channels: int, spectral_norm: bool, bias: bool) -> nn.Module:
    return dcgan_conv(nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=bias), spectral_norm)


def project(tokens: torch.Tensor, *convs: nn.Conv2d) -> tuple[torch.Tensor, ...]:
    """1x1 convolutions of the same input as one matrix product over channels: [B, N, C] -> one
    [B, N, C_out] per convolution.

    The same arithmetic as the convolutions (up to float rounding), in one GEMM on the token layout
    the attention needs, where three small convolutions cost more in call overhead and NCHW/NHWC
    copies than in arithmetic. Each weight keeps its own spectral norm: reading `conv.weight` runs
    its power iteration once, as the convolution's forward did.
    """
    weights = [conv.weight.flatten(1) for conv in convs]
    bias = None if convs[0].bias is None else torch.cat([conv.bias for conv in convs])
    out = F.linear(tokens, torch.cat(weights), bias)
    return out.split([weight.shape[0] for weight in weights], dim=-1)


class SelfAttention(nn.Module):
    """y = x + gamma * attention(x) on a [B, C, H, W] map (H and W even for the biggan style)."""

    def __init__(self, channels: int, style: str = "sagan", spectral_norm: bool = True):
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"attention style must be one of {STYLES}, got {style!r}")
        self.style = style
        qk_channels = max(1, channels // 8)
        biggan = style == "biggan"
        # Zhang et al.'s convolutions carry a bias; BigGAN's attention convolutions do not.
        bias = not biggan
        self.query = conv1x1(channels, qk_channels, spectral_norm, bias)
        self.key = conv1x1(channels, qk_channels, spectral_norm, bias)
        value_channels = channels // 2 if biggan else channels
        self.value = conv1x1(channels, value_channels, spectral_norm, bias)
        self.out = conv1x1(value_channels, channels, spectral_norm, bias) if biggan else None
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # Positions as tokens [B, N, C]: a view, no copy, when x is channels_last (the default).
        tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        if self.style == "biggan":
            (query,) = project(tokens, self.query)
            pooled = F.max_pool2d(x, 2)
            key, value = project(pooled.permute(0, 2, 3, 1).reshape(b, -1, c), self.key, self.value)
        else:
            query, key, value = project(tokens, self.query, self.key, self.value)
        if _explicit_depth:
            attended = torch.bmm(torch.softmax(torch.bmm(query, key.transpose(1, 2)), dim=-1), value)
        else:
            attended = F.scaled_dot_product_attention(query, key, value, scale=1.0)  # [B, N, Cv]
        if self.out is not None:
            (attended,) = project(attended, self.out)
        attended = attended.reshape(b, h, w, c).permute(0, 3, 1, 2)  # a view: NHWC in memory
        return x + self.gamma * attended
