"""LPIPS (Zhang, Isola, Efros, Shechtman, Wang 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), the perceptual term of two of the paper's Table 4a ablation rows ("+ LPIPS", "+ EA-LPIPS").

A differentiable training loss: ImageNet VGG16 or AlexNet features at five ReLU stages, each unit-normalised over
channels at every location; the squared difference, weighted per channel by the published linear heads ("lin" layers,
LPIPS v0.1, which ship inside torchmetrics), summed over channels, averaged over space and summed over stages. Inputs
(B, 3, H, W) in [0, 1]; output (B,), 0 for identical images. The network is frozen (eval, no grad for its weights) but
gradients flow to the inputs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from d3sr.errors import D3SRError
from d3sr.losses.backbones import FrozenPerceptualNetwork, imagenet_features

# net -> (torchvision backbone, end of each stage in its `features`: relu1..relu5, channels of each stage).
NETS = {
    "vgg": ("vgg16", (4, 9, 16, 23, 30), (64, 128, 256, 512, 512)),  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    "alex": ("alexnet", (2, 5, 8, 10, 12), (64, 192, 384, 256, 256)),  # relu1 … relu5
}
# The reference implementation's input scaling, applied to images in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def lpips_heads(net: str) -> list[torch.Tensor]:
    """The published LPIPS linear heads of `net` ('vgg' | 'alex'): five (1, C, 1, 1) weights, from torchmetrics."""
    import torchmetrics.functional.image.lpips as tm_lpips

    path = Path(tm_lpips.__file__).parent / "lpips_models" / f"{net}.pth"
    if not path.is_file():
        raise D3SRError(f"LPIPS linear heads for net={net} not found at {path}; reinstall torchmetrics>=1.8")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return [state[f"lin{k}.model.1.weight"].float() for k in range(5)]


class LPIPS(FrozenPerceptualNetwork):
    """LPIPS distance. forward(x, y: (B, 3, H, W) in [0, 1]) -> (B,).

    net: 'vgg' (VGG16) or 'alex' (AlexNet). pretrained_backbone: load its ImageNet weights from `backbone_weights` or
    torch's hub cache (never downloaded); False keeps a seeded random backbone (tests, the offline demo).
    """

    def __init__(
        self, net: str = "vgg", pretrained_backbone: bool = True, backbone_weights: str | None = None, seed: int = 0
    ) -> None:
        super().__init__()
        if net not in NETS:
            raise ValueError(f"LPIPS net must be one of {sorted(NETS)}, got {net!r}")
        arch, ends, channels = NETS[net]
        self.net = net
        features = imagenet_features(arch, pretrained_backbone, backbone_weights, seed, owner=f"LPIPS (net={net})")
        self.stages = nn.ModuleList(
            nn.Sequential(*[features[j] for j in range(start, end)]) for start, end in zip((0, *ends[:-1]), ends)
        )
        for k, (head, width) in enumerate(zip(lpips_heads(net), channels)):
            if head.shape != (1, width, 1, 1):
                raise D3SRError(
                    f"LPIPS head lin{k} for net={net} has shape {tuple(head.shape)}, expected {width} channels"
                )
            self.register_buffer(f"head{k}", head, persistent=False)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five stage outputs (relu1 … relu5) for images in [0, 1]."""
        return self.stage_outputs((2 * x - 1 - self.shift) / self.scale)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check_pair(x, y)
        distance = x.new_zeros(x.shape[0], dtype=torch.float32)
        for k, (fx, fy) in enumerate(zip(self.features(x), self.features(y))):
            # Unit-normalise each location's feature vector (LPIPS eq. 1), then weight the squared difference per
            # channel, sum over channels and average over space.
            fx, fy = fx.float(), fy.float()
            fx = fx / (fx.pow(2).sum(1, keepdim=True) + 1e-8).sqrt()
            fy = fy / (fy.pow(2).sum(1, keepdim=True) + 1e-8).sqrt()
            distance = distance + (getattr(self, f"head{k}") * (fx - fy) ** 2).sum(1).mean((1, 2))
        return distance
