"""The generator's objective (D³SR eq. 7): MSE + λ2·EA-DISTS + λ1·L_adv (the module computes L_adv).

The Table 4a ablations swap the perceptual term (none, DISTS, LPIPS, EA-LPIPS) and keep the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from d3sr.options import check_choice

MSE_RANGES = ("signed", "unit")


class D3SRLoss(nn.Module):
    """Loss weights and the perceptual network. `reconstruction(sr, gt)` takes images in [-1, 1].

    L_gen = lambda_mse·MSE(x̂_H, x_H) + lambda_ea_dists·EA-DISTS(x̂_H, x_H) + lambda_adv·L_G  (D³SR eq. 7).
    MSE is taken in the VAE's [-1, 1] range by default (as OSEDiff); the perceptual term on [0, 1] images.
    `lambda_ea_dists` is λ2, the weight of the perceptual term whatever the network (EA-DISTS, DISTS, LPIPS,
    EA-LPIPS): the key, and the term's name 'ea_dists' (logged as train/g/ea_dists), keep the paper's name so one
    sweep key serves every loss.
    With lambda_ea_dists = 0 the perceptual network is not run (the "MSE only" ablation).
    mse_range: 'signed' (MSE on [-1, 1] images, OSEDiff's and our default) or 'unit' (on [0, 1]: 4× smaller, which
    shifts the balance towards λ2's term). perceptual_fp32: run the perceptual network in float32 even under bf16
    autocast (default; `false` lets autocast run it in bf16).
    """

    def __init__(
        self,
        perceptual: nn.Module | None,
        lambda_mse: float = 1.0,
        lambda_ea_dists: float = 1.0,
        lambda_adv: float = 0.005,
        mse_range: str = "signed",
        perceptual_fp32: bool = True,
    ) -> None:
        super().__init__()
        self.mse_range = check_choice("loss.mse_range", mse_range, MSE_RANGES)
        self.perceptual_fp32 = bool(perceptual_fp32)
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
        scale = 1.0 if self.mse_range == "signed" else 0.25  # ((a+1)/2 − (b+1)/2)² = (a−b)²/4
        terms = {"mse": scale * F.mse_loss(sr.float(), gt.float())}
        if self.lambda_ea_dists > 0:
            # Autocast off: the perceptual network runs in float32 unless perceptual_fp32 is false.
            precision = torch.autocast(sr.device.type, enabled=False) if self.perceptual_fp32 else nullcontext()
            with precision:
                terms["ea_dists"] = self.perceptual((sr.float() + 1) / 2, (gt.float() + 1) / 2).mean()
        else:
            terms["ea_dists"] = sr.new_zeros((), dtype=torch.float32)
        return terms

    def total(self, terms: dict[str, torch.Tensor], adversarial: torch.Tensor) -> torch.Tensor:
        """λ-weighted sum of the generator's terms."""
        return (
            self.lambda_mse * terms["mse"] + self.lambda_ea_dists * terms["ea_dists"] + self.lambda_adv * adversarial
        )
