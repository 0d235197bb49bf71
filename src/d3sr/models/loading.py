"""Construction of the base networks: pretrained diffusers weights, tiny seeded presets, or weight-less meta models.

Every function returns a `Backbone` holding the same diffusers classes (UNet2DConditionModel, AutoencoderKL), the
noise schedule's ᾱ_t and the fixed text embeddings, so the generator and discriminator never know which one they got.
Hydra configs call these functions through `_target_` (see conf/model/generator/*.yaml).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from d3sr.errors import D3SRError
from d3sr.models import architectures as arch
from d3sr.models.text_embeds import empty_prompt_embeds, random_prompt_embeds
from d3sr.options import check_choice, parse_dtype

log = logging.getLogger(__name__)


@dataclass
class Backbone:
    """A base diffusion model's parts: UNet, optional VAE, ᾱ_t (1000,), fixed embeddings ('prompt_embeds', ...).

    source: the Hydra node (`_target_` + arguments) that builds this backbone again; checkpoints and bundles store
    it so inference rebuilds exactly the base that was trained on (see saved_generator.py). vae_factor: pixels per
    latent pixel of the VAE whose latents the UNet works on (8 for SD's and SDXL's VAEs, 4 for the demo backbone's),
    known even when the VAE itself is not loaded (a discriminator's SDXL size embedding is in pixels).
    """

    unet: UNet2DConditionModel
    alphas_cumprod: torch.Tensor
    embeds: dict[str, torch.Tensor]
    vae: AutoencoderKL | None = None
    source: dict = field(default_factory=dict)
    vae_factor: int = 8


def source_node(function, **arguments) -> dict:
    """The Hydra node that calls `function(**arguments)`."""
    return {"_target_": f"{function.__module__}.{function.__qualname__}", **arguments}


def _alphas_cumprod(scheduler: DDPMScheduler) -> torch.Tensor:
    return scheduler.alphas_cumprod.detach().clone().float()


def looks_like_path(model: str) -> bool:
    """True for a value that names a folder rather than a hub id ('owner/name'): /abs, ./rel, ~/x, a/b/c, C:\\x."""
    text = str(model)
    return text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1 or Path(text).expanduser().exists()


def _missing_weights_message(what: str, model: str, subfolders: list[str], env_var: str, error: Exception) -> str:
    is_dir = Path(model).expanduser().is_dir()
    if looks_like_path(model) and not is_dir:
        return (
            f"Could not load the {what} weights: the local folder {model} does not exist.\n"
            f"Fix: point {env_var} (or the matching paths.* config key) at a diffusers folder with the subfolders "
            f"{', '.join(subfolders)}, or at a hub id such as stabilityai/stable-diffusion-2-1-base."
        )
    where = f"the local folder {model}" if is_dir else f"the hub id {model!r} (Hugging Face cache: {_hf_cache()})"
    return (
        f"Could not load the {what} weights from {where}: {type(error).__name__}: {str(error).splitlines()[0]}\n"
        f"Expected a diffusers folder with the subfolders {', '.join(subfolders)}.\n"
        f"Fix: on a machine with internet run `hf download {model if not is_dir else '<hub id>'}` and copy the "
        f"cache, or point to a local folder with `{env_var}=/path/to/folder` (or the matching paths.* config key)."
    )


def _hf_cache() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub always ships with diffusers
        return os.path.expanduser("~/.cache/huggingface/hub")


def pretrained(
    model: str,
    kind: str = "sd",
    with_vae: bool = True,
    embeds_cache: str | None = None,
    local_files_only: bool = False,
    revision: str | None = None,
    dtype: str = "float32",
    env_var: str = "D3SR_SD21",
    embeds: dict[str, torch.Tensor] | None = None,
) -> Backbone:
    """Load a diffusers Stable Diffusion folder or hub id: UNet, scheduler, (VAE), and the fixed embeddings.

    kind: 'sd' (SD 1.5 / 2.1, one text encoder) or 'sdxl' (two encoders, pooled embedding, time ids).
    embeds: the fixed embeddings when already known (checkpoints and bundles carry them): no text encoder is loaded.
    Raises D3SRError with instructions when the weights are not found.
    """
    check_choice("kind", kind, ("sd", "sdxl"))
    torch_dtype = parse_dtype(dtype)
    local_files_only = local_files_only or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    subfolders = ["unet", "scheduler"] + (["vae"] if with_vae else [])
    if embeds is None:
        subfolders += ["text_encoder", "tokenizer"] + (["text_encoder_2", "tokenizer_2"] if kind == "sdxl" else [])
    what = "SDXL" if kind == "sdxl" else "Stable Diffusion"
    kwargs = {"local_files_only": local_files_only, "revision": revision}
    try:
        scheduler = DDPMScheduler.from_pretrained(model, subfolder="scheduler", **kwargs)
        if embeds is None:
            embeds = empty_prompt_embeds(model, kind, embeds_cache, local_files_only, revision)
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=torch_dtype, **kwargs)
        vae = (
            AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=torch_dtype, **kwargs)
            if with_vae
            else None
        )
    except (OSError, ValueError) as error:
        raise D3SRError(_missing_weights_message(what, model, subfolders, env_var, error)) from error
    if scheduler.config.get("prediction_type", "epsilon") != "epsilon":
        raise D3SRError(
            f"{model} predicts {scheduler.config.prediction_type!r}; D³SR's generator uses an ε-prediction base "
            "(SD 2.1-base, SD 1.5, SDXL-base), not a v-prediction model such as SD 2.1-768."
        )
    source = source_node(pretrained, model=str(model), kind=kind, revision=revision, env_var=env_var)
    return Backbone(unet, _alphas_cumprod(scheduler), embeds, vae, source)


def tiny(kind: str = "sd", with_vae: bool = True, seed: int = 0, latent_channels: int | str | None = None) -> Backbone:
    """Seeded random tiny model of the same classes: 'sd' (SD 2.1-like) or 'sdxl' (with pooled text + time ids).

    latent_channels: the UNet's input/output channels when not the tiny VAE's 4, for another VAE's latents (then
    without a VAE); 'demo': those of the shipped demo backbone (demo_latent_channels), whose UNets' shape this is.
    """
    check_choice("kind", kind, ("sd", "sdxl"))
    config = dict(arch.TINY_UNET_SDXL if kind == "sdxl" else arch.TINY_UNET_SD)
    if latent_channels == "demo":
        latent_channels = demo_latent_channels()
    if latent_channels is not None:
        if with_vae:
            raise ValueError("tiny(latent_channels=...) builds a UNet for another VAE's latents: use with_vae=False")
        config.update(in_channels=int(latent_channels), out_channels=int(latent_channels))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**config)
        vae = AutoencoderKL(**arch.TINY_VAE) if with_vae else None
    tokens, dim, pooled = arch.TINY_TEXT_SHAPES[kind]
    embeds = random_prompt_embeds(tokens, dim, pooled, seed)
    alphas_cumprod = _alphas_cumprod(DDPMScheduler(**arch.SCHEDULER))
    arguments = {"kind": kind, "seed": seed}
    if latent_channels is not None:
        arguments |= {"with_vae": False, "latent_channels": latent_channels}
    return Backbone(unet, alphas_cumprod, embeds, vae, source_node(tiny, **arguments))


def random_weights(name: str, seed: int = 0) -> Backbone:
    """Full-size UNet architecture `name` ('sd21', 'sd15', 'sdxl') with seeded random weights and embeddings, no VAE.

    The randomly initialised latent discriminator of the paper's ablation (Table 4b, "Diffusion-GAN"): the shape of a
    published UNet without its weights, so nothing is downloaded.
    """
    config = arch.unet_config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**config)
    tokens, dim, pooled = arch.TEXT_SHAPES[name]
    embeds = random_prompt_embeds(tokens, dim, pooled, seed)
    alphas_cumprod = _alphas_cumprod(DDPMScheduler(**arch.SCHEDULER))
    return Backbone(unet, alphas_cumprod, embeds, None, source_node(random_weights, name=name, seed=seed))


def meta(name: str, with_vae: bool = True) -> Backbone:
    """Full-size architecture `name` ('sd21', 'sd15', 'sdxl') on the meta device: shapes only, no weights."""
    config = arch.unet_config(name)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
        vae = AutoencoderKL(**arch.VAE_SD) if with_vae else None
    tokens, dim, pooled = arch.TEXT_SHAPES[name]
    embeds = {"prompt_embeds": torch.zeros(1, tokens, dim)}
    if pooled is not None:
        embeds["pooled_prompt_embeds"] = torch.zeros(1, pooled)
    return Backbone(unet, _alphas_cumprod(DDPMScheduler(**arch.SCHEDULER)), embeds, vae, source_node(meta, name=name))


def tiny_backbone_folder() -> Path:
    """The demo backbone shipped inside the package (d3sr/assets/tiny_backbone), made by `d3sr.pretrain_tiny`."""
    return Path(__file__).resolve().parents[1] / "assets" / "tiny_backbone"


def demo_latent_channels(folder: str | Path | None = None) -> int:
    """The latent channels of the demo backbone (the shipped one, or `folder`): its VAE's, read from its config."""
    root = Path(folder).expanduser() if folder is not None else tiny_backbone_folder()
    config = root / "vae" / "config.json"
    try:
        return int(json.loads(config.read_text())["latent_channels"])
    except (OSError, KeyError, ValueError) as error:
        raise D3SRError(f"cannot read the demo backbone's latent channels from {config}: {error}") from error


def pretrained_tiny(kind: str = "sd", with_vae: bool = True, folder: str | None = None) -> Backbone:
    """The demo backbone pretrained by the project (architectures.DEMO_*), loaded in float32.

    kind: 'sd' (the SD-style UNet `unet/`, for the generator) or 'sdxl' (the SDXL-style UNet `unet_sdxl/` with pooled
    text and time ids, for the discriminator). folder: a folder written by `python -m d3sr.pretrain_tiny`; None for
    the copy shipped inside the package. Raises D3SRError naming the folder and the command that makes it.
    """
    from safetensors.torch import load_file

    check_choice("kind", kind, ("sd", "sdxl"))
    root = Path(folder).expanduser() if folder is not None else tiny_backbone_folder()
    subfolders = ["vae", "unet", "unet_sdxl", "scheduler"]
    missing = [name for name in [*subfolders, "embeds.safetensors"] if not (root / name).exists()]
    if missing:
        raise D3SRError(
            f"The demo backbone folder {root} is missing or incomplete (no {', '.join(missing)}).\n"
            f"Fix: make it with `python -m d3sr.pretrain_tiny output={root}` (about an hour on 2 CPU cores)."
        )
    # The weights are stored in float16 to keep the package small; the demo computes in float32.
    unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet_sdxl" if kind == "sdxl" else "unet",
                                                torch_dtype=torch.float32)  # fmt: skip
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=torch.float32) if with_vae else None
    scheduler = DDPMScheduler.from_pretrained(root, subfolder="scheduler")
    prefix = f"{kind}."
    embeds = {k[len(prefix) :]: v.float() for k, v in load_file(str(root / "embeds.safetensors")).items()
              if k.startswith(prefix)}  # fmt: skip
    source = source_node(pretrained_tiny, kind=kind, with_vae=with_vae, folder=folder)
    factor = arch.vae_factor(AutoencoderKL.load_config(root, subfolder="vae"))
    return Backbone(unet, _alphas_cumprod(scheduler), embeds, vae, source, factor)
