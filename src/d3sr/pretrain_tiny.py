"""Pretraining of the demo backbone: `python -m d3sr.pretrain_tiny output=DIR [seed=0] [vae.steps=N] [unet.steps=N]`.

D³SR fine-tunes a pretrained latent diffusion model; the embedded demo does the same at toy scale with a backbone the
project pretrains here, on the CPU, from the photos shipped with scikit-image. Only `EMBEDDED_TRAIN` is trained on;
the held-out photos (`EMBEDDED_HELD_OUT`) only measure the result. The default run reproduces the shipped folder (v3,
a ×4 12-channel VAE holding a linear patch codec); its levers are options: `vae.method`, `latent_channels`, crops
from procedural dead-leaves images (`data.dead_leaves_pool`, `vae|unet.dead_leaves`), colour augmentation of photo
crops (`vae|unet.color_augment`), the low-pass term (`vae.lowpass_weight`); `device=cuda` for a quick look at a
variant (the shipped copy is made on the CPU).
  Stage 1, the VAE (architectures.DEMO_VAE), on random crops with flips and transpositions, images in [-1, 1]:
    vae.method=linear (default): a linear 4×4-patch codec (d3sr.models.linear_vae), its encoder initialised as the
    leading principal axes of training patches, fitted jointly with its decoder on
    L = ‖x̂ − x‖² + λ_low·‖B(x̂) − B(x)‖₁ (B a 1/8 box downscale: regional colour), then written into the
    AutoencoderKL (zero residual branches, paired channels through each GroupNorm); `vae.whiten` first rescales its
    latent channels to unit std (the reconstruction is unchanged).
    vae.method=trained (v2): the AutoencoderKL trained end to end as an autoencoder,
    L = ‖x̂ − x‖₁ + λ_edge·‖∇x̂ − ∇x‖₁ + λ_low·‖B(x̂) − B(x)‖₁ + λ_KL·KL(q(z|x) ‖ N(0, I)), means per element, x̂
    decoded from the posterior mode (or a sample).
    Either way, scaling_factor = 1 / std of the training latents (posterior mode), as Stable Diffusion did.
  Stage 2, the SD-style UNet (DEMO_UNET_SD) and the SDXL-style UNet (DEMO_UNET_SDXL) on the ε-prediction objective
    L = ‖ε − ε_θ(sqrt(ᾱ_t)·z + sqrt(1−ᾱ_t)·ε, t, c)‖² (Ho et al. 2020, eq. 14), t ~ U{0..999}, over the scaled
    latents z of the frozen VAE, with fixed seeded random embeddings c standing in for the empty prompt
    (SDXL-style: + pooled embedding and time ids (H, W, 0, 0, H, W) in pixels).
Writes a diffusers-style folder: vae/, unet/, unet_sdxl/ (float16 safetensors; load them in float32), scheduler/,
embeds.safetensors (`sd.prompt_embeds`, `sdxl.prompt_embeds`, `sdxl.pooled_prompt_embeds`) and manifest.json,
staged in a temporary sibling folder and renamed into place. Seeded and deterministic on the CPU for a fixed
number of threads.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import diffusers
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from tqdm import tqdm

import d3sr
from d3sr.atomic_files import check_output_folder, write_folder_atomically
from d3sr.commands import hydra_command
from d3sr.data.synthetic import augment_color, dead_leaves
from d3sr.errors import ConfigError
from d3sr.images import (
    EMBEDDED_HELD_OUT,
    EMBEDDED_TRAIN,
    LATENT_FACTOR,
    downscale,
    embedded_photo,
    from_model_range,
    to_model_range,
    upsample_lq,
)
from d3sr.models import architectures as arch
from d3sr.models.linear_vae import PATCH, LinearCodec, embed
from d3sr.models.text_embeds import random_prompt_embeds
from d3sr.options import check_choice, check_positive
from d3sr.psnr_ssim import psnr_y

log = logging.getLogger("d3sr.pretrain_tiny")

HELD_OUT_TIMESTEPS = (50, 250, 500, 750, 950)  # the t at which the UNets' held-out ε-MSE is measured
LOWPASS_FACTOR = 8  # vae.lowpass_weight compares 1/8 box downscales, the scale psnr_ssim.color_error reads colour at


# ------------------------------------------------------------------------------------------------------------------
# Training data.


class PhotoCrops:
    """Random square crops of photos and of procedural dead-leaves images, as (B, 3, crop, crop) in [0, 1].

    A crop comes, with probability `dead_leaves`, from a pool of `pool` dead-leaves images (d3sr.data.synthetic, drawn
    once from `seed`), else from a photo drawn with weight `color_weight` for colour photos and 1 for gray ones
    (most of the training photos are gray, the held-out ones are in colour); a photo crop is colour-augmented (hue
    rotation, saturation, channel order) with probability `color_augment`. The crop's position is uniform, then it is
    flipped left-right, flipped up-down and transposed with probability 1/2 each (the 8 symmetries of the square), and
    with `permute_channels` its RGB channels are put in a random order.
    """

    def __init__(self, names: tuple[str, ...] | list[str], pool: int = 0, pool_size: int = 256, seed: int = 0) -> None:
        leaked = sorted(set(names) & set(EMBEDDED_HELD_OUT))
        if leaked:
            raise ValueError(f"the held-out photos {leaked} must never be trained on")
        self.names = list(names)
        self.photos = [embedded_photo(name) for name in self.names]
        self.smallest_side = min(min(photo.shape[-2:]) for photo in self.photos)
        self.is_color = torch.tensor([bool((photo != photo[:1]).any()) for photo in self.photos])
        generator = torch.Generator().manual_seed(seed)
        self.leaves = [dead_leaves(pool_size, generator) for _ in range(pool)]
        if pool:
            self.smallest_side = min(self.smallest_side, pool_size)

    def check_crop(self, key: str, crop: int) -> int:
        """Return `crop` if it is a positive multiple of 8 that fits in every image, else raise ConfigError."""
        if crop <= 0 or crop % LATENT_FACTOR or crop > self.smallest_side:
            raise ConfigError(
                f"{key}={crop} is not valid; choose a multiple of {LATENT_FACTOR} in [8, {self.smallest_side}] "
                "(the smallest training image's side)"
            )
        return crop

    def sample(
        self,
        batch: int,
        crop: int,
        generator: torch.Generator,
        permute_channels: bool = False,
        color_weight: float = 1.0,
        dead_leaves: float = 0.0,
        color_augment: float = 0.0,
    ) -> torch.Tensor:
        """(batch, 3, crop, crop) in [0, 1], drawn with `generator`."""
        if dead_leaves > 0 and not self.leaves:
            raise ConfigError("a dead_leaves fraction > 0 needs pretraining data.dead_leaves_pool > 0")
        weights = torch.where(self.is_color, float(color_weight), 1.0)
        crops = []
        for _ in range(batch):
            # (No draw for a lever that is off: the default run's random stream is the shipped backbone's.)
            synthetic = dead_leaves > 0 and float(torch.rand((), generator=generator)) < dead_leaves
            if synthetic:
                image = self.leaves[int(torch.randint(len(self.leaves), (1,), generator=generator))]
            else:
                image = self.photos[int(torch.multinomial(weights, 1, generator=generator))]
            top = int(torch.randint(image.shape[-2] - crop + 1, (1,), generator=generator))
            left = int(torch.randint(image.shape[-1] - crop + 1, (1,), generator=generator))
            x = image[:, top : top + crop, left : left + crop]
            flip_lr, flip_ud, transpose = torch.randint(2, (3,), generator=generator).tolist()
            order = torch.randperm(3, generator=generator)
            if flip_lr:
                x = x.flip(-1)
            if flip_ud:
                x = x.flip(-2)
            if transpose:
                x = x.transpose(-1, -2)
            if permute_channels:
                x = x[order]
            if not synthetic and color_augment > 0 and float(torch.rand((), generator=generator)) < color_augment:
                x = augment_color(x, generator)
            crops.append(x)
        return torch.stack(crops).contiguous()

    def sample_for(self, cfg: DictConfig, crop: int, generator: torch.Generator) -> torch.Tensor:
        """A batch as a stage's config says (batch, permute_channels, color_weight, dead_leaves, color_augment)."""
        return self.sample(
            int(cfg.batch), crop, generator, bool(cfg.permute_channels), float(cfg.color_weight),
            float(cfg.get("dead_leaves", 0.0)), float(cfg.get("color_augment", 0.0)),
        )  # fmt: skip


