"""Self-attention over feature-map positions (Zhang et al., 2019), in two styles.

- `sagan`: query and key are 1x1 convolutions to C/8, the value a 1x1 convolution at C
  (Zhang et al.); every position attends to every position.
- `biggan`: query and key at C/8, value at C/2; key and value are 2x2 max-pooled (4x fewer
  positions to attend to), and a 1x1 output convolution maps the value back to C (Brock et al.).

The result is added back to the input scaled by a learnable `gamma` initialised to 0, so the
module starts as the identity and the network learns how much non-local evidence to use.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STYLES = ("sagan", "biggan")


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
        b, _, h, w = x.shape
        # flatten/reshape rather than view: x may be channels_last (non-contiguous in NCHW).
        query = self.query(x).flatten(2)                     # [B, C/8, N]
        pooled = F.max_pool2d(x, 2) if self.style == "biggan" else x
        key = self.key(pooled).flatten(2)                    # [B, C/8, M]
        value = self.value(pooled).flatten(2)                # [B, Cv, M]
        # Explicit softmax(q^T k) rather than scaled_dot_product_attention: SAGAN does not scale
        # by 1/sqrt(d), and the fused kernels lack the double backward the gradient penalty needs.
        weights = torch.softmax(torch.bmm(query.transpose(1, 2), key), dim=-1)  # [B, N, M]
        attended = torch.bmm(value, weights.transpose(1, 2)).reshape(b, -1, h, w)
        if self.out is not None:
            attended = self.out(attended)
        return x + self.gamma * attended
