"""The synchronised tiled VAE (tiled_vae.py): whole-image GroupNorm, and tiled encoder/decoder equal to untiled.

Measured on the pretrained tiny backbone (src/d3sr/assets/tiny_backbone), astronaut ×4-downscaled to 32², 128² output,
tiles of 64 output pixels (2×2 cores), float32, against the untiled stage: VAE encode 111 dB, VAE decode 117 dB
(float rounding; the v2 VAE: 142 / 144 dB, smaller activations than the linear codec's paired channels).
bench/tiling.py prints the same per stage (256²/512², full-size SD VAE too).
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import Decoder

from d3sr.inference.tiled_vae import Stats, _tile_stats_, count_passes, run_tiled
from d3sr.inference.tiling import run_generator
from d3sr.models.architectures import TINY_VAE


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 2.0) -> float:
    """PSNR in dB for images of range `peak` ([-1, 1]: 2)."""
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


@pytest.fixture(scope="module")
def vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(**TINY_VAE).eval()


@pytest.fixture(scope="module")
def pretrained():
    from d3sr.models.generator import OneStepGenerator
    from d3sr.models.loading import pretrained_tiny

    return OneStepGenerator(pretrained_tiny("sd"), timestep=199).eval()


def test_merged_tile_statistics_give_the_whole_image_group_norm():
    # Channels far from zero mean (as in SD's decoder): a naive E[x²] − E[x]² in float32 would lose the variance.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 23, 17, generator=generator) * 0.5 + torch.linspace(-300, 300, 8)[None, :, None, None]
    norm = torch.nn.GroupNorm(4, 8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(8, generator=generator) + 0.5)
        norm.bias.copy_(torch.randn(8, generator=generator))
    # Uneven parts, as the cores of a tile grid clipped at the image border.
    parts = [x[..., :10, :9], x[..., :10, 9:], x[..., 10:, :4], x[..., 10:, 4:]]
    halves = [Stats.of([_tile_stats_(p.clone()) for p in pair]) for pair in (parts[:2], parts[2:])]
    stats = halves[0].merge(halves[1])
    scale, shift = stats.group_norm_affine(norm)
    assert stats.count == 23 * 17
    with torch.no_grad():
        torch.testing.assert_close(x * scale[..., None, None] + shift[..., None, None], norm(x), rtol=0, atol=2e-5)


@pytest.mark.parametrize(("batch_size", "attention"), [(1, "global"), (3, "global"), (4, "tile")])
def test_tiled_encoder_and_decoder_equal_untiled(vae, batch_size, attention):
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 72, 56, generator=generator) * 2 - 1  # 9×7 latent: 3×2 cores of 4, the last ones cut
    latent = torch.randn(2, 4, 9, 7, generator=generator)
    settings = {"core": 4, "batch_size": batch_size, "attention": attention}
    with torch.no_grad():
        pairs = [(run_tiled(vae.encoder, image, **settings), vae.encoder(image)),
                 (run_tiled(vae.decoder, latent, **settings), vae.decoder(latent))]  # fmt: skip
    for tiled, whole in pairs:
        assert tiled.shape == whole.shape
        if attention == "global":
            torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-4)
        else:  # attention within each tile: close, not equal (measured 17% of the mean magnitude, random weights)
            assert 0 < (tiled - whole).abs().mean() < 0.3 * whole.abs().mean()


def test_progress_counts_every_tile_of_every_pass(vae):
    calls = []
    with torch.no_grad():
        run_tiled(vae.decoder, torch.randn(1, 4, 9, 7), core=4, batch_size=4, progress=lambda *c: calls.append(c))
    total = count_passes(vae.decoder) * 6  # 3×2 cores
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert all(b[0] > a[0] and b[1] == total for a, b in zip(calls, calls[1:]))


def test_tiled_vae_stages_of_the_pretrained_backbone_equal_untiled(pretrained):
    from d3sr.images import embedded_lq, generator_input

    image = generator_input(embedded_lq("astronaut")[None, :, :32, :32])  # 128² output, tiles of 64: 2×2 cores
    whole = run_generator(pretrained, image)
    for stage in ("encode", "decode"):
        tiled = run_generator(pretrained, image, 64, 32, tiled_stages=(stage,))
        assert psnr(tiled, whole) > 100, stage  # measured 111 dB (encode), 117 dB (decode)
    # The shipped VAE holds a linear codec whose GroupNorms read no image statistics (models/linear_vae.py), so even a
    # blend of separately decoded tiles comes close (measured 86 dB on an AVX2 CPU, 105 dB on an AVX-512 one: float
    # rounding; the v2 VAE, trained end to end: 27 dB). The random-weight model of test_tiling.py shows what the blend
    # costs a VAE that does read them.
    blended = run_generator(pretrained, image, 64, 32, tiled_stages=("decode",), vae_tiling="blend")
    assert psnr(blended, whole) > 60


def test_unsupported_decoders_are_refused_with_the_way_out():
    spatial = Decoder(in_channels=4, out_channels=3, block_out_channels=(32,), norm_num_groups=32, norm_type="spatial")
    with pytest.raises(ValueError, match="vae_tiling=blend"):
        run_tiled(spatial, torch.randn(1, 4, 8, 8), core=4)
    with pytest.raises(ValueError, match="attention"):
        run_tiled(spatial, torch.randn(1, 4, 8, 8), core=4, attention="window")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_offloaded_maps_on_cuda_give_the_same_result(vae):
    cuda = AutoencoderKL(**TINY_VAE).eval()
    cuda.load_state_dict(vae.state_dict())
    cuda.cuda()
    latent = torch.randn(1, 4, 9, 7, device="cuda")
    with torch.no_grad():
        whole = cuda.decoder(latent)
        for offload in (True, False):
            tiled = run_tiled(cuda.decoder, latent, core=4, offload=offload)
            assert tiled.device == latent.device
            torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-3)


def test_the_sd_vae_layout_is_what_groupnorm_sync_unrolls():
    # tiled_vae walks diffusers' Encoder/Decoder attributes (conv_in, down_blocks, mid_block, ...), which are not a
    # public API. Build SD's and SDXL's VAE layout (architectures.VAE_SD, small widths) and the demo VAE from the
    # installed diffusers: if a release renames a block, this fails here and names the version.
    import diffusers

    from d3sr.inference.tiled_vae import check_supported
    from d3sr.models.architectures import DEMO_VAE, VAE_SD

    for name, config in (("SD", {**VAE_SD, "block_out_channels": [32, 32, 64, 64], "norm_num_groups": 16}),
                         ("demo", DEMO_VAE)):  # fmt: skip
        vae = AutoencoderKL(**config)
        for net in (vae.encoder, vae.decoder):
            try:
                check_supported(net)
                count_passes(net)
            except (AttributeError, ValueError) as error:
                changed = f"the {name} VAE's {type(net).__name__}"
                pytest.fail(f"diffusers {diffusers.__version__} changed {changed}: {error}")