def demo_architectures(latent_channels: int) -> dict[str, dict]:
    """architectures.DEMO_* with `latent_channels` latent channels (VAE latents, UNet inputs and outputs)."""
    check_positive("latent_channels", latent_channels)
    return {
        "vae": {**arch.DEMO_VAE, "latent_channels": latent_channels},
        "sd": {**arch.DEMO_UNET_SD, "in_channels": latent_channels, "out_channels": latent_channels},
        "sdxl": {**arch.DEMO_UNET_SDXL, "in_channels": latent_channels, "out_channels": latent_channels},
    }


# ------------------------------------------------------------------------------------------------------------------
# Optimisation helpers.


def warmup_cosine(steps: int, warmup_steps: int, final_fraction: float = 0.02) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up over `warmup_steps`, then a cosine decay to `final_fraction`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class RunningLosses:
    """Means of the named losses over the last `window` steps (what the logs and the manifest report)."""

    def __init__(self, window: int) -> None:
        self.window, self.history = window, {}

    def add(self, **losses: float) -> None:
        """Record one step's losses."""
        for name, value in losses.items():
            values = self.history.setdefault(name, [])
            values.append(float(value))
            del values[: -self.window]

    def means(self) -> dict[str, float]:
        """{name: mean over the window}."""
        return {name: sum(values) / len(values) for name, values in self.history.items()}

    def text(self) -> str:
        """The means as 'name value ...' for logs and progress bars."""
        return " ".join(f"{name} {value:.4g}" for name, value in self.means().items())


