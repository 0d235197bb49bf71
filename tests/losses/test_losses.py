"""Sobel edges, EA-DISTS, the adversarial losses and the weighted generator objective."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from d3sr.losses import EADISTS, D3SRLoss
from d3sr.losses.adversarial import discriminator_adversarial_loss, generator_adversarial_loss
from d3sr.losses.dists import DISTS
from d3sr.losses.edges import sobel_magnitude


@pytest.fixture(scope="module")
def dists() -> DISTS:
    return DISTS(pretrained_backbone=False)


def photo(size: int = 64) -> torch.Tensor:
    from skimage import data

    image = torch.from_numpy(data.astronaut()[100 : 100 + size, 180 : 180 + size]).permute(2, 0, 1)
    return (image.float() / 255).unsqueeze(0)


def test_sobel_matches_the_textbook_kernels_away_from_the_border():
    image = photo(32)
    gray = 0.299 * image[:, :1] + 0.587 * image[:, 1:2] + 0.114 * image[:, 2:]
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3)
    gx, gy = F.conv2d(gray, kx), F.conv2d(gray, kx.transpose(-1, -2))
    expected = (gx**2 + gy**2 + 1e-6).sqrt()
    edges = sobel_magnitude(image)
    assert edges.shape == (1, 3, 32, 32)
    torch.testing.assert_close(edges[:, 0:1, 1:-1, 1:-1], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(edges[:, 0], edges[:, 2])


def test_sobel_is_zero_on_flat_images_and_peaks_on_a_step():
    flat = torch.full((1, 3, 16, 16), 0.4)
    assert sobel_magnitude(flat).max() < 1e-2
    step = torch.zeros(1, 3, 16, 16)
    step[..., 8:] = 1
    edges = sobel_magnitude(step)[0, 0]
    assert edges[:, 7:9].min() > 3.9 and edges[:, :6].max() < 1e-2  # |gx| = 4 across a unit step
    with pytest.raises(ValueError, match="sobel"):
        sobel_magnitude(torch.zeros(1, 1, 8, 8))


def test_ea_dists_is_dists_of_images_plus_dists_of_edges(dists):
    gt = photo()
    sr = (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1)
    expected = dists(sr, gt) + 0.5 * dists(sobel_magnitude(sr), sobel_magnitude(gt))
    torch.testing.assert_close(EADISTS(dists, edge_weight=0.5)(sr, gt), expected)
    torch.testing.assert_close(EADISTS(dists, edge_weight=0)(sr, gt), dists(sr, gt))


def test_ea_dists_grows_with_blur_and_noise(dists):
    ea = EADISTS(dists)
    gt = photo()
    blurred = F.avg_pool2d(gt, 5, stride=1, padding=2, count_include_pad=False)
    noisy = (gt + 0.3 * torch.randn_like(gt)).clamp(0, 1)
    assert ea(gt, gt).item() < 1e-4
    assert 0 < ea(blurred, gt).item() and 0 < ea(noisy, gt).item()
    assert ea(0.5 * gt + 0.5 * blurred, gt).item() < ea(blurred, gt).item()


def test_adversarial_losses_are_the_non_saturating_formulas():
    logits = torch.linspace(-4, 4, 9).view(1, 1, 3, 3)
    torch.testing.assert_close(generator_adversarial_loss(logits), -torch.log(torch.sigmoid(logits)).mean())
    fake, real = discriminator_adversarial_loss(logits, logits)
    torch.testing.assert_close(fake, -torch.log(1 - torch.sigmoid(logits)).mean())
    torch.testing.assert_close(real, -torch.log(torch.sigmoid(logits)).mean())
    # G wants high fake logits; D wants low fake and high real logits.
    assert generator_adversarial_loss(logits + 1) < generator_adversarial_loss(logits)
    assert sum(discriminator_adversarial_loss(-logits.abs() - 1, logits.abs() + 1)) < sum(
        discriminator_adversarial_loss(logits, logits)
    )
    assert torch.isfinite(generator_adversarial_loss(torch.full((2, 1, 4, 4), -1e4)))


def test_generator_objective_is_the_weighted_sum(dists):
    loss = D3SRLoss(EADISTS(dists), lambda_mse=1.0, lambda_ea_dists=0.7, lambda_adv=0.005)
    gt = photo() * 2 - 1
    sr = (gt + 0.2 * torch.randn_like(gt)).clamp(-1, 1)
    terms = loss.reconstruction(sr, gt)
    assert set(terms) == {"mse", "ea_dists"} and all(torch.isfinite(v) for v in terms.values())
    torch.testing.assert_close(terms["mse"], F.mse_loss(sr, gt))
    torch.testing.assert_close(terms["ea_dists"], EADISTS(dists)((sr + 1) / 2, (gt + 1) / 2).mean())
    adv = torch.tensor(0.9)
    torch.testing.assert_close(loss.total(terms, adv), terms["mse"] + 0.7 * terms["ea_dists"] + 0.005 * adv)
    # A better SR lowers every reconstruction term.
    better = loss.reconstruction((0.2 * sr + 0.8 * gt), gt)
    assert better["mse"] < terms["mse"] and better["ea_dists"] < terms["ea_dists"]


def test_mse_only_needs_no_perceptual_network():
    loss = D3SRLoss(None, lambda_ea_dists=0.0, lambda_adv=0.0)
    terms = loss.reconstruction(torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8))
    assert terms["mse"].item() == 1.0 and terms["ea_dists"].item() == 0.0


@pytest.mark.parametrize("key", ["lambda_mse", "lambda_ea_dists", "lambda_adv"])
def test_negative_weights_are_refused_by_name(dists, key):
    with pytest.raises(ValueError, match=f"loss.{key}"):
        D3SRLoss(EADISTS(dists), **{key: -0.1})
