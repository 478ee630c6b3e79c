"""SAGAN networks, self-attention, the generator file and `sagan sample`."""
import dataclasses
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn.utils import parametrize

from sagan import paths
from sagan.cli import main
from sagan.errors import SaganError
from sagan.model.attention import SelfAttention, double_backward
from sagan.model.io import load_generator, save_generator
from sagan.model.networks import Discriminator, Generator
from sagan.model.sample import save_grid
from sagan.params import ModelParams

ROOT = Path(__file__).resolve().parents[1]
SMALL = ModelParams(z_dim=16, g_channels=8, d_channels=8)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_params(c_in: int, c_out: int, k: int, bias: bool) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def sagan_attention_params(c: int) -> int:
    c8 = c // 8
    return 2 * conv_params(c, c8, 1, True) + conv_params(c, c, 1, True) + 1  # + gamma


# ---------------------------------------------------------------- shapes and parameter counts

def test_paper_model_at_64px_has_the_papers_layout_and_parameter_count():
    cfg = ModelParams()  # z 128, 64 channels, BN, SN, sagan attention after layer 3
    G, D = Generator(cfg, 64), Discriminator(cfg, 64)
    # G: 128 -> 4x4x512 -> 8x8x256 -> 16x16x128 (attention) -> 32x32x64 -> 64x64x3; BN (2 params/ch)
    # on all but the last layer, bias only where no BN follows.
    g_expected = (128 * 512 * 16 + 2 * 512 + 512 * 256 * 16 + 2 * 256 + 256 * 128 * 16 + 2 * 128
                  + 128 * 64 * 16 + 2 * 64 + 64 * 3 * 16 + 3 + sagan_attention_params(128))
    # D: 3 -> 32x32x64 (bias, no BN) -> 16x16x128 -> 8x8x256 (attention) -> 4x4x512 -> 1 (bias).
    d_expected = (3 * 64 * 16 + 64 + 64 * 128 * 16 + 2 * 128 + 128 * 256 * 16 + 2 * 256
                  + 256 * 512 * 16 + 2 * 512 + 512 * 1 * 16 + 1 + sagan_attention_params(256))
    assert (n_params(G), n_params(D)) == (g_expected, d_expected)
    convs = [m for m in G.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 5 + 3  # five layers + query, key, value
    torch.manual_seed(0)
    images = G(torch.randn(3, 128))
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.float32
    assert images.abs().max() <= 1.0
    logits = D(images)
    assert logits.shape == (3,) and logits.dtype == torch.float32


def expected_counts(cfg: ModelParams, size: int) -> tuple[int, int]:
    """Parameter counts from the layer formula: log2(size) - 1 layers of 4x4 convolutions."""
    n = int(math.log2(size)) - 1
    g_widths = [cfg.z_dim] + [cfg.g_channels * 2 ** (n - 2 - i) for i in range(n - 1)] + [3]
    d_widths = [3] + [cfg.d_channels * 2 ** i for i in range(n - 1)] + [1]
    g = d = 0
    for i in range(n):
        g_bn = cfg.g_batchnorm and i < n - 1
        g += conv_params(g_widths[i], g_widths[i + 1], 4, not g_bn) + (2 * g_widths[i + 1] if g_bn else 0)
        d_bn = cfg.d_batchnorm and 0 < i < n - 1
        d += conv_params(d_widths[i], d_widths[i + 1], 4, not d_bn) + (2 * d_widths[i + 1] if d_bn else 0)
    k = cfg.attention_after
    return g + sagan_attention_params(g_widths[k]), d + sagan_attention_params(d_widths[k])


@pytest.mark.parametrize("size,bn", [(32, True), (32, False), (64, False), (128, True)])
def test_depth_follows_resolution(size, bn):
    cfg = dataclasses.replace(SMALL, g_batchnorm=bn, d_batchnorm=bn)
    G, D = Generator(cfg, size), Discriminator(cfg, size)
    assert (n_params(G), n_params(D)) == expected_counts(cfg, size)
    layers = int(math.log2(size)) - 1  # 4 at 32 px, 6 at 128 px
    assert len(G.head) + len(G.tail) == len(D.head) + len(D.tail) == layers
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == (layers - 1 if bn else 0)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == (layers - 2 if bn else 0)
    images = G(torch.randn(2, cfg.z_dim))
    assert images.shape == (2, 3, size, size)
    assert D(images).shape == (2,)


def test_activations_are_relu_in_g_and_leaky_relu_with_the_configured_slope_in_d():
    cfg = dataclasses.replace(SMALL, leaky_slope=0.1)
    G, D = Generator(cfg, 32), Discriminator(cfg, 32)
    assert sum(isinstance(m, nn.ReLU) for m in G.modules()) == 3
    assert isinstance(list(G.modules())[-1], nn.Tanh)
    slopes = [m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)]
    assert slopes == [0.1, 0.1, 0.1]