def round_to_float16(module: torch.nn.Module) -> torch.nn.Module:
    """Round the weights to float16 and back, in place: the model then computes exactly what the shipped files hold."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.is_floating_point():
            tensor.data = tensor.data.half().float()
    return module


def parameter_count(module: torch.nn.Module) -> int:
    """Number of parameters of `module`."""
    return sum(p.numel() for p in module.parameters())


def progress(steps: int, description: str) -> tqdm:
    """A progress bar over range(steps) that also reads well in a log file (an update every 5 s at most)."""
    return tqdm(range(steps), desc=description, unit="step", mininterval=5.0, dynamic_ncols=True)


# ------------------------------------------------------------------------------------------------------------------
# Stage 1: the VAE.


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical finite differences of (B, C, H, W)."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def lowpass_l1(x_rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """‖B(x̂) − B(x)‖₁, B a 1/LOWPASS_FACTOR box downscale: the regional colour term of both VAE stages."""
    return (F.avg_pool2d(x_rec, LOWPASS_FACTOR) - F.avg_pool2d(x, LOWPASS_FACTOR)).abs().mean()


def train_vae(
    cfg: DictConfig, data: PhotoCrops, seed: int, log_every: int, architecture: dict, device: torch.device
) -> tuple[AutoencoderKL, dict]:
    """Stage 1: the VAE (`architecture`) trained as an autoencoder; returns it (train mode) and the stage's record."""
    crop = data.check_crop("vae.crop", int(cfg.crop))
    lowpass_weight = float(cfg.get("lowpass_weight", 0.0))
    through_mode = check_choice("vae.posterior", str(cfg.get("posterior", "sample")), ("sample", "mode")) == "mode"
    torch.manual_seed(seed)
    vae = AutoencoderKL(**architecture).to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=float(cfg.lr))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(int(cfg.steps), int(cfg.warmup_steps)))
    data_rng, noise_rng = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    losses = RunningLosses(log_every)
    start = time.perf_counter()
    bar = progress(int(cfg.steps), "stage 1/2 vae")
    for step in bar:
        # Reconstruct a batch of crops through a posterior sample (or its mode, what the generator encodes).
        x = to_model_range(data.sample_for(cfg, crop, data_rng)).to(device)
        posterior = vae.encode(x).latent_dist
        z = posterior.mode() if through_mode else posterior.sample(generator=noise_rng)
        x_rec = vae.decode(z).sample
        # L1 on pixels and on image gradients, and the KL term per latent element.
        l1 = (x_rec - x).abs().mean()
        edge = sum((a - b).abs().mean() for a, b in zip(image_gradients(x_rec), image_gradients(x))) / 2
        lowpass = lowpass_l1(x_rec, x)
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = l1 + float(cfg.edge_weight) * edge + lowpass_weight * lowpass + float(cfg.kl_weight) * kl
        # Update.
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.add(l1=l1.item(), edge=edge.item(), lowpass=lowpass.item(), kl=kl.item())
        if (step + 1) % log_every == 0 or step + 1 == int(cfg.steps):
            bar.set_postfix_str(losses.text(), refresh=False)
            log.info("vae step %d/%d: %s lr %.2e", step + 1, cfg.steps, losses.text(), schedule.get_last_lr()[0])
    record = {
        **OmegaConf.to_container(cfg),
        "wall_s": round(time.perf_counter() - start, 1),
        "final_losses": losses.means(),
    }
    return vae, record


