"""The generator's objective (D³SR eq. 7): MSE + λ2·EA-DISTS + λ1·L_adv (the module computes L_adv).

The Table 4a ablations swap the perceptual term (none, DISTS, LPIPS, EA-LPIPS) and keep the rest.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


class D3SRLoss(nn.Module):
    """Loss weights and the perceptual network. `reconstruction(sr, gt)` takes images in [-1, 1].

    L_gen = lambda_mse·MSE(x̂_H, x_H) + lambda_ea_dists·EA-DISTS(x̂_H, x_H) + lambda_adv·L_G  (D³SR eq. 7).
    MSE is taken in the VAE's [-1, 1] range (as OSEDiff); the perceptual term on [0, 1] images. `lambda_ea_dists` is
    λ2, the weight of the perceptual term whatever the network (EA-DISTS, DISTS, LPIPS, EA-LPIPS): the key, and the
    term's name 'ea_dists' (logged as train/g/ea_dists), keep the paper's name so one sweep key serves every loss.
    With lambda_ea_dists = 0 the perceptual network is not run (the "MSE only" ablation).
    """

    def __init__(
        self,
        perceptual: nn.Module | None,
        lambda_mse: float = 1.0,
        lambda_ea_dists: float = 1.0,
        lambda_adv: float = 0.005,
    ) -> None:
        super().__init__()
        for key, value in (
            ("lambda_mse", lambda_mse),
            ("lambda_ea_dists", lambda_ea_dists),
            ("lambda_adv", lambda_adv),
        ):
            if value < 0:
                raise ValueError(f"loss.{key} must be >= 0, got {value}")
        if isinstance(perceptual, Mapping):
            # Settings an experiment gives the perceptual network, left without a network when the selected loss has
            # none (e.g. `experiment=demo loss=mse_only`): there is no perceptual network.
            perceptual = None
        if lambda_ea_dists > 0 and perceptual is None:
            raise ValueError("loss.lambda_ea_dists > 0 needs loss.perceptual (e.g. EADISTS or EdgeAware(LPIPS))")
        self.perceptual = perceptual
        self.lambda_mse, self.lambda_ea_dists, self.lambda_adv = (
            float(lambda_mse),
            float(lambda_ea_dists),
            float(lambda_adv),
        )

    def reconstruction(self, sr: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'mse', 'ea_dists'} (scalars; 'ea_dists' is the perceptual term, any network) for SR and GT in [-1, 1]."""
        terms = {"mse": F.mse_loss(sr.float(), gt.float())}
        if self.lambda_ea_dists > 0:
            terms["ea_dists"] = self.perceptual((sr.float() + 1) / 2, (gt.float() + 1) / 2).mean()
        else:
            terms["ea_dists"] = sr.new_zeros((), dtype=torch.float32)
        return terms

    def total(self, terms: dict[str, torch.Tensor], adversarial: torch.Tensor) -> torch.Tensor:
        """λ-weighted sum of the generator's terms."""
        return (
            self.lambda_mse * terms["mse"] + self.lambda_ea_dists * terms["ea_dists"] + self.lambda_adv * adversarial
        )