def test_dcgan_initialisation_is_seeded():
    torch.manual_seed(0)
    G = Generator(ModelParams(), 64)
    big = G.head[1][0].parametrizations.weight.original  # 512 x 256 x 4 x 4
    assert abs(big.std().item() - 0.02) < 0.001 and abs(big.mean().item()) < 0.001
    bn = G.head[1][1].weight
    assert abs(bn.mean().item() - 1.0) < 0.005 and 0.01 < bn.std().item() < 0.03
    torch.manual_seed(0)
    again = Generator(ModelParams(), 64)
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), again.state_dict().values()))


def test_attention_after_must_leave_a_layer_behind_it():
    with pytest.raises(SaganError) as err:
        Generator(dataclasses.replace(SMALL, attention_after=4), 32)
    assert str(err.value) == ("model.attention_after: 4 leaves no layer after the attention at 32 px "
                              "(4 layers per network) (hint: use 1..3)")
    Discriminator(dataclasses.replace(SMALL, attention_after=4), 64)  # five layers: fine


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, attention_style="biggan")
    G, D = Generator(cfg, 32).eval(), Discriminator(cfg, 32).eval()
    z = torch.randn(2, cfg.z_dim)
    expected = D(G(z))
    G.to(memory_format=torch.channels_last)
    D.to(memory_format=torch.channels_last)
    images = G(z)
    assert torch.allclose(D(images.contiguous(memory_format=torch.channels_last)), expected, atol=1e-5)


# ---------------------------------------------------------------- spectral norm