def fit_linear_vae(
    cfg: DictConfig, data: PhotoCrops, seed: int, log_every: int, architecture: dict, device: torch.device
) -> tuple[AutoencoderKL, dict]:
    """Stage 1 as a linear codec (vae.method=linear, d3sr.models.linear_vae): the encoder starts as a PCA of 4×4
    training patches, then encoder and decoder are fitted jointly on L = ‖x̂ − x‖² + λ_low·‖B(x̂) − B(x)‖₁; the codec
    is written into an AutoencoderKL of `architecture`. Returns the VAE and the stage's record."""
    crop = data.check_crop("vae.crop", int(cfg.crop))
    lowpass_weight = float(cfg.get("lowpass_weight", 0.0))
    torch.manual_seed(seed)
    codec = LinearCodec(architecture, int(cfg.features)).to(device)
    data_rng = torch.Generator().manual_seed(seed)
    batches = [to_model_range(data.sample_for(cfg, crop, data_rng)) for _ in range(int(cfg.pca_batches))]
    patches = torch.cat([F.unfold(x, PATCH, stride=PATCH).transpose(1, 2).flatten(0, 1) for x in batches])
    codec.init_from_patches(patches)
    optimizer = torch.optim.Adam(codec.parameters(), lr=float(cfg.lr))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(int(cfg.steps), int(cfg.warmup_steps)))
    losses = RunningLosses(log_every)
    start = time.perf_counter()
    bar = progress(int(cfg.steps), "stage 1/2 vae (linear codec)")
    for step in bar:
        x = to_model_range(data.sample_for(cfg, crop, data_rng)).to(device)
        x_rec = codec(x)
        mse = (x_rec - x).pow(2).mean()
        lowpass = lowpass_l1(x_rec, x)
        loss = mse + lowpass_weight * lowpass
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.add(mse=mse.item(), lowpass=lowpass.item())
        if (step + 1) % log_every == 0 or step + 1 == int(cfg.steps):
            bar.set_postfix_str(losses.text(), refresh=False)
            log.info("vae step %d/%d: %s lr %.2e", step + 1, cfg.steps, losses.text(), schedule.get_last_lr()[0])
    codec = codec.cpu()
    codec.balance(to_model_range(data.sample_for(cfg, crop, data_rng)))
    channel_std = None
    if bool(cfg.get("whiten", False)):
        batches = [to_model_range(data.sample_for(cfg, crop, data_rng)) for _ in range(int(cfg.whiten_batches))]
        channel_std = [round(v, 5) for v in codec.whiten(torch.cat(batches)).tolist()]
        log.info("Latent channel std before whitening: %s", channel_std)
    vae = embed(codec, AutoencoderKL(**architecture))
    record = {
        **OmegaConf.to_container(cfg),
        "wall_s": round(time.perf_counter() - start, 1),
        "final_losses": losses.means(),
        "latent_channel_std_before_whitening": channel_std,
    }
    return vae.to(device), record


@torch.no_grad()
def latent_std(vae: AutoencoderKL, data: PhotoCrops, crops: int, crop: int, seed: int) -> float:
    """Standard deviation of the unscaled latents (posterior mode) of `crops` fixed training crops."""
    generator, device = torch.Generator().manual_seed(seed), next(vae.parameters()).device
    z = [
        vae.encode(to_model_range(data.sample(8, crop, generator, False)).to(device)).latent_dist.mode()
        for _ in range(crops // 8)
    ]
    return float(torch.cat(z).std())


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, image: torch.Tensor) -> torch.Tensor:
    """VAE reconstruction (posterior mode) of (3, H, W) in [0, 1], H and W multiples of 8, rounded to 8 bits."""
    z = vae.encode(to_model_range(image[None])).latent_dist.mode()
    return (from_model_range(vae.decode(z).sample) * 255).round() / 255


