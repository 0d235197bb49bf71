"""The linear patch codec inside AutoencoderKL (d3sr.models.linear_vae): the embedding computes what the codec does."""

import copy

import pytest
import torch
from diffusers import AutoencoderKL

from d3sr.models import architectures as arch
from d3sr.models.linear_vae import LinearCodec, check_embeddable, embed, needs_float32


def random_codec(seed: int = 0) -> LinearCodec:
    """A codec with random weights, its encoder set from random patches as pretraining does."""
    torch.manual_seed(seed)
    codec = LinearCodec(arch.DEMO_VAE)
    codec.init_from_patches(torch.rand(512, 48) * 2 - 1)
    codec.balance(torch.rand(2, 3, 32, 32) * 2 - 1)
    return codec


@pytest.fixture(scope="module")
def codec_and_vae():
    codec = random_codec()
    return codec, embed(codec, AutoencoderKL(**arch.DEMO_VAE)).eval()


@torch.no_grad()
def test_the_autoencoderkl_computes_the_codec(codec_and_vae):
    codec, vae = codec_and_vae
    x = torch.rand(2, 3, 48, 64) * 2 - 1
    z = vae.encode(x).latent_dist.mode()
    # float32 rounding around the pair offsets (A = 1000): measured 4.5e-4 on latents up to 2, i.e. ~74 dB
    assert torch.allclose(z, codec.encode(x), atol=2e-3)
    assert torch.allclose(vae.decode(z).sample, codec.decode(z), atol=1e-4)
    # Nearly deterministic posterior, as Stable Diffusion's: log-variance LOGVAR.
    assert float(vae.encode(x).latent_dist.std.max()) < 3e-3


@torch.no_grad()
def test_no_group_norm_statistics_leak_between_regions(codec_and_vae):
    """A plain AutoencoderKL normalises by each image's statistics: encoding a crop differs from cropping the encoding,
    and a colour change in one corner shifts colours everywhere. The paired channels make both exact."""
    _, vae = codec_and_vae
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    z = vae.encode(x).latent_dist.mode()
    z_crop = vae.encode(x[..., :32, :32]).latent_dist.mode()
    assert (z[..., :8, :8] - z_crop).abs().max() < 2e-3
    brighter = x.clone()
    brighter[..., 48:, 48:] = 1.0  # a white corner
    away = (vae.decode(vae.encode(brighter).latent_dist.mode()).sample - vae.decode(z).sample)[..., :32, :32]
    assert away.abs().max() < 2e-3  # far from the corner, nothing moves


@torch.no_grad()
def test_float16_storage_keeps_the_codec(codec_and_vae, tmp_path):
    """The pair offsets are integers, exact in float16: the shipped weights compute the codec to ~50 dB."""
    codec, vae = codec_and_vae
    copy.deepcopy(vae).half().save_pretrained(tmp_path)
    loaded = AutoencoderKL.from_pretrained(tmp_path, torch_dtype=torch.float32).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    error = loaded.decode(loaded.encode(x).latent_dist.mode()).sample - codec(x)
    psnr = 10 * torch.log10(4 / error.pow(2).mean())
    assert psnr > 45, psnr  # measured 55 dB


def test_an_architecture_that_cannot_hold_it_is_refused_by_key():
    with pytest.raises(ValueError, match="norm_num_groups=16"):
        check_embeddable({**arch.DEMO_VAE, "norm_num_groups": 16}, features=16)
    with pytest.raises(ValueError, match="exactly 3 blocks"):
        check_embeddable(arch.VAE_SD, features=16)
    with pytest.raises(ValueError, match="features=6 must be a multiple of 4"):
        LinearCodec({**arch.DEMO_VAE, "norm_num_groups": 4}, features=6)


@torch.no_grad()
def test_the_generator_keeps_the_codec_in_float32_under_bf16_autocast():
    """bf16 autocast (trainer.precision=bf16-mixed) would run the VAE's convolutions in bf16, where A + f loses f."""
    from d3sr.models.generator import OneStepGenerator
    from d3sr.models.loading import pretrained_tiny

    generator = OneStepGenerator(pretrained_tiny("sd"), timestep=199).eval()
    assert generator.vae_float32 and needs_float32(generator.vae)
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    reference = generator.encode(image)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = generator.encode(image)
        decoded = generator.decode(reference)
    assert z.dtype == torch.float32 and torch.equal(z, reference)
    assert torch.equal(decoded, generator.decode(reference))
    assert not needs_float32(AutoencoderKL(**arch.DEMO_VAE))  # a VAE that is not the codec


@torch.no_grad()
def test_whitening_gives_unit_channels_and_keeps_the_reconstruction():
    """whiten rescales the latent channels (a PCA codec's differ ~9× in scale) to unit std; the decoder absorbs the
    scales, so the reconstruction, and the AutoencoderKL holding the codec, compute the same images."""
    codec = random_codec()
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    before = codec(x)
    spread = codec.encode(x).std((0, 2, 3))
    std = codec.whiten(x)
    assert torch.allclose(std, spread)
    assert torch.allclose(codec.encode(x).std((0, 2, 3)), torch.ones(12), atol=1e-5)
    assert torch.allclose(codec(x), before, atol=1e-5)
    vae = embed(codec, AutoencoderKL(**arch.DEMO_VAE)).eval()
    z = vae.encode(x).latent_dist.mode()
    assert torch.allclose(z, codec.encode(x), atol=2e-3)
    assert torch.allclose(vae.decode(z).sample, before, atol=1e-3)
