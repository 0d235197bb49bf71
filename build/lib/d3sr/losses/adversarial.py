"""Non-saturating GAN losses on patch logits (Goodfellow et al. 2014; D³SR eqs. 5–6), means over patches."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def generator_adversarial_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """L_G = −log σ(D(F(ẑ_H, t))) = softplus(−logit_fake)."""
    return F.softplus(-logits_fake.float()).mean()


def discriminator_adversarial_loss(
    logits_fake: torch.Tensor, logits_real: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fake, real) terms of L_D = −log(1 − σ(D(F(ẑ_H, t)))) − log σ(D(F(z_H, t))): softplus(fake), softplus(−real)."""
    return F.softplus(logits_fake.float()).mean(), F.softplus(-logits_real.float()).mean()