def psnr_rgb(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) over all RGB values of two images in [0, 1]."""
    return float(10 * torch.log10(1.0 / (a.double() - b.double()).pow(2).mean()))


@torch.no_grad()
def evaluate_vae(vae: AutoencoderKL, crop: int | None = None) -> dict[str, dict[str, float]]:
    """Reconstruction PSNR (RGB, Y) of each held-out photo (cropped to multiples of 8, or its top-left crop² with
    `crop`, for quick runs) and ×4 bicubic's PSNR-Y."""
    results = {"vae_psnr_rgb": {}, "vae_psnr_y": {}, "bicubic_x4_psnr_y": {}}
    for name in EMBEDDED_HELD_OUT:
        photo = embedded_photo(name)
        height, width = (s - s % LATENT_FACTOR for s in photo.shape[-2:])
        if crop:
            height, width = min(height, crop), min(width, crop)
        gt = photo[:, :height, :width]
        rec = reconstruct(vae, gt)
        bicubic = upsample_lq(downscale(gt[None]))
        results["vae_psnr_rgb"][name] = round(psnr_rgb(rec, gt[None]), 3)
        results["vae_psnr_y"][name] = round(float(psnr_y(rec, gt[None])), 3)
        results["bicubic_x4_psnr_y"][name] = round(float(psnr_y(bicubic, gt[None])), 3)
    for values in results.values():
        values["mean"] = round(sum(values.values()) / len(values), 3)
    return results


# ------------------------------------------------------------------------------------------------------------------
# Stage 2: the UNets.


def fixed_embeds(seed: int) -> dict[str, torch.Tensor]:
    """Seeded random stand-ins for the empty-prompt embeddings: keys `sd.*` and `sdxl.*` (embeds.safetensors)."""
    embeds = {}
    for offset, kind in enumerate(("sd", "sdxl")):
        tokens, dim, pooled = arch.DEMO_TEXT_SHAPES[kind]
        for key, value in random_prompt_embeds(tokens, dim, pooled, seed + offset).items():
            embeds[f"{kind}.{key}"] = value.contiguous()
    return embeds


def train_unets(
    cfg: DictConfig,
    vae: AutoencoderKL,
    data: PhotoCrops,
    embeds: dict[str, torch.Tensor],
    seed: int,
    log_every: int,
    architectures: dict[str, dict],
    device: torch.device,
) -> tuple[UNet2DConditionModel, UNet2DConditionModel, dict]:
    """Stage 2: the SD-style and SDXL-style UNets (`architectures`) on the ε-objective over the frozen VAE latents."""
    crop = data.check_crop("unet.crop", int(cfg.crop))
    scaling_factor = float(vae.config.scaling_factor)
    scheduler = DDPMScheduler(**arch.SCHEDULER)
    num_steps = scheduler.config.num_train_timesteps
    torch.manual_seed(seed)
    unets = {kind: UNet2DConditionModel(**architectures[kind]).to(device) for kind in ("sd", "sdxl")}
    embeds = {key: value.to(device) for key, value in embeds.items()}
    optimizers = {kind: torch.optim.AdamW(unet.parameters(), lr=float(cfg.lr)) for kind, unet in unets.items()}
    factor = warmup_cosine(int(cfg.steps), int(cfg.warmup_steps))
    schedules = {kind: torch.optim.lr_scheduler.LambdaLR(opt, factor) for kind, opt in optimizers.items()}
    data_rng, noise_rng = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    losses = RunningLosses(log_every)
    start = time.perf_counter()
    bar = progress(int(cfg.steps), "stage 2/2 unets")
    for step in bar:
        # Scaled latents of a batch of crops (frozen VAE, posterior mode, as the generator encodes).
        with torch.no_grad():
            x = to_model_range(data.sample_for(cfg, crop, data_rng)).to(device)
            z = vae.encode(x).latent_dist.mode() * scaling_factor
        for kind, unet in unets.items():
            # Forward-diffuse to t ~ U{0..999} and regress ε.
            t = torch.randint(num_steps, (z.shape[0],), generator=noise_rng).to(device)
            eps = torch.randn(z.shape, generator=noise_rng).to(device)
            z_t = scheduler.add_noise(z, eps, t)
            eps_hat = predict_eps(unet, kind, z_t, t, embeds, crop)
            loss = F.mse_loss(eps_hat, eps)
            optimizers[kind].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            optimizers[kind].step()
            schedules[kind].step()
            losses.add(**{f"{kind}_eps_mse": loss.item()})
        if (step + 1) % log_every == 0 or step + 1 == int(cfg.steps):
            bar.set_postfix_str(losses.text(), refresh=False)
            log.info(
                "unet step %d/%d: %s lr %.2e", step + 1, cfg.steps, losses.text(), schedules["sd"].get_last_lr()[0]
            )
    record = {
        **OmegaConf.to_container(cfg),
        "wall_s": round(time.perf_counter() - start, 1),
        "final_losses": losses.means(),
    }
    return unets["sd"], unets["sdxl"], record


