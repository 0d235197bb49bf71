"""D3SRPipeline: ×4 super-resolution of images of any size with a trained generator (bundle or checkpoint).

    pipe = D3SRPipeline.from_pretrained("bundle_dir" or "last.ckpt", device="cuda", dtype=torch.bfloat16)
    sr = pipe(pil_image)              # PIL image, 4× the size
    srs = pipe([pil_a, pil_b])        # list of PIL images
    sr = pipe(tensor)                 # (3, h, w) or (B, 3, h, w) in [0, 1] -> (…, 4h, 4w) in [0, 1]

Per image: ×4 bicubic upsampling → padding to a multiple of 8 → VAE encode → one UNet call at T_L → VAE decode
(each stage tiled above `tile_size` output pixels, see tiling.py) → crop → colour fix towards the bicubic upsample.
`pipe.super_resolve(lq, progress=callback)` reports the tiles as they are done (d3sr.infer shows them as a bar).
The math is OneStepGenerator's; this module only loads weights and handles images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from d3sr.images import SCALE, from_model_range, generator_input, pil_to_tensor, tensor_to_pil
from d3sr.inference.color_fix import color_fix as apply_color_fix
from d3sr.inference.options import InferenceOptions
from d3sr.inference.tiling import StageProgress, run_generator
from d3sr.models.generator import OneStepGenerator
from d3sr.models.saved_generator import fuse_lora, load_generator, lora_layers
from d3sr.options import parse_dtype

log = logging.getLogger(__name__)

ImageInput = Image.Image | torch.Tensor | Sequence[Image.Image]


class D3SRPipeline:
    """×4 super-resolution with a OneStepGenerator; see the module docstring for inputs and outputs.

    options: tiling and colour fix (InferenceOptions; its device/precision are used by `from_pretrained`).
    """

    def __init__(
        self, generator: OneStepGenerator, options: InferenceOptions | None = None, info: dict | None = None
    ) -> None:
        self.generator = generator.eval().requires_grad_(False)
        self.options = options or InferenceOptions()
        self.info = dict(info or {})
        self._compiled = self._channels_last = False

    # --------------------------------------------------------------------------------------------------------------
    # Construction.

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        base_model: str | None = None,
        fuse: bool = True,
        options: InferenceOptions | None = None,
        **changes: Any,
    ) -> D3SRPipeline:
        """Load an inference bundle folder (d3sr.export) or a training checkpoint (.ckpt).

        device / dtype: default from `options` (device 'auto': CUDA when available; precision 'auto': bf16 on CUDA
        and on CPUs with bf16 matrix units, float32 elsewhere). base_model: a local folder or hub id replacing the
        stored SD base (pretrained bases only). fuse: merge the LoRA into the UNet weights (faster; float32 merge
        before any cast).
        changes: InferenceOptions fields, e.g. tile_size=256, color_fix='wavelet'.
        """
        options = (options or InferenceOptions()).replace(**changes)
        generator, info = load_generator(path, base_model)
        if fuse and lora_layers(generator.unet):
            fuse_lora(generator.unet)
        device = torch.device(device) if device is not None else options.torch_device()
        dtype = parse_dtype(dtype) if dtype is not None else options.torch_dtype()
        return cls(generator, options, info).to(device, dtype)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None) -> D3SRPipeline:
        """Move to `device`; cast the UNet and VAE to `dtype` (ᾱ_t and the x0 formula stay float32, and so does the
        demo's linear-codec VAE: `generator.vae_float32`)."""
        if device is not None:
            self.generator.to(device)
        if dtype is not None:
            dtype = parse_dtype(dtype)
            # nn.Module.to: diffusers' own `to` warns about keeping fp32 modules, which these models do not have.
            vae_dtype = torch.float32 if self.generator.vae_float32 else dtype
            for model, wanted in ((self.generator.unet, dtype), (self.generator.vae, vae_dtype)):
                if model.dtype != wanted:
                    torch.nn.Module.to(model, wanted)
        return self

    @property
    def device(self) -> torch.device:
        return self.generator.alphas_cumprod.device

    @property
    def dtype(self) -> torch.dtype:
        return self.generator.unet.dtype

    # --------------------------------------------------------------------------------------------------------------
    # Super-resolution.

    @torch.inference_mode()
    def super_resolve(self, lq: torch.Tensor, progress: StageProgress | None = None, **changes: Any) -> torch.Tensor:
        """(B, 3, 4h, 4w) float32 in [0, 1] on the pipeline's device from lq (B, 3, h, w) in [0, 1].

        progress(stage, done, total): called as each tiled stage (encode, denoise, decode) advances (see tiling.py).
        changes: InferenceOptions fields for this call (tile_size, tile_overlap, color_fix, ...).
        """
        options = self.options.replace(**changes)
        tiling = options.tiling(self.device)
        self._prepare(tiling["channels_last"], options.compile)
        lq = lq.to(self.device, torch.float32)
        if not torch.isfinite(lq).all():
            bad = int((~torch.isfinite(lq)).sum())
            raise ValueError(f"the input holds {bad} NaN or infinite value(s); images must be finite, in [0, 1]")
        # The generator's input (bicubic ×4, padded to ×8, [-1, 1]); the stages, tiled; crop; colour fix.
        sr = run_generator(self.generator, generator_input(lq), **tiling, progress=progress)
        sr = from_model_range(sr[..., : lq.shape[-2] * SCALE, : lq.shape[-1] * SCALE])
        return apply_color_fix(sr, lq, options.color_fix)

    def _prepare(self, channels_last: bool, compile: bool) -> None:
        """channels_last / torch.compile of the UNet and the VAE's encoder and decoder, in place, once asked."""
        models = (self.generator.unet, self.generator.vae.encoder, self.generator.vae.decoder)
        if channels_last and not self._channels_last:
            for model in models:
                model.to(memory_format=torch.channels_last)
            self._channels_last = True
        if compile and not self._compiled:
            for model in models:
                model.compile(dynamic=False)  # tiles of one size (the last batch padded) reuse one graph
            self._compiled = True

    def __call__(self, images: ImageInput, **options: Any) -> Image.Image | torch.Tensor | list[Image.Image]:
        """Super-resolve a PIL image, a list of PIL images, or a (3, h, w) / (B, 3, h, w) tensor in [0, 1].

        Returns the same kind: PIL image(s) (RGB, 8 bit) or a float32 tensor in [0, 1] on the input's device.
        options: tile_size, tile_overlap, color_fix for this call.
        """
        if isinstance(images, Image.Image):
            return self._pil(images, options)
        if isinstance(images, torch.Tensor):
            return self._tensor(images, options)
        if isinstance(images, (list, tuple)) and all(isinstance(image, Image.Image) for image in images):
            return [self._pil(image, options) for image in images]
        raise TypeError(f"expected a PIL image, a list of PIL images or a tensor, got {type(images).__name__}")

    def _pil(self, image: Image.Image, options: dict) -> Image.Image:
        sr = self.super_resolve(pil_to_tensor(image)[None], **options)[0]
        return tensor_to_pil(sr)

    def _tensor(self, images: torch.Tensor, options: dict) -> torch.Tensor:
        single = images.ndim == 3
        batch = images[None] if single else images
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a (3, h, w) or (B, 3, h, w) tensor, got {tuple(images.shape)}")
        if batch.is_floating_point() and (batch.min() < -1e-3 or batch.max() > 1 + 1e-3):
            raise ValueError(f"image tensors must be in [0, 1], got [{batch.min():.3g}, {batch.max():.3g}]")
        sr = self.super_resolve(batch.float(), **options).to(images.device)
        return sr[0] if single else sr
