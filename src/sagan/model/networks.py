"""SAGAN generator and discriminator: DCGAN-style convolution stacks with one self-attention module.

Depth follows the resolution: `log2(image_size) - 1` layers in each network, i.e. four at 32 px
(the smoke profile), five at 64 px (the paper) and six at 128 px.

- Generator: z -> 4x4 by a 4x4 transposed convolution, then stride-2 transposed convolutions
  doubling the map up to image_size, tanh at the end. Widths halve at each upsampling layer and
  the last hidden layer has `g_channels` (64 px: 8g, 4g, 2g, g, 3).
- Discriminator mirrors it: stride-2 convolutions halving the map down to 4x4, then a 4x4
  convolution to one logit (64 px: d, 2d, 4d, 8d, 1).
- Batch norm after every layer except G's last and D's first and last (DCGAN); ReLU in G,
  LeakyReLU(leaky_slope) in D. A convolution has a bias only where no batch norm follows it.
- Spectral norm on every convolution (attention's 1x1 convolutions included) when
  `model.spectral_norm`.

Attention placement: `model.attention_after = k` puts the module after the k-th layer of each
network, counted from its input, at every resolution. The maps there are 2^(k+1) px in G (G always
starts at 4x4) and image_size / 2^k px in D. At 64 px with k = 3 that is the paper's 16x16 in G and
8x8 in D. At 32 px, k = 3 gives 16x16 in G (just before its output layer) and 4x4 in D (the same
fraction of the image as the paper's D). k must leave at least one layer after the attention.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from sagan.errors import SaganError
from sagan.model.attention import SelfAttention, dcgan_conv
from sagan.params import ModelParams


def num_layers(image_size: int) -> int:
    """Convolution layers per network: the map goes 4 -> image_size in G (1 -> 4 -> image_size in D)."""
    if image_size < 16 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 16, got {image_size}")
    return int(math.log2(image_size)) - 1


def _check_attention(model: ModelParams, layers: int, image_size: int) -> None:
    if model.attention and not 1 <= model.attention_after < layers:
        raise SaganError(f"model.attention_after: {model.attention_after} leaves no layer after the attention "
                         f"at {image_size} px ({layers} layers per network)", hint=f"use 1..{layers - 1}")


def _layer(conv: nn.Module, spectral_norm: bool, batchnorm_channels: int | None,
           activation: nn.Module) -> nn.Sequential:
    """conv (DCGAN init, optional spectral norm) -> optional batch norm -> activation."""
    parts = [dcgan_conv(conv, spectral_norm)]
    if batchnorm_channels is not None:
        bn = nn.BatchNorm2d(batchnorm_channels)
        nn.init.normal_(bn.weight, 1.0, 0.02)
        nn.init.zeros_(bn.bias)
        parts.append(bn)
    parts.append(activation)
    return nn.Sequential(*parts)


class _AttentionStack(nn.Module):
    """Layers, with the attention module (or None) between the first `attention_after` and the rest."""

    def _assemble(self, model: ModelParams, layers: list[nn.Module], widths: list[int]) -> None:
        split = model.attention_after if model.attention else len(layers)
        self.head = nn.Sequential(*layers[:split])
        self.attention = (SelfAttention(widths[split - 1], model.attention_style, model.spectral_norm)
                          if model.attention else None)
        self.tail = nn.Sequential(*layers[split:])

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        if self.attention is not None:
            x = self.attention(x)
        return self.tail(x)


class Generator(_AttentionStack):
    """z [B, z_dim] -> images [B, 3, image_size, image_size] in [-1, 1]."""

    def __init__(self, model: ModelParams, image_size: int):
        super().__init__()
        n = num_layers(image_size)
        _check_attention(model, n, image_size)
        self.z_dim = model.z_dim
        widths = [model.g_channels * 2 ** (n - 2 - i) for i in range(n - 1)] + [3]
        bn = model.g_batchnorm
        layers = []
        for i, (c_in, c_out) in enumerate(zip([model.z_dim] + widths[:-1], widths)):
            last = i == n - 1
            stride, padding = (1, 0) if i == 0 else (2, 1)
            conv = nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=last or not bn)
            layers.append(_layer(conv, model.spectral_norm, None if last or not bn else c_out,
                                 nn.Tanh() if last else nn.ReLU(inplace=True)))
        self._assemble(model, layers, widths)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self._features(z.reshape(z.shape[0], self.z_dim, 1, 1))


class Discriminator(_AttentionStack):
    """images [B, 3, image_size, image_size] -> logits [B]."""

    def __init__(self, model: ModelParams, image_size: int):
        super().__init__()
        n = num_layers(image_size)
        _check_attention(model, n, image_size)
        widths = [model.d_channels * 2 ** i for i in range(n - 1)] + [1]
        layers = []
        for i, (c_in, c_out) in enumerate(zip([3] + widths[:-1], widths)):
            last = i == n - 1
            bn = model.d_batchnorm and 0 < i < n - 1
            stride, padding = (1, 0) if last else (2, 1)
            conv = nn.Conv2d(c_in, c_out, 4, stride, padding, bias=not bn)
            layers.append(_layer(conv, model.spectral_norm, c_out if bn else None,
                                 nn.Identity() if last else nn.LeakyReLU(model.leaky_slope)))
        self._assemble(model, layers, widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x).flatten()