def spectral_normed(module: nn.Module) -> list[bool]:
    """For every convolution: does a spectral-norm parametrization compute its weight?"""
    return [parametrize.is_parametrized(m, "weight")
            and type(m.parametrizations.weight[0]).__name__ == "_SpectralNorm"
            for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


@pytest.mark.parametrize("style,n_attention_convs", [("sagan", 3), ("biggan", 4)])
def test_spectral_norm_on_every_convolution(style, n_attention_convs):
    cfg = dataclasses.replace(SMALL, attention_style=style)
    for net in (Generator(cfg, 64), Discriminator(cfg, 64)):
        assert spectral_normed(net) == [True] * (5 + n_attention_convs)
        assert spectral_normed(net.attention) == [True] * n_attention_convs
    off = dataclasses.replace(cfg, spectral_norm=False)
    for net in (Generator(off, 64), Discriminator(off, 64)):
        assert spectral_normed(net) == [False] * (5 + n_attention_convs)


def test_spectral_norm_bounds_the_largest_singular_value():
    torch.manual_seed(0)
    G = Generator(SMALL, 32)
    for _ in range(30):  # power iterations run in training-mode forwards
        G(torch.randn(2, SMALL.z_dim))
    conv = G.head[1][0]  # ConvTranspose2d: normalised along dim 1 (output channels)
    weight = conv.weight.detach()
    sigma = torch.linalg.matrix_norm(weight.transpose(0, 1).flatten(1), ord=2)
    assert sigma.item() == pytest.approx(1.0, abs=1e-3)


# ---------------------------------------------------------------- attention

def capture_attention_input(net: nn.Module, x: torch.Tensor) -> torch.Size:
    shapes = []
    handle = net.attention.register_forward_hook(lambda mod, inputs, out: shapes.append(inputs[0].shape))
    net(x)
    handle.remove()
    return shapes[0]


@pytest.mark.parametrize("size,after,g_map,d_map", [(64, 3, 16, 8), (32, 3, 16, 4), (64, 1, 4, 32)])
def test_attention_sits_where_the_params_say(size, after, g_map, d_map):
    cfg = dataclasses.replace(SMALL, attention_after=after)
    G, D = Generator(cfg, size), Discriminator(cfg, size)
    g_shape = capture_attention_input(G, torch.randn(2, cfg.z_dim))
    d_shape = capture_attention_input(D, torch.randn(2, 3, size, size))
    assert g_shape[2:] == (g_map, g_map) and d_shape[2:] == (d_map, d_map)
    assert g_shape[1] == G.attention.query.in_channels and d_shape[1] == D.attention.query.in_channels
    assert G.attention.gamma.item() == 0.0 and D.attention.gamma.item() == 0.0


def test_attention_can_be_switched_off():
    cfg = dataclasses.replace(SMALL, attention=False)
    G, D = Generator(cfg, 32), Discriminator(cfg, 32)
    assert G.attention is None and D.attention is None
    assert not any(isinstance(m, SelfAttention) for m in [*G.modules(), *D.modules()])
    assert G(torch.randn(2, cfg.z_dim)).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("style", ["sagan", "biggan"])
def test_attention_with_gamma_zero_is_the_identity(style):
    torch.manual_seed(0)
    attention = SelfAttention(16, style, spectral_norm=True)
    assert attention.gamma.shape == (1,) and attention.gamma.item() == 0.0
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(attention(x), x)
    with torch.no_grad():
        attention.gamma.fill_(0.5)
    assert not torch.allclose(attention(x), x)


def conv1x1(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution written as a matrix product over channels (weight via its parametrization)."""
    w = conv.weight.reshape(conv.out_channels, conv.in_channels)
    out = torch.einsum("oc,bchw->bohw", w, x)
    return out if conv.bias is None else out + conv.bias.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("style", ["sagan", "biggan"])
def test_attention_matches_the_formula(style):
    torch.manual_seed(0)
    attention = SelfAttention(16, style, spectral_norm=False)
    with torch.no_grad():
        attention.gamma.fill_(0.7)
    x = torch.randn(2, 16, 6, 6)
    source = nn.functional.max_pool2d(x, 2) if style == "biggan" else x
    f, g, h = conv1x1(attention.query, x), conv1x1(attention.key, source), conv1x1(attention.value, source)
    assert (f.shape[1], h.shape[1]) == (2, 8 if style == "biggan" else 16)
    expected = torch.empty_like(x)
    for b in range(2):
        for i in range(6):
            for j in range(6):
                scores = torch.einsum("c,chw->hw", f[b, :, i, j], g[b]).flatten()  # not scaled
                weights = torch.softmax(scores, dim=0)
                mixed = (h[b].flatten(1) * weights).sum(dim=1)
                if style == "biggan":
                    mixed = attention.out.weight.reshape(16, 8) @ mixed
                expected[b, :, i, j] = x[b, :, i, j] + 0.7 * mixed
    assert torch.allclose(attention(x), expected, atol=1e-5)


def old_attention(attention: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """The module's forward before issue 27: softmax(q^T k) and bmm(v, weights^T) in [B, C, N]."""
    pooled = nn.functional.max_pool2d(x, 2) if attention.style == "biggan" else x
    query, key, value = (attention.query(x).flatten(2), attention.key(pooled).flatten(2),
                         attention.value(pooled).flatten(2))
    weights = torch.softmax(torch.bmm(query.transpose(1, 2), key), dim=-1)
    attended = torch.bmm(value, weights.transpose(1, 2)).reshape(x.shape[0], -1, *x.shape[2:])
    return x + attention.gamma * (attention.out(attended) if attention.out is not None else attended)


@pytest.mark.parametrize("style,channels_last", [("sagan", False), ("biggan", False), ("sagan", True)])
def test_fused_and_explicit_attention_match_the_old_module_in_outputs_and_gradients(style, channels_last):
    torch.manual_seed(0)
    attention = SelfAttention(32, style, spectral_norm=True).eval()  # eval: no power iteration per call
    with torch.no_grad():
        attention.gamma.fill_(0.7)
    x = torch.randn(4, 32, 8, 8)
    x = x.to(memory_format=torch.channels_last) if channels_last else x
    x.requires_grad_(True)
    upstream = torch.randn(4, 32, 8, 8)
    inputs = [x, *attention.parameters()]

    def forward_and_grads(forward):
        out = forward()
        return out, torch.autograd.grad(out, inputs, upstream)

    reference, ref_grads = forward_and_grads(lambda: old_attention(attention, x))
    fused, fused_grads = forward_and_grads(lambda: attention(x))
    with double_backward():
        explicit, explicit_grads = forward_and_grads(lambda: attention(x))
    assert (reference - x).abs().max() > 0.1  # the attention contributes
    for out, grads in [(fused, fused_grads), (explicit, explicit_grads)]:
        assert torch.allclose(out, reference, atol=1e-5)
        for g, r in zip(grads, ref_grads):
            assert torch.allclose(g, r, atol=1e-5, rtol=1e-4)


def test_attention_is_fused_except_inside_double_backward(monkeypatch):
    calls = []
    fused = nn.functional.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls.append(1)
        return fused(*args, **kwargs)

    monkeypatch.setattr(nn.functional, "scaled_dot_product_attention", counted)
    attention = SelfAttention(16)
    x = torch.randn(2, 16, 4, 4)
    attention(x)
    assert len(calls) == 1
    with double_backward():
        with double_backward():  # nested, as when a caller wraps the penalty
            attention(x)
        attention(x)
    assert len(calls) == 1
    attention(x)
    assert len(calls) == 2


# ---------------------------------------------------------------- generator file

def trained_generator(cfg: ModelParams, size: int) -> Generator:
    """A generator whose BN statistics and spectral-norm vectors have moved off their start values."""
    torch.manual_seed(1)
    G = Generator(cfg, size)
    with torch.no_grad():
        for _ in range(3):
            G(torch.randn(4, cfg.z_dim))
        G.attention.gamma.fill_(0.3)
    return G


@pytest.mark.parametrize("style", ["sagan", "biggan"])
def test_generator_file_round_trips_exactly(tmp_path, style):
    cfg = dataclasses.replace(SMALL, attention_style=style)
    G = trained_generator(cfg, 32)
    path = tmp_path / "models" / "generator.pt"
    save_generator(path, G, cfg, 32, ema=True)
    assert [p.name for p in path.parent.iterdir()] == ["generator.pt"]  # no temporary left behind

    saved = torch.load(path, weights_only=True)
    assert set(saved) == {"state_dict", "config", "ema"} and saved["ema"] is True
    assert saved["config"] == {**dataclasses.asdict(cfg), "image_size": 32}
    assert "head.0.0.parametrizations.weight.original" in saved["state_dict"]
    assert "head.0.0.parametrizations.weight.0._u" in saved["state_dict"]

    loaded, config = load_generator(path)
    assert config == saved["config"] and not loaded.training
    z = torch.randn(5, cfg.z_dim)
    with torch.no_grad():
        assert torch.equal(loaded(z), G.eval()(z))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), G.state_dict().values()))


