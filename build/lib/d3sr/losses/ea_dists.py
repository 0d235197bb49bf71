"""Edge-aware DISTS (D³SR eq. 8): DISTS on the images plus DISTS on their Sobel gradient-magnitude maps."""

from __future__ import annotations

import torch
from torch import nn

from d3sr.losses.dists import DISTS
from d3sr.losses.edges import sobel_magnitude


class EADISTS(nn.Module):
    """Edge-aware DISTS: DISTS(a, b) + edge_weight·DISTS(S(a), S(b)), S = Sobel magnitude.

    forward(a, b: (B, 3, H, W) in [0, 1]) -> (B,).
    """

    def __init__(self, dists: DISTS, edge_weight: float = 1.0) -> None:
        super().__init__()
        self.dists, self.edge_weight = dists, float(edge_weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        image_term = self.dists(x, y)
        if self.edge_weight == 0:
            return image_term
        return image_term + self.edge_weight * self.dists(sobel_magnitude(x), sobel_magnitude(y))
