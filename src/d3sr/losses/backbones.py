"""The ImageNet backbones of the perceptual losses: torchvision's VGG16 and AlexNet convolutional layers.

Weights come from a configured file or torch's hub cache ($TORCH_HOME/hub/checkpoints, where torchvision keeps them),
never from the network; `pretrained=False` gives seeded random weights (tests, the offline demo). Shared by DISTS
(VGG16) and LPIPS (VGG16 or AlexNet).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import alexnet
from torchvision.models.vgg import cfgs, make_layers

from d3sr.errors import D3SRError

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16 weights (IMAGENET1K_V1)
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet weights (IMAGENET1K_V1)
FILES = {"vgg16": VGG16_FILE, "alexnet": ALEXNET_FILE}
# How to point the configs at a file elsewhere: paths.vgg16 feeds every VGG16 node; AlexNet has its own key.
ELSEWHERE = {
    "vgg16": "set D3SR_VGG16=/path/to/vgg16.pth",
    "alexnet": "set loss.perceptual.network.backbone_weights=/path/to/alexnet.pth",
}


def default_weights_path(arch: str) -> Path:
    """Where torchvision caches the ImageNet weights of `arch` ('vgg16' | 'alexnet'): $TORCH_HOME/hub/checkpoints."""
    if arch not in FILES:
        raise ValueError(f"backbone must be one of {sorted(FILES)}, got {arch!r}")
    return Path(torch.hub.get_dir()) / "checkpoints" / FILES[arch]


def imagenet_features(
    arch: str, pretrained: bool, weights: str | None = None, seed: int = 0, owner: str = "the perceptual loss"
) -> nn.Sequential:
    """torchvision's `features` of VGG16 or AlexNet (its layer indices), not frozen here.

    pretrained: ImageNet weights from `weights` (a torchvision state dict file) or the hub cache, else one clear
    D3SRError naming the file; False: random weights drawn under `seed`. `owner` names the loss in that error.
    """
    file = Path(os.path.expanduser(weights)) if weights else default_weights_path(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        features = make_layers(cfgs["D"]) if arch == "vgg16" else alexnet(weights=None).features
    if not pretrained:
        return features
    if not file.is_file():
        raise D3SRError(
            f"ImageNet {arch.upper()} weights for {owner} not found at {file}.\n"
            f"Fix: copy torchvision's {FILES[arch]} (download it on a connected machine with "
            f"`python -c \"import torchvision; torchvision.models.{arch}(weights='IMAGENET1K_V1')\"`) to that path, "
            f"{ELSEWHERE[arch]}, or use loss.perceptual.dists.pretrained_backbone=false (random backbone: for smoke "
            "tests only)."
        )
    state = torch.load(file, map_location="cpu", weights_only=True)
    try:
        features.load_state_dict(
            {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        )
    except RuntimeError as error:
        raise D3SRError(f"{file} does not hold torchvision {arch} weights ({FILES[arch]}): {error}") from None
    return features


class FrozenPerceptualNetwork(nn.Module):
    """Base of the perceptual distances (DISTS, LPIPS): always eval, runs its `stages`, checks the image pair."""

    def train(self, mode: bool = True) -> FrozenPerceptualNetwork:
        """Always eval: the loss network never changes behaviour."""
        return super().train(False)

    def stage_outputs(self, h: torch.Tensor) -> list[torch.Tensor]:
        """The output of each of `self.stages` in turn, from the normalised input h."""
        outputs = []
        for stage in self.stages:
            h = stage(h)
            outputs.append(h)
        return outputs

    def check_pair(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """ValueError unless x and y are (B, 3, H, W) tensors of one shape."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{type(self).__name__} needs two (B, 3, H, W) tensors of one shape, got {tuple(x.shape)}, "
                f"{tuple(y.shape)}"
            )
