"""Losses: DISTS, edge-aware DISTS, Sobel edges, non-saturating adversarial losses, the generator objective."""

from d3sr.losses.adversarial import discriminator_adversarial_loss, generator_adversarial_loss
from d3sr.losses.dists import DISTS
from d3sr.losses.edges import sobel_magnitude
from d3sr.losses.perceptual import EADISTS, D3SRLoss

__all__ = ["DISTS", "D3SRLoss", "EADISTS", "discriminator_adversarial_loss", "generator_adversarial_loss",
           "sobel_magnitude"]  # fmt: skip
