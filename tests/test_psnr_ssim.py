"""The torch-only PSNR-Y / SSIM-Y of training validation against scikit-image (no pyiqa needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import color, data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from d3sr.psnr_ssim import psnr_y, rgb_to_y, ssim_y

# SSIM as Wang et al. 2004 / BasicSR / pyiqa: 11×11 Gaussian σ=1.5, population covariance, 'valid' window positions.
SSIM_ARGS = {"data_range": 255, "gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
PHOTOS = ("astronaut", "coffee", "chelsea")


def tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def y_channel(image: np.ndarray) -> np.ndarray:
    """Independent Y of YCbCr (BT.601 studio range, 16–235) from scikit-image."""
    return color.rgb2ycbcr(image)[..., 0]


@pytest.fixture(scope="module")
def photo_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """(hr, sr) uint8 96×120 crops of scikit-image photos; SR = HR + Gaussian noise (σ = 6 levels), rounded."""
    pairs = []
    for seed, name in enumerate(PHOTOS):
        hr = getattr(data, name)()[:96, :120, :3]
        noise = np.random.default_rng(seed).normal(0, 6.0, hr.shape)
        pairs.append((hr, np.clip(hr + noise, 0, 255).round().astype(np.uint8)))
    return pairs


def test_rgb_to_y_is_bt601_studio_range(photo_pairs):
    hr, _ = photo_pairs[0]
    np.testing.assert_allclose(rgb_to_y(tensor(hr))[0, 0].numpy() * 255, y_channel(hr), atol=1e-3)


def test_psnr_ssim_match_skimage_on_y(photo_pairs):
    for hr, sr in photo_pairs:
        expected_psnr = peak_signal_noise_ratio(y_channel(hr), y_channel(sr), data_range=255)
        expected_ssim = structural_similarity(y_channel(hr), y_channel(sr), **SSIM_ARGS)
        assert float(psnr_y(tensor(sr), tensor(hr))) == pytest.approx(expected_psnr, abs=1e-3)
        assert float(ssim_y(tensor(sr), tensor(hr))) == pytest.approx(expected_ssim, abs=1e-5)


def test_crop_border_matches_skimage_on_the_cropped_y(photo_pairs):
    hr, sr = photo_pairs[1]
    y_hr, y_sr = y_channel(hr)[4:-4, 4:-4], y_channel(sr)[4:-4, 4:-4]
    psnr = float(psnr_y(tensor(sr), tensor(hr), crop_border=4))
    ssim = float(ssim_y(tensor(sr), tensor(hr), crop_border=4))
    assert psnr == pytest.approx(peak_signal_noise_ratio(y_hr, y_sr, data_range=255), abs=1e-3)
    assert ssim == pytest.approx(structural_similarity(y_hr, y_sr, **SSIM_ARGS), abs=1e-5)


def test_batches_score_each_image(photo_pairs):
    sr = torch.cat([tensor(sr) for _, sr in photo_pairs])
    hr = torch.cat([tensor(hr) for hr, _ in photo_pairs])
    singles = [float(psnr_y(tensor(s), tensor(h))) for h, s in photo_pairs]
    assert psnr_y(sr, hr).tolist() == pytest.approx(singles, abs=1e-4)
    assert ssim_y(sr, hr).shape == (len(photo_pairs),)


def test_identical_images_give_inf_psnr_and_unit_ssim(photo_pairs):
    hr, _ = photo_pairs[0]
    assert float(psnr_y(tensor(hr), tensor(hr))) == float("inf")
    assert float(ssim_y(tensor(hr), tensor(hr))) == pytest.approx(1.0, abs=1e-6)
