"""Real-ESRGAN degradation: noise statistics, JPEG, shapes and ranges, per-image determinism, USM, the data module."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import default_collate

from d3sr.data import RealESRGANDegradation
from d3sr.data.datasets import embedded_photo, random_crop
from d3sr.data.degradation import BicubicDegradation, gaussian_noise, jpeg, poisson_noise, quantize, usm_sharp

# Everything but stage-1 noise switched off: no blur (σ → 0), no resize, no sinc, JPEG at its finest step, ×1.
NOISE_ONLY = dict(
    scale=1, sinc_prob=0.0, blur_sigma=(1e-3, 1e-3), resize_prob=(0, 0, 1), gaussian_noise_prob=1.0,
    gray_noise_prob=1.0, noise_range=(20, 20), jpeg_range=(100, 100), second_blur_prob=0.0, resize_prob2=(0, 0, 1),
    gaussian_noise_prob2=1.0, noise_range2=(0, 0), jpeg_range2=(100, 100), final_sinc_prob=0.0,
)  # fmt: skip


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    """Six different 128² crops of scikit-image photos."""
    crops = []
    for name in ("astronaut", "coffee", "chelsea"):
        image = embedded_photo(name)
        crops += [random_crop(image, 128, np.random.default_rng(seed)) for seed in (0, 1)]
    return crops


def make_batch(degradation, images, seeds) -> dict[str, torch.Tensor]:
    """The collated batch SRSamples would produce: gt and the parameters drawn from default_rng(seed)."""
    samples = [{"gt": g, **degradation.sample(np.random.default_rng(s))} for g, s in zip(images, seeds)]
    return default_collate(samples)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def test_gaussian_noise_sigma_through_the_pipeline_on_flat_gray():
    degradation = RealESRGANDegradation(**NOISE_ONLY)
    gray = [torch.full((3, 128, 128), 0.5)] * 2
    lq = degradation.degrade(make_batch(degradation, gray, [0, 1]))
    noise = lq - 0.5
    assert noise.std().item() == pytest.approx(20 / 255, rel=0.03)
    assert abs(noise.mean().item()) < 0.002
    torch.testing.assert_close(noise[:, 0], noise[:, 2])  # gray noise: the same on every channel
    assert not torch.equal(noise[0], noise[1])  # each image its own noise


def test_noise_generators_match_their_distributions():
    generator = torch.Generator().manual_seed(0)
    flat = torch.full((1, 3, 256, 256), 0.5)
    color = gaussian_noise(flat, 10 / 255, gray=False, generator=generator)
    assert color.std().item() == pytest.approx(10 / 255, rel=0.02)
    assert torch.corrcoef(color[0].reshape(3, -1))[0, 1].abs() < 0.02  # independent channels
    # A flat image has one 8-bit level, so 1 photon per unit: noise = (Poisson(0.5) − 0.5)·scale, variance 0.5·scale².
    shot = poisson_noise(flat, 0.1, gray=False, generator=generator)
    assert shot.std().item() == pytest.approx(math.sqrt(0.5) * 0.1, rel=0.03)
    assert abs(shot.mean().item()) < 0.002
    gray = poisson_noise(flat, 0.1, gray=True, generator=generator)
    assert gray.shape == (1, 1, 256, 256)


def test_jpeg_error_grows_as_quality_drops_and_tracks_libjpeg(photos):
    cv2 = pytest.importorskip("cv2")
    image = quantize(photos[0][None])
    errors = {}
    for quality in (30, 95):
        ours = jpeg(image, torch.tensor([float(quality)]))
        array = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        _, code = cv2.imencode(".jpg", array[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        reference = torch.from_numpy(cv2.imdecode(code, cv2.IMREAD_COLOR)[..., ::-1].copy()).permute(2, 0, 1) / 255
        errors[quality] = psnr(ours, image)
        assert errors[quality] == pytest.approx(psnr(reference[None], image), abs=1.5)
    assert errors[95] > errors[30] + 5
    # Per-image quality in one batch equals one image at a time.
    both = jpeg(image.repeat(2, 1, 1, 1), torch.tensor([30.0, 95.0]))
    torch.testing.assert_close(both[1:], jpeg(image, torch.tensor([95.0])))


def test_shapes_range_and_8_bit_quantisation(photos):
    degradation = RealESRGANDegradation()
    batch = make_batch(degradation, photos, range(6))
    lq = degradation.degrade(batch)
    assert lq.shape == (6, 3, 32, 32)
    assert lq.min() >= 0 and lq.max() <= 1
    torch.testing.assert_close(lq * 255, (lq * 255).round(), rtol=0, atol=1e-4)
    out = degradation(batch)
    assert set(out) == {"gt", "lq"}  # the sampled parameters are consumed
    assert out["lq"].shape == (6, 3, 128, 128) and out["lq"].min() >= 0 and out["lq"].max() <= 1
    assert out["gt"] is batch["gt"]  # no USM in set A


def test_same_image_same_degradation_whatever_the_batch(photos):
    degradation = RealESRGANDegradation()
    images, seeds = photos[:4], [10, 11, 12, 13]
    whole = degradation.degrade(make_batch(degradation, images, seeds))
    halves = torch.cat([degradation.degrade(make_batch(degradation, images[i : i + 2], seeds[i : i + 2]))
                        for i in (0, 2)])  # fmt: skip
    reversed_ = degradation.degrade(make_batch(degradation, images[::-1], seeds[::-1])).flip(0)
    assert torch.equal(whole, halves) and torch.equal(whole, reversed_)
    assert torch.equal(whole, degradation.degrade(make_batch(degradation, images, seeds)))  # same seed, same LQ
    other = degradation.degrade(make_batch(degradation, images, [20, 21, 22, 23]))
    for i in range(4):
        assert (other[i] - whole[i]).abs().mean() > 1e-3  # different seed, different degradation


def test_degraded_batch_differs_from_bicubic(photos):
    degradation = RealESRGANDegradation()
    batch = make_batch(degradation, photos, range(6))
    real, bicubic = degradation.degrade(batch), BicubicDegradation().degrade(batch)
    assert real.shape == bicubic.shape
    assert all((real[i] - bicubic[i]).abs().mean() > 0.01 for i in range(6))


def test_usm_sharpens_the_target(photos):
    degradation = RealESRGANDegradation(usm=True)
    batch = make_batch(degradation, photos[:2], [0, 1])
    out = degradation(batch)

    def high_frequency_energy(x: torch.Tensor) -> float:
        laplacian = (
            x[..., 1:-1, 2:] + x[..., 1:-1, :-2] + x[..., 2:, 1:-1] + x[..., :-2, 1:-1] - 4 * x[..., 1:-1, 1:-1]
        )
        return float((laplacian**2).mean())

    assert high_frequency_energy(out["gt"]) > 1.2 * high_frequency_energy(batch["gt"])
    assert out["gt"].min() >= 0 and out["gt"].max() <= 1
    flat = torch.full((1, 3, 64, 64), 0.3)
    torch.testing.assert_close(usm_sharp(flat), flat)  # nothing to sharpen


def test_bad_settings_and_batches_fail_clearly(photos):
    with pytest.raises(ValueError, match="kernel_prob"):
        RealESRGANDegradation(kernel_prob=(0.5, 0.5, 0, 0, 0, 0.5))
    with pytest.raises(ValueError, match="resize_range2"):
        RealESRGANDegradation(resize_range2=(1.2, 0.3))
    with pytest.raises(ValueError, match="jpeg_range"):
        RealESRGANDegradation(jpeg_range=(0, 95))
    with pytest.raises(ValueError, match="kernel_list"):
        RealESRGANDegradation(kernel_list=("iso", "box"), kernel_prob=(0.5, 0.5))
    with pytest.raises(ValueError, match="sample"):
        RealESRGANDegradation().degrade({"gt": photos[0][None]})


def test_configs_build_and_the_data_module_degrades_per_image(compose):
    cfg = compose(["experiment=demo"])
    assert cfg.degradation._target_.endswith("RealESRGANDegradation")
    stablesr = instantiate(compose(["experiment=demo", "degradation=stablesr"]).degradation)
    assert stablesr.usm and stablesr.no_degradation_prob == 0.01

    def first_four(batch_size: int) -> torch.Tensor:
        cfg.data.batch_size = batch_size
        datamodule = instantiate(cfg.data)
        lq = []
        for batch in datamodule.train_dataloader():
            batch = datamodule.on_after_batch_transfer(batch, 0)
            assert set(batch) == {"gt", "lq", "index"}
            assert batch["lq"].shape == batch["gt"].shape == (batch_size, 3, 128, 128)
            lq.append(batch["lq"])
            if sum(len(x) for x in lq) >= 4:
                return torch.cat(lq)[:4]

    assert torch.equal(first_four(4), first_four(2))