def predict_eps(
    unet: UNet2DConditionModel, kind: str, z_t: torch.Tensor, t: torch.Tensor, embeds: dict, crop: int
) -> torch.Tensor:
    """ε_θ(z_t, t, c) with the fixed embedding c of `kind` ('sd' or 'sdxl': + pooled text and time ids)."""
    batch = z_t.shape[0]
    context = embeds[f"{kind}.prompt_embeds"].expand(batch, -1, -1)
    added = None
    if kind == "sdxl":
        # (H, W, 0, 0, H, W) in pixels.
        time_ids = torch.tensor([crop, crop, 0, 0, crop, crop], dtype=z_t.dtype, device=z_t.device)
        added = {"text_embeds": embeds["sdxl.pooled_prompt_embeds"].expand(batch, -1),
                 "time_ids": time_ids.expand(batch, -1)}  # fmt: skip
    return unet(z_t, t, encoder_hidden_states=context, added_cond_kwargs=added).sample


@torch.no_grad()
def held_out_eps_mse(
    unet: UNet2DConditionModel, kind: str, vae: AutoencoderKL, embeds: dict, crop: int, seed: int
) -> float:
    """Mean ε-MSE on the centre crops of the held-out photos at HELD_OUT_TIMESTEPS (1.0 is predicting ε = 0)."""
    scheduler = DDPMScheduler(**arch.SCHEDULER)
    crops = []
    for name in EMBEDDED_HELD_OUT:
        photo = embedded_photo(name)
        top, left = (photo.shape[-2] - crop) // 2, (photo.shape[-1] - crop) // 2
        crops.append(photo[:, top : top + crop, left : left + crop])
    z = vae.encode(to_model_range(torch.stack(crops))).latent_dist.mode() * vae.config.scaling_factor
    generator = torch.Generator().manual_seed(seed)
    errors = []
    for step in HELD_OUT_TIMESTEPS:
        t = torch.full((z.shape[0],), step, dtype=torch.long)
        eps = torch.randn(z.shape, generator=generator)
        errors.append(F.mse_loss(predict_eps(unet, kind, scheduler.add_noise(z, eps, t), t, embeds, crop), eps))
    return round(float(torch.stack(errors).mean()), 5)


# ------------------------------------------------------------------------------------------------------------------
# Output.


def write_backbone(
    output: Path, models: dict[str, torch.nn.Module], embeds: dict[str, torch.Tensor], manifest: dict
) -> None:
    """Write the diffusers-style folder atomically (`write_folder_atomically`), replacing an existing `output`."""

    def write(folder: Path) -> None:
        for subfolder, model in models.items():
            copy.deepcopy(model).half().save_pretrained(folder / subfolder, safe_serialization=True)
        DDPMScheduler(**arch.SCHEDULER).save_pretrained(folder / "scheduler")
        save_file(embeds, str(folder / "embeds.safetensors"))
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for path in folder.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)  # safetensors writes owner-only files; these ship

    write_folder_atomically(output, write)


def command_line() -> str | None:
    """The command line that reproduces this run, when it was started from one (None for a Python call)."""
    if not HydraConfig.initialized():
        return None
    return " ".join(["python -m d3sr.pretrain_tiny", *HydraConfig.get().overrides.task])


def pretrain(cfg: DictConfig) -> dict:
    """Run both stages as configured, write the backbone folder to cfg.output; returns the manifest.

    The caller's torch thread count and global random state are left as they were.
    """
    output = Path(str(cfg.output)).expanduser().resolve()
    check_output_folder(output, bool(cfg.overwrite))
    for key in (
        "vae.steps",
        "vae.batch",
        "vae.features",
        "vae.pca_batches",
        "unet.steps",
        "unet.batch",
        "threads",
        "log_every",
    ):
        check_positive(key, OmegaConf.select(cfg, key))
    threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg.threads))
    try:
        with torch.random.fork_rng(devices=[]):
            return pretrain_into(cfg, output)
    finally:
        torch.set_num_threads(threads)


