"""DISTS (Ding, Ma, Wang, Simoncelli 2020, "Image Quality Assessment: Unifying Structure and Texture Similarity").

A differentiable training loss: VGG16 features (with L2 pooling in place of max pooling) at six scales (the image
and relu1_2 … relu5_3); per channel, a texture term on global means and a structure term on global (co)variances,
weighted by the published α/β, which ship inside torchmetrics. Inputs (B, 3, H, W) in [0, 1]; output (B,), 0 for
identical images. The network is frozen (eval, no grad for its weights) but gradients flow to the inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from d3sr.errors import D3SRError
from d3sr.losses.backbones import FrozenPerceptualNetwork, imagenet_features

CHANNELS = (3, 64, 128, 256, 512, 512)


def dists_alpha_beta() -> dict[str, torch.Tensor]:
    """The published DISTS weights α, β (1, 1475, 1, 1), from the copy inside torchmetrics."""
    import torchmetrics.functional.image.dists as tm_dists

    path = Path(tm_dists.__file__).parent / "dists_models" / "weights.pt"
    if not path.is_file():
        raise D3SRError(f"DISTS α/β weights not found at {path}; reinstall torchmetrics>=1.8")
    return torch.load(path, map_location="cpu", weights_only=True)


class L2Pool(nn.Module):
    """L2 pooling: sqrt(Hanning(5)² ⊛ x²), stride 2 (replaces VGG's max pooling in DISTS)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = np.hanning(5)[1:-1]
        window = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
        self.register_buffer("window", (window / window.sum()).expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x.pow(2), self.window.to(x.dtype), stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DISTS(FrozenPerceptualNetwork):
    """DISTS distance. forward(x, y: (B, 3, H, W) in [0, 1]) -> (B,).

    pretrained_backbone: load ImageNet VGG16 weights from `backbone_weights` or torch's hub cache (never
    downloaded); False keeps a seeded random backbone (tests, the offline demo).
    """

    def __init__(self, pretrained_backbone: bool = True, backbone_weights: str | None = None, seed: int = 0) -> None:
        super().__init__()
        # VGG16's convolutional part, torchvision's layer indices.
        features = imagenet_features("vgg16", pretrained_backbone, backbone_weights, seed, owner="DISTS")
        # Stages end at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; max pools (4, 9, 16, 23) become L2 pools.
        bounds, pools = (0, 4, 9, 16, 23, 30), (None, 64, 128, 256, 512)
        self.stages = nn.ModuleList()
        for i in range(5):
            layers = [L2Pool(pools[i])] if pools[i] else []
            layers += [features[j] for j in range(bounds[i] + (1 if pools[i] else 0), bounds[i + 1])]
            self.stages.append(nn.Sequential(*layers))
        weights = dists_alpha_beta()
        self.register_buffer("alpha", weights["alpha"].float(), persistent=False)
        self.register_buffer("beta", weights["beta"].float(), persistent=False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The image and the five VGG stage outputs."""
        return [x, *self.stage_outputs((x - self.mean) / self.std)]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check_pair(x, y)
        c1 = c2 = 1e-6
        total = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / total, CHANNELS, dim=1)
        betas = torch.split(self.beta / total, CHANNELS, dim=1)
        texture = structure = 0.0
        for fx, fy, alpha, beta in zip(self.features(x), self.features(y), alphas, betas):
            fx, fy = fx.float(), fy.float()
            # Texture: similarity of global means; structure: of global (co)variances (DISTS eqs. 6–7).
            mx, my = fx.mean((2, 3), keepdim=True), fy.mean((2, 3), keepdim=True)
            s1 = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            vx = ((fx - mx) ** 2).mean((2, 3), keepdim=True)
            vy = ((fy - my) ** 2).mean((2, 3), keepdim=True)
            cov = (fx * fy).mean((2, 3), keepdim=True) - mx * my
            s2 = (2 * cov + c2) / (vx + vy + c2)
            texture = texture + (alpha * s1).sum(1)
            structure = structure + (beta * s2).sum(1)
        return (1 - (texture + structure)).view(-1)
