"""Edge-aware perceptual distances (D³SR eq. 8): a distance on the images plus the same distance on their Sobel
gradient-magnitude maps. With DISTS this is the paper's EA-DISTS; with LPIPS, the EA-LPIPS row of Table 4a.
"""

from __future__ import annotations

import torch
from torch import nn

from d3sr.losses.dists import DISTS
from d3sr.losses.edges import sobel_magnitude


class EdgeAware(nn.Module):
    """P(a, b) + edge_weight·P(S(a), S(b)), P = `network` (DISTS, LPIPS, …), S = Sobel magnitude.

    forward(a, b: (B, 3, H, W) in [0, 1]) -> (B,); edge_weight = 0 gives the plain distance.
    `dists` (the attribute D3SRModule validates with, as val/dists) is the network itself when it is a DISTS, else the
    `dists` given here: a DISTS that takes no part in the loss (the LPIPS configs keep one, so every perceptual row of
    Table 4a reports val/dists and one switch, loss.perceptual.dists.pretrained_backbone, governs both backbones).
    """

    def __init__(self, network: nn.Module, edge_weight: float = 1.0, dists: DISTS | None = None) -> None:
        super().__init__()
        if edge_weight < 0:
            raise ValueError(f"loss.perceptual.edge_weight must be >= 0, got {edge_weight}")
        if dists is not None and isinstance(network, DISTS):
            raise ValueError("loss.perceptual.dists is for a network other than DISTS: this network is DISTS already")
        self.network, self.edge_weight, self.validation_dists = network, float(edge_weight), dists

    @property
    def dists(self) -> DISTS | None:
        """The DISTS reported as val/dists, or None."""
        return self.network if isinstance(self.network, DISTS) else self.validation_dists

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        image_term = self.network(x, y)
        if self.edge_weight == 0:
            return image_term
        return image_term + self.edge_weight * self.network(sobel_magnitude(x), sobel_magnitude(y))


class EADISTS(EdgeAware):
    """Edge-aware DISTS (D³SR eq. 8): DISTS(a, b) + edge_weight·DISTS(S(a), S(b)). forward(a, b in [0, 1]) -> (B,)."""

    def __init__(self, dists: DISTS, edge_weight: float = 1.0) -> None:
        super().__init__(dists, edge_weight)