def pretrain_into(cfg: DictConfig, output: Path) -> dict:
    """The body of `pretrain` once the options are checked."""
    seed, log_every = int(cfg.seed), int(cfg.log_every)
    begin = time.perf_counter()
    log.info("Loading the %d training photos (held out: %s)", len(EMBEDDED_TRAIN), ", ".join(EMBEDDED_HELD_OUT))
    data = PhotoCrops(EMBEDDED_TRAIN, int(cfg.data.dead_leaves_pool), int(cfg.data.dead_leaves_size), seed + 5)
    latent_channels = arch.DEMO_LATENT_CHANNELS if cfg.latent_channels is None else int(cfg.latent_channels)
    architectures = demo_architectures(latent_channels)
    data.check_crop("vae.crop", int(cfg.vae.crop))
    data.check_crop("unet.crop", int(cfg.unet.crop))

    # Stage 1: the autoencoder, then its weights as shipped (float16) and its latent scale.
    device = torch.device(str(cfg.device))
    method = check_choice("vae.method", str(cfg.vae.method), ("linear", "trained"))
    stage = fit_linear_vae if method == "linear" else train_vae
    vae, vae_record = stage(cfg.vae, data, seed, log_every, architectures["vae"], device)
    vae = round_to_float16(vae).eval().requires_grad_(False)
    std = latent_std(vae, data, crops=64, crop=int(cfg.unet.crop), seed=seed + 2)
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    log.info("VAE latent std %.4f: scaling_factor %.5f", std, vae.config.scaling_factor)

    # Stage 2: the two UNets on the frozen VAE's latents, with fixed embeddings.
    embeds = fixed_embeds(seed)
    unet_sd, unet_sdxl, unet_record = train_unets(
        cfg.unet, vae, data, embeds, seed + 3, log_every, architectures, device
    )
    unet_sd, unet_sdxl = (round_to_float16(u.cpu()).eval().requires_grad_(False) for u in (unet_sd, unet_sdxl))
    vae = vae.cpu()

    # Held-out measurements of the shipped weights.
    evaluation_start = time.perf_counter()
    held_out = evaluate_vae(vae, cfg.get("held_out_crop"))
    crop = int(cfg.unet.crop)
    unet_record["held_out_eps_mse"] = {
        "sd": held_out_eps_mse(unet_sd, "sd", vae, embeds, crop, seed + 4),
        "sdxl": held_out_eps_mse(unet_sdxl, "sdxl", vae, embeds, crop, seed + 4),
        "timesteps": list(HELD_OUT_TIMESTEPS),
    }
    evaluation_s = round(time.perf_counter() - evaluation_start, 1)
    log.info("Held-out VAE PSNR-Y: %s", held_out["vae_psnr_y"])
    log.info("Held-out ε-MSE: %s", unet_record["held_out_eps_mse"])

    models = {"vae": vae, "unet": unet_sd, "unet_sdxl": unet_sdxl}
    manifest = {
        "command": command_line(),
        "seed": seed,
        "threads": int(cfg.threads),
        "versions": {"d3sr": d3sr.__version__, "torch": torch.__version__, "diffusers": diffusers.__version__},
        "train_photos": list(EMBEDDED_TRAIN),
        "held_out_photos": list(EMBEDDED_HELD_OUT),
        "parameters": {name: parameter_count(model) for name, model in models.items()},
        "storage": "float16 safetensors; load with torch_dtype=torch.float32",
        "scaling_factor": float(vae.config.scaling_factor),
        "stages": {"vae": vae_record, "unet": unet_record},
        "held_out": held_out,
        "wall_s": {
            "vae": vae_record["wall_s"],
            "unet": unet_record["wall_s"],
            "evaluation": evaluation_s,
            "total": round(time.perf_counter() - begin, 1),
        },
    }
    write_backbone(output, models, embeds, manifest)
    log.info("Wrote the demo backbone to %s in %.0f s", output, manifest["wall_s"]["total"])
    return manifest


main = hydra_command("pretrain_tiny", pretrain)


if __name__ == "__main__":
    main()