def test_generator_file_bytes_depend_only_on_weights_and_config(tmp_path):
    """DVC hashes models/generator.pt: the same weights and config must give the same bytes, whatever
    the file is called and whenever it is written."""
    G = trained_generator(SMALL, 32)
    save_generator(tmp_path / "a" / "generator.pt", G, SMALL, 32, ema=False)
    save_generator(tmp_path / "b" / "other_name.pt", G, SMALL, 32, ema=False)
    first = (tmp_path / "a" / "generator.pt").read_bytes()
    assert (tmp_path / "b" / "other_name.pt").read_bytes() == first
    save_generator(tmp_path / "a" / "generator.pt", G, SMALL, 32, ema=False)  # rewritten in place
    assert (tmp_path / "a" / "generator.pt").read_bytes() == first
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["generator.pt"]
    save_generator(tmp_path / "c.pt", G, SMALL, 32, ema=True)  # another ema flag: different bytes
    assert (tmp_path / "c.pt").read_bytes() != first
    assert load_generator(tmp_path / "b" / "other_name.pt")[1] == {**dataclasses.asdict(SMALL), "image_size": 32}


def test_a_compiled_generator_is_saved_under_its_plain_names(tmp_path):
    G = trained_generator(SMALL, 32)
    save_generator(tmp_path / "g.pt", torch.compile(G), SMALL, 32, ema=False)  # compiles lazily: cheap
    assert list(torch.load(tmp_path / "g.pt", weights_only=True)["state_dict"]) == list(G.state_dict())


def test_generator_file_errors_name_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SaganError, match=r"^models/generator\.pt: not found; it is written by `sagan train` "
                                         r"\(hint: run `sagan train`, or the whole pipeline: `dvc repro`\)$"):
        load_generator(paths.RUN.generator)

    html = tmp_path / "quota.pt"
    html.write_text("<html>Google Drive quota exceeded</html>")
    with pytest.raises(SaganError) as err:
        load_generator(html)
    assert str(err.value) == f"{html}: not a generator file (not a torch.save archive: truncated, or another file type)"

    good = tmp_path / "good.pt"
    save_generator(good, Generator(SMALL, 32), SMALL, 32, ema=False)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(SaganError, match="^" + str(truncated) + ": not a generator file"):
        load_generator(truncated)

    mismatched = tmp_path / "mismatched.pt"
    saved = torch.load(good, weights_only=True)
    saved["config"]["g_channels"] = 16
    torch.save(saved, mismatched)
    with pytest.raises(SaganError) as err:
        load_generator(mismatched)
    message = str(err.value)
    assert message.startswith(f"{mismatched}: weights do not match the config saved with them (")
    assert "size mismatch" in message and "\n" not in message

    not_a_generator = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, not_a_generator)
    with pytest.raises(SaganError) as err:
        load_generator(not_a_generator)
    assert str(err.value) == (f"{not_a_generator}: not a generator file (expected a state_dict and a "
                              f"config with image_size)")


