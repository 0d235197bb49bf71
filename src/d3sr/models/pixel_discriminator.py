"""The pixel-space CNN discriminator of the paper's ablation (Table 4b, "CNN, pixel space").

The paper names the baseline only. Our choice: the PatchGAN of pix2pix (Isola et al. 2017, the "n_layers" 70×70
discriminator) with spectral normalisation in place of its BatchNorm (Miyato et al. 2018), as Real-ESRGAN's
discriminator does. Why this one: it is the most used pixel-space discriminator in image restoration GANs; it gives
one logit per patch like the diffusion discriminator, so the same non-saturating loss and logging apply; and spectral
norm keeps it stable at the small batches of SR training, where BatchNorm would mix the statistics of the separate
real and fake passes. It sees decoded images (no forward diffusion) and is randomly initialised.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PixelDiscriminator(nn.Module):
    """forward(image (B, 3, H, W) in [-1, 1]) -> patch logits (B, 1, H/2^n − 2, W/2^n − 2), n = num_layers.

    Layers: 4×4 conv stride 2 (C), then num_layers − 1 more stride-2 convs doubling the width up to 8·C, one stride-1
    conv, and a 4×4 conv to one logit; LeakyReLU(0.2) between them; spectral norm on every conv. With num_layers=3
    and C=64 (the defaults) the receptive field is 70×70 pixels and a 512² crop gives 62×62 logits.
    """

    space = "pixel"  # the module feeds it decoded images, not latents

    def __init__(self, base_channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        if base_channels < 1 or num_layers < 1:
            raise ValueError(
                f"model.discriminator needs base_channels >= 1 and num_layers >= 1, got {base_channels}, {num_layers}"
            )
        widths = [3] + [base_channels * min(2**i, 8) for i in range(num_layers + 1)]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            stride = 2 if i < num_layers else 1
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, stride, 1)), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(spectral_norm(nn.Conv2d(widths[-1], 1, 4, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Patch logits of images in [-1, 1]."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"the pixel discriminator takes (B, 3, H, W) images, got {tuple(image.shape)}")
        return self.net(image.float())
