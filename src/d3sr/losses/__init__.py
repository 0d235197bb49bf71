"""Losses: DISTS, LPIPS, their edge-aware forms, Sobel edges, non-saturating GAN losses, the generator's objective.

May import the ground floor (errors, options) only: never models/, data/, inference/ or evaluation/.
"""

from d3sr.losses.adversarial import discriminator_adversarial_loss, generator_adversarial_loss
from d3sr.losses.dists import DISTS
from d3sr.losses.edge_aware import EADISTS, EdgeAware
from d3sr.losses.edges import sobel_magnitude
from d3sr.losses.lpips import LPIPS
from d3sr.losses.objective import D3SRLoss

__all__ = ["DISTS", "D3SRLoss", "EADISTS", "LPIPS", "EdgeAware", "discriminator_adversarial_loss",
           "generator_adversarial_loss", "sobel_magnitude"]  # fmt: skip