# ---------------------------------------------------------------- grids and `sagan sample`

def test_save_grid_writes_the_uint8_pixels_as_given(tmp_path):
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    save_grid(images, tmp_path / "grid.png")  # nrow = ceil(sqrt(4)) = 2, padding 2 px
    grid = Image.open(tmp_path / "grid.png")
    assert grid.format == "PNG" and grid.mode == "RGB" and grid.size == (2 * 10 + 2, 2 * 10 + 2)
    pixels = torch.from_numpy(np.array(grid)).permute(2, 0, 1)  # HWC -> CHW
    padding = torch.ones_like(pixels, dtype=torch.bool)
    for i, image in enumerate(images):
        top, left = 2 + 10 * (i // 2), 2 + 10 * (i % 2)
        assert torch.equal(pixels[:, top:top + 8, left:left + 8], image), i
        padding[:, top:top + 8, left:left + 8] = False
    assert pixels[padding].eq(0).all()  # black


@pytest.mark.parametrize("n,cols,rows", [(64, 8, 8), (10, 4, 3)])
def test_sample_command_writes_a_grid_png(tmp_path, smoke_params_file, n, cols, rows):
    generator_file = tmp_path / "generator.pt"
    save_generator(generator_file, trained_generator(SMALL, 32), SMALL, 32, ema=False)
    out = tmp_path / "grid.png"
    args = ["sample", "--params", smoke_params_file, "--generator", str(generator_file), "--n", str(n), "--out", str(out)]
    assert main(args + ["--seed", "3"]) == 0
    assert Image.open(out).size == (cols * (32 + 2) + 2, rows * (32 + 2) + 2)
    first = out.read_bytes()
    assert main(args + ["--seed", "3"]) == 0 and out.read_bytes() == first   # seeded
    assert main(args + ["--seed", "4"]) == 0 and out.read_bytes() != first


def test_sample_command_reports_a_bad_generator_in_one_line(tmp_path, smoke_params_file, capsys):
    bad = tmp_path / "generator.pt"
    bad.write_bytes(b"\x00" * 100)
    assert main(["sample", "--params", smoke_params_file, "--generator", str(bad), "--out", str(tmp_path / "g.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sagan sample: error: {bad}: not a generator file") and err.count("\n") == 1
    assert not (tmp_path / "g.png").exists()


def test_sample_command_refuses_a_directory_as_out(tmp_path, smoke_params_file, capsys):
    generator_file = tmp_path / "generator.pt"
    save_generator(generator_file, trained_generator(SMALL, 32), SMALL, 32, ema=False)
    out = tmp_path / "grids"
    out.mkdir()
    assert main(["sample", "--params", smoke_params_file, "--generator", str(generator_file), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sagan sample: error: --out: {out} is a directory") and err.count("\n") == 1
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["generator.pt", "grids"]


@pytest.mark.parametrize("kind", ["fifo", "symlink to a fifo"])
def test_sample_command_refuses_an_out_that_is_not_a_regular_file(tmp_path, smoke_params_file, capsys, kind):
    """The grid replaces --out atomically: a device node or a FIFO there (as root, /dev/null) would
    be replaced, so anything that exists and is not a regular file is refused before sampling."""
    generator_file = tmp_path / "generator.pt"
    save_generator(generator_file, trained_generator(SMALL, 32), SMALL, 32, ema=False)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = fifo if kind == "fifo" else tmp_path / "link.png"
    if out != fifo:
        out.symlink_to(fifo)
    args = ["sample", "--params", smoke_params_file, "--generator", str(generator_file), "--out", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err == (f"sagan sample: error: --out: {out} exists and is not a regular file; sample writes a PNG "
                   f"file (hint: give a new path or an existing PNG, e.g. --out samples.png)\n")
    assert stat.S_ISFIFO(fifo.stat().st_mode) and out.exists() and out.is_symlink() == (kind != "fifo")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"generator.pt", "fifo", out.name})
