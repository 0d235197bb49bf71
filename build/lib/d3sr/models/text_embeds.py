"""Fixed text embeddings (D³SR replaces prompts with one fixed embedding).

They are computed once with the base model's text encoder(s) on the empty prompt, cached as safetensors, and the
text encoders are freed: neither training nor inference runs a text encoder afterwards.
SD 1.5 / 2.1: `prompt_embeds` (1, 77, 768 | 1024), the encoder's last hidden state (as diffusers' pipelines).
SDXL: `prompt_embeds` (1, 77, 2048) = penultimate hidden states of both CLIP encoders concatenated, and
`pooled_prompt_embeds` (1, 1280) from the second encoder's projection.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)


def _cache_file(cache_dir: str | Path, model: str, kind: str) -> Path:
    digest = hashlib.sha1(f"{kind}:{Path(model).expanduser()}".encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{kind}-{Path(model).name or 'model'}-{digest}.safetensors"


def _encode_sd(model: str, local_files_only: bool, revision: str | None) -> dict[str, torch.Tensor]:
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(
        model, subfolder="tokenizer", local_files_only=local_files_only, revision=revision
    )
    encoder = CLIPTextModel.from_pretrained(
        model, subfolder="text_encoder", local_files_only=local_files_only, revision=revision
    )
    ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        prompt_embeds = encoder(ids)[0]
    return {"prompt_embeds": prompt_embeds.float().contiguous()}


def _encode_sdxl(model: str, local_files_only: bool, revision: str | None) -> dict[str, torch.Tensor]:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    kwargs = {"local_files_only": local_files_only, "revision": revision}
    encoders = [
        (
            CLIPTokenizer.from_pretrained(model, subfolder="tokenizer", **kwargs),
            CLIPTextModel.from_pretrained(model, subfolder="text_encoder", **kwargs),
        ),
        (
            CLIPTokenizer.from_pretrained(model, subfolder="tokenizer_2", **kwargs),
            CLIPTextModelWithProjection.from_pretrained(model, subfolder="text_encoder_2", **kwargs),
        ),
    ]
    # As StableDiffusionXLPipeline.encode_prompt: penultimate hidden states, pooled output of the last encoder.
    hidden, pooled = [], None
    with torch.no_grad():
        for tokenizer, encoder in encoders:
            ids = tokenizer(
                [""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
            ).input_ids
            out = encoder(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]
    return {
        "prompt_embeds": torch.cat(hidden, dim=-1).float().contiguous(),
        "pooled_prompt_embeds": pooled.float().contiguous(),
    }


def empty_prompt_embeds(
    model: str,
    kind: str,
    cache_dir: str | Path | None = None,
    local_files_only: bool = True,
    revision: str | None = None,
) -> dict[str, torch.Tensor]:
    """Empty-prompt embeddings of `model` ('sd' or 'sdxl' text encoders), read from or written to `cache_dir`."""
    if kind not in ("sd", "sdxl"):
        raise ValueError(f"kind={kind!r} is not valid; choose 'sd' or 'sdxl'")
    cache = _cache_file(cache_dir, model, kind) if cache_dir else None
    if cache is not None and cache.is_file():
        return load_file(str(cache))
    log.info("Encoding the empty prompt with the %s text encoder(s) of %s", kind, model)
    embeds = (_encode_sdxl if kind == "sdxl" else _encode_sd)(model, local_files_only, revision)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        save_file(embeds, str(tmp))
        tmp.replace(cache)
        log.info("Cached fixed text embeddings at %s", cache)
    return embeds


def random_prompt_embeds(tokens: int, dim: int, pooled_dim: int | None, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random stand-ins for the fixed embeddings of tiny presets (unit-variance like CLIP's outputs)."""
    g = torch.Generator().manual_seed(seed)
    embeds = {"prompt_embeds": torch.randn(1, tokens, dim, generator=g)}
    if pooled_dim is not None:
        embeds["pooled_prompt_embeds"] = torch.randn(1, pooled_dim, generator=g)
    return embeds
