"""The demo VAE as a linear patch codec inside diffusers' AutoencoderKL (`python -m d3sr.pretrain_tiny`, the default
vae.method=linear).

At full size, SD's VAE reconstructs far better than any SR output reaches, so the generator and the discriminator
decide the quality. A VAE of the demo's size trained as an autoencoder on 2 CPU cores stays well short of that
(BENCHMARKS.md, "Demo backbone levers"): it would cap every SR result and shift colours. A linear codec does not: a
4×4-patch transform with 12 coefficients per patch (a PCA of the training patches, then fitted jointly with its
decoder) reconstructs the held-out photos 3–6 dB above bicubic ×4 and keeps their colours. This module builds that
codec *inside* an unmodified `AutoencoderKL` of the demo's architecture, so that the pipeline, the tiled VAE, the
checkpoint format and the loading code are the ones used at full size.

How the codec sits in the AutoencoderKL:
- Every residual branch is zero (each ResNet's conv2, the mid-block attention's to_out), so each block passes its
  input through, or through its 1×1 `conv_shortcut` where the width changes. What remains is a chain of linear
  convolutions. Encoder: conv_in (copies RGB), two stride-2 downsamplers (space to depth, then the 4×4-patch
  transform), conv_out; decoder: conv_in, nearest ×2 + conv, a 1×1 shortcut, nearest ×2 + conv, conv_out.
  `LinearCodec` is exactly that chain, as a small module that trains fast.
- The two non-linear steps left, GroupNorm then SiLU before each conv_out, are made exact to float precision by
  carrying each feature f in a pair of channels. In a GroupNorm group of 4 channels, (A + f, A − f, −A + g, −A − g)
  has mean 0 and standard deviation A·(1 + O(f²/A²)), A = PAIR_OFFSET, so the normalised channels are ±1 ± f/A;
  the GroupNorm's affine maps them to SILU_OFFSET ± f, where SiLU is the identity (to 1e-11), and conv_out reads
  (a − b)/2. Nothing depends on the image's own statistics: no colour shift, tiled = untiled.
- The log-variance is a constant LOGVAR: the posterior is nearly deterministic, as Stable Diffusion's.
All weights are exact or well-conditioned in float16 (the shipped storage): the pair offsets are integers.

The D³SR recipe keeps the VAE frozen, so the codec is never trained further downstream. That the demo's VAE is linear
is a documented deviation of the miniature (docs/fidelity.md); what it preserves is the regime, the VAE far above
the SR.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import nn

PATCH = 4  # pixels per latent pixel: the codec is a ×4 VAE (two downsamplers)
PAIR_OFFSET = 1000.0  # A: the constant that keeps each GroupNorm's statistics independent of the image (exact in fp16)
SILU_OFFSET = 30.0  # where the features sit on SiLU: SiLU(30 + t) = 30 + t to 1e-11 for |t| < 10
LOGVAR = -12.0  # the posterior's log-variance (std 0.0025 against latents of std ~1)


def check_embeddable(config: Mapping[str, Any], features: int) -> None:
    """Raise ValueError, naming the config key, if `config` (an AutoencoderKL config) cannot hold the codec."""
    blocks = list(config["block_out_channels"])
    latent, groups = int(config["latent_channels"]), int(config["norm_num_groups"])
    problems = []
    if len(blocks) != 3 or config.get("layers_per_block", 1) < 1:
        problems.append(f"block_out_channels={blocks}: the codec needs exactly 3 blocks (a ×{PATCH} VAE)")
    else:
        if blocks[0] < 3 * 4:
            problems.append(f"block_out_channels[0]={blocks[0]} < 12 (RGB after a 2×2 space-to-depth)")
        if min(blocks[1], blocks[2]) < 2 * latent:
            problems.append(f"block_out_channels[1:]={blocks[1:]} < 2·latent_channels={2 * latent} (paired channels)")
        if any(width % groups or (width // groups) % 4 for width in (blocks[0], blocks[2])):
            problems.append(f"norm_num_groups={groups}: each GroupNorm group must hold a multiple of 4 channels")
        else:  # every group full: a group's mean and std must not depend on any feature
            for key, count, width in (("latent_channels", latent, blocks[2]), ("features", features, blocks[0])):
                slots = width // groups // 2
                if count % slots or 2 * count > width:
                    problems.append(f"{key}={count} must be a multiple of {slots} and at most {width // 2}")
    if int(config.get("in_channels", 3)) != 3 or int(config.get("out_channels", 3)) != 3:
        problems.append("in_channels and out_channels must be 3 (RGB)")
    if problems:
        raise ValueError("this AutoencoderKL config cannot hold the linear codec: " + "; ".join(problems))


class LinearCodec(nn.Module):
    """The linear path of the demo AutoencoderKL: a 4×4-patch encoder and the decoder's chain of convolutions.

    encode: (B, 3, H, W) → (B, latent_channels, H/4, W/4); decode: the reverse, through conv_in (3×3), nearest ×2 +
    3×3, 1×1, nearest ×2 + 3×3 to `features` channels, and a 3×3 to RGB, as in diffusers' Decoder.
    """

    def __init__(self, config: Mapping[str, Any], features: int = 16) -> None:
        super().__init__()
        check_embeddable(config, features)
        latent, (width0, _, width2) = int(config["latent_channels"]), config["block_out_channels"]
        self.encoder = nn.Conv2d(3, latent, PATCH, stride=PATCH, bias=False)
        self.conv_in = nn.Conv2d(latent, width2, 3, padding=1)
        self.up0 = nn.Conv2d(width2, width2, 3, padding=1)
        self.shortcut = nn.Conv2d(width2, width0, 1) if width2 != width0 else None
        self.up1 = nn.Conv2d(width0, features, 3, padding=1, bias=False)  # no bias: a pair's offsets stay integers
        self.conv_out = nn.Conv2d(features, 3, 3, padding=1)

    def init_from_patches(self, patches: torch.Tensor) -> None:
        """Set the encoder to the leading principal directions of `patches` (N, 3·4·4) (uncentred, as F.unfold)."""
        _, _, basis = torch.linalg.svd(patches.double(), full_matrices=False)
        with torch.no_grad():
            self.encoder.weight.copy_(basis[: self.encoder.out_channels].reshape(self.encoder.weight.shape))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's features before its last GroupNorm (what the embedding carries in channel pairs)."""
        h = self.up0(F.interpolate(self.conv_in(z), scale_factor=2.0, mode="nearest"))
        if self.shortcut is not None:
            h = self.shortcut(h)
        return self.up1(F.interpolate(h, scale_factor=2.0, mode="nearest"))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.features(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        """Rescale each latent channel to unit standard deviation on images `x` (the reconstruction is unchanged);
        returns the standard deviations it divided by (pretrain_tiny's `vae.whiten`).

        A PCA codec's channels differ ~9× in scale (the leading one carries the block means); Stable Diffusion's latent
        channels have similar scales. Measured on the demo (BENCHMARKS.md): the same ε-pretraining and fine-tuning on
        whitened latents still sharpen through the leading channel, so the shipped backbone does not whiten."""
        std = self.encode(x).std((0, 2, 3)).clamp_min(1e-6)
        self.encoder.weight.div_(std[:, None, None, None])
        self.conv_in.weight.mul_(std[None, :, None, None])
        return std

    @torch.no_grad()
    def balance(self, x: torch.Tensor) -> None:
        """Rescale the decoder's features to unit RMS on images `x` (the output is unchanged): they must stay well
        inside SiLU's linear range once embedded."""
        rms = self.features(self.encode(x)).pow(2).mean((0, 2, 3)).sqrt()
        scale = 1.0 / rms.clamp_min(1e-6)
        self.up1.weight.mul_(scale[:, None, None, None])
        self.conv_out.weight.div_(scale[None, :, None, None])


def needs_float32(vae: nn.Module) -> bool:
    """Whether `vae` holds the codec, whose channel pairs need float32: in bfloat16, A + f keeps 3 significant digits
    of A and nothing of f (the pipeline and the generator then keep the VAE in float32)."""
    norm = getattr(getattr(vae, "encoder", None), "conv_norm_out", None)
    if not isinstance(norm, nn.GroupNorm) or norm.weight is None or norm.weight.is_meta:
        return False
    return bool((norm.weight.detach().abs() >= PAIR_OFFSET).any())


def _pair(index: int, per_group: int) -> tuple[int, int, float]:
    """Channels (a, b) carrying feature `index` as (s·A + f, s·A − f), and the sign s (alternating within a group so
    that each group of `per_group` channels has mean 0)."""
    group, slot = divmod(index, per_group // 2)
    a = group * per_group + 2 * slot
    return a, a + 1, 1.0 if slot % 2 == 0 else -1.0


def _paired_norm(norm: nn.GroupNorm, a: int, b: int, sign: float) -> None:
    """GroupNorm affine for a pair: (±1 ± f/A) → SILU_OFFSET ± f."""
    for channel in (a, b):
        norm.weight[channel] = PAIR_OFFSET
        norm.bias[channel] = SILU_OFFSET - PAIR_OFFSET * sign


@torch.no_grad()
def embed(codec: LinearCodec, vae: AutoencoderKL) -> AutoencoderKL:
    """Write `codec` into `vae` (the architecture `codec` was built for), in place; returns `vae`.

    After this, vae.encode(x).latent_dist.mode() equals codec.encode(x) and vae.decode(z) equals codec.decode(z) to
    float precision (tests/models/test_linear_vae.py).
    """
    config = vae.config
    latent, features = int(config.latent_channels), codec.up1.out_channels
    check_embeddable(config, features)
    groups = int(config.norm_num_groups)
    encoder, decoder = vae.encoder, vae.decoder
    for parameter in vae.parameters():
        parameter.zero_()
    for module in vae.modules():
        if isinstance(module, nn.GroupNorm):
            module.weight.fill_(1.0)  # off the path (their branch is zero) but kept a usual GroupNorm

    # Encoder: conv_in copies RGB; the first downsampler is a 2×2 space to depth (channel c·4 + 2·dy + dx).
    for c in range(3):
        encoder.conv_in.weight[c, c, 1, 1] = 1.0
        for dy in range(2):
            for dx in range(2):
                encoder.down_blocks[0].downsamplers[0].conv.weight[4 * c + 2 * dy + dx, c, dy, dx] = 1.0
    # The second applies the patch transform to each 2×2 block of 2×2 blocks, into paired channels.
    weight = codec.encoder.weight  # (latent, 3, 4, 4)
    transform = torch.zeros(latent, 12, 2, 2)
    for c in range(3):
        for dy in range(2):
            for dx in range(2):
                transform[:, 4 * c + 2 * dy + dx] = weight[:, c, dy::2, dx::2]
    down = encoder.down_blocks[1].downsamplers[0].conv
    per_group = int(config.block_out_channels[-1]) // groups
    for k in range(latent):
        a, b, sign = _pair(k, per_group)
        down.weight[a, :12, :2, :2], down.bias[a] = transform[k], sign * PAIR_OFFSET
        down.weight[b, :12, :2, :2], down.bias[b] = -transform[k], sign * PAIR_OFFSET
        _paired_norm(encoder.conv_norm_out, a, b, sign)
        encoder.conv_out.weight[k, a, 1, 1], encoder.conv_out.weight[k, b, 1, 1] = 0.5, -0.5  # the mean
        encoder.conv_out.bias[latent + k] = LOGVAR
    shortcut = encoder.down_blocks[2].resnets[0].conv_shortcut
    if shortcut is not None:
        shortcut.weight[: 2 * latent, : 2 * latent, 0, 0] = torch.eye(2 * latent)
    vae.quant_conv.weight[:, :, 0, 0] = torch.eye(2 * latent)

    # Decoder.
    vae.post_quant_conv.weight[:, :, 0, 0] = torch.eye(latent)
    decoder.conv_in.load_state_dict(codec.conv_in.state_dict())
    decoder.up_blocks[0].upsamplers[0].conv.load_state_dict(codec.up0.state_dict())
    if codec.shortcut is not None:
        decoder.up_blocks[1].resnets[0].conv_shortcut.load_state_dict(codec.shortcut.state_dict())
    up = decoder.up_blocks[1].upsamplers[0].conv
    per_group = int(config.block_out_channels[0]) // groups
    decoder.conv_out.bias.copy_(codec.conv_out.bias)
    for j in range(features):
        a, b, sign = _pair(j, per_group)
        up.weight[a], up.bias[a] = codec.up1.weight[j], sign * PAIR_OFFSET
        up.weight[b], up.bias[b] = -codec.up1.weight[j], sign * PAIR_OFFSET
        _paired_norm(decoder.conv_norm_out, a, b, sign)
        decoder.conv_out.weight[:, a], decoder.conv_out.weight[:, b] = (
            codec.conv_out.weight[:, j] / 2,
            -codec.conv_out.weight[:, j] / 2,
        )
    return vae
