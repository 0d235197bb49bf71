"""Seconds per training iteration (one G step + one D step) of the full-size D³SR module, with random weights.

    python bench/train_step.py                          # CPU, 512², batch 1, fp32
    python bench/train_step.py --device cuda --batch 8 --precision bf16-mixed --frozen-dtype bf16   # the paper's step
    python bench/train_step.py --size 128 --precision bf16-mixed --frozen-dtype bf16 --check-checkpointing
                                                        # + gradients with vs without gradient checkpointing

Builds the full-size SD 2.1-base generator (UNet + VAE + LoRA) and the SDXL-base discriminator (down path + mid block
+ LoRA + head) directly from their configs on the meta device, materialises them with random weights (no download),
and times D3SRModule.training_step inside a real Lightning Trainer fit on random batches (the degradation is not
included: see bench/degradation.py). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import lightning as L
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.data import DataLoader, Dataset

from d3sr.images import downscale, generator_input, to_model_range
from d3sr.losses import EADISTS, D3SRLoss
from d3sr.losses.adversarial import discriminator_adversarial_loss, generator_adversarial_loss
from d3sr.losses.dists import DISTS
from d3sr.models import D3SRModule, DiffusionDiscriminator, OneStepGenerator
from d3sr.models import architectures as arch
from d3sr.models.loading import Backbone, meta

UP_PATH = ("up_blocks", "conv_norm_out", "conv_act", "conv_out")


def materialise(module: torch.nn.Module, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """Allocate a meta-device module on `device` and fill it with small random weights (timing only)."""
    module.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.ndim <= 1:
                tensor.fill_(1.0 if name.endswith("weight") else 0.0)  # norms: identity; biases: zero
            else:
                tensor.normal_(0, (1.0 / tensor[0].numel()) ** 0.5, generator=generator)
    return module.to(dtype)


def random_backbone(name: str, with_vae: bool, device: str, dtype: torch.dtype, up_path: bool = True) -> Backbone:
    """A full-size backbone of architecture `name` with random weights on `device`."""
    shapes = meta(name, with_vae=False)  # the noise schedule and embedding shapes
    with torch.device("meta"):
        unet = UNet2DConditionModel(**arch.unet_config(name))
        vae = AutoencoderKL(**arch.VAE_SD) if with_vae else None
    if not up_path:
        for part in UP_PATH:
            delattr(unet, part)
    unet = materialise(unet, device, dtype)
    vae = materialise(vae, device, dtype) if vae is not None else None
    embeds = {k: torch.randn_like(v) for k, v in shapes.embeds.items()}
    return Backbone(unet, shapes.alphas_cumprod, embeds, vae, {"benchmark": name})


def build_module(
    discriminator: str, device: str, frozen_dtype: str, checkpointing: bool, accumulate_grad_batches: int = 1
) -> D3SRModule:
    """The full-size D3SRModule (SD 2.1-base G, `discriminator` D, EA-DISTS with a random VGG16), random weights."""
    dtype = torch.bfloat16 if frozen_dtype == "bf16" else torch.float32
    generator = OneStepGenerator(random_backbone("sd21", True, device, dtype), gradient_checkpointing=checkpointing)
    d_backbone = random_backbone(discriminator, False, device, dtype, up_path=False)
    critic = DiffusionDiscriminator(d_backbone, gradient_checkpointing=checkpointing)
    loss = D3SRLoss(EADISTS(DISTS(pretrained_backbone=False)), lambda_ea_dists=1.0, lambda_adv=0.005)
    module = D3SRModule(generator, critic, loss, torch.optim.AdamW, torch.optim.AdamW, frozen_dtype=frozen_dtype,
                        accumulate_grad_batches=accumulate_grad_batches)  # fmt: skip
    module.optimizer_g = module.optimizer_d = lambda params: torch.optim.AdamW(params, lr=5e-5)
    return module.to(device)


def step_gradients(module: D3SRModule, batch: dict, autocast: torch.dtype | None, seed: int = 0) -> dict:
    """Gradients of one G step (G's trainable weights) and one D step (D's), the discriminator's t and ε seeded.

    The two losses of D3SRModule's training step, computed here by hand so that the gradients can be read.
    """
    device = batch["gt"].device
    lq, gt = generator_input(batch["lq"]), to_model_range(batch["gt"])
    context = torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()
    grads = {}
    for network in ("generator", "discriminator"):
        module.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        with context:
            sr, z_sr = module.generator(lq)
            if network == "generator":
                adversarial = generator_adversarial_loss(module.discriminator(z_sr))
                loss = module.loss.total(module.loss.reconstruction(sr, gt), adversarial)
            else:
                real = module.generator.encode(gt).float()
                fake, true = discriminator_adversarial_loss(
                    module.discriminator(z_sr.detach()), module.discriminator(real)
                )
                loss = fake + true
        loss.backward()
        trained = [(n, p) for n, p in getattr(module, network).named_parameters() if p.grad is not None]
        grads.update({f"{network}:{n}": p.grad.detach().float().clone() for n, p in trained})
        grads[f"{network}:loss"] = loss.detach().float()
    module.zero_grad(set_to_none=True)
    return grads


def set_checkpointing(module: D3SRModule, on: bool) -> None:
    for unet in (module.generator.unet, module.discriminator.unet):
        unet.enable_gradient_checkpointing() if on else unet.disable_gradient_checkpointing()


def checkpointing_gap(module: D3SRModule, batch: dict, autocast: torch.dtype | None) -> dict[str, float]:
    """Largest relative gradient difference (‖Δg‖ / ‖g‖ per tensor) between checkpointing on and off, per network."""
    set_checkpointing(module, False)
    plain = step_gradients(module, batch, autocast)
    set_checkpointing(module, True)
    recomputed = step_gradients(module, batch, autocast)
    set_checkpointing(module, False)
    if plain.keys() != recomputed.keys():
        raise RuntimeError(f"different tensors got gradients: {sorted(plain.keys() ^ recomputed.keys())[:5]}")
    gap = {"generator": 0.0, "discriminator": 0.0, "tensors": float(len(plain) - 2)}
    for name, g in plain.items():
        if name.endswith(":loss"):
            continue
        network = name.split(":")[0]
        relative = float((recomputed[name] - g).norm() / g.norm().clamp_min(1e-30))
        gap[network] = max(gap[network], relative)
    gap["loss_g"], gap["loss_d"] = float(plain["generator:loss"]), float(plain["discriminator:loss"])
    return gap


class RandomPairs(Dataset):
    def __init__(self, size: int, length: int) -> None:
        self.size, self.length = size, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(index)
        gt = torch.rand(3, self.size, self.size, generator=g)
        lq = downscale(gt[None])[0]  # the small (size/4)² input the generator upsamples ×4
        return {"gt": gt, "lq": (lq + 0.05 * torch.randn(lq.shape, generator=g)).clamp(0, 1), "index": index}


class StepTimer(L.Callback):
    def __init__(self, device: str) -> None:
        self.device, self.times = device, []

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._sync()
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._sync()
        self.times.append(time.perf_counter() - self.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    parser.add_argument("--frozen-dtype", default="float32", choices=["float32", "bf16"])
    parser.add_argument("--discriminator", default="sdxl", choices=["sdxl", "sd21", "sd15"])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--check-checkpointing", action="store_true",
                        help="also compare one step's gradients with and without gradient checkpointing")  # fmt: skip
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_float32_matmul_precision("high")
    build = time.perf_counter()
    module = build_module(args.discriminator, args.device, args.frozen_dtype, args.gradient_checkpointing)
    build = time.perf_counter() - build
    if args.check_checkpointing:
        batch = {k: v[None].to(args.device) for k, v in RandomPairs(args.size, 1)[0].items() if k != "index"}
        autocast = torch.bfloat16 if "bf16" in args.precision else None
        gap = checkpointing_gap(module, batch, autocast)
        print(f"Gradient checkpointing on vs off, {args.size}², {args.precision}, frozen {args.frozen_dtype}: "
              f"max relative gradient difference G {gap['generator']:.2e}, D {gap['discriminator']:.2e} "
              f"over {gap['tensors']:.0f} tensors (losses G {gap['loss_g']:.4f}, D {gap['loss_d']:.4f})")  # fmt: skip
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    steps = args.warmup + args.iters
    timer = StepTimer(args.device)
    trainer = L.Trainer(accelerator=args.device, devices=1, precision=args.precision, max_steps=2 * steps,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0)  # fmt: skip
    loader = DataLoader(RandomPairs(args.size, steps * args.batch), batch_size=args.batch)
    trainer.fit(module, train_dataloaders=loader)

    measured = timer.times[args.warmup :]
    seconds = sum(measured) / len(measured)
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if args.device == "cuda" else "n/a (CPU)"
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    print(f"\nFull-size D³SR training iteration (G step + D step), {args.discriminator.upper()} discriminator, "
          f"random weights, {device}, torch {torch.__version__}\n")  # fmt: skip
    print("| crop | batch | precision | frozen weights | grad ckpt | s / iteration | images / s | peak memory "
          "| trainable |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.size}² | {args.batch} | {args.precision} | {args.frozen_dtype} | {args.gradient_checkpointing} | "
          f"{seconds:.3f} | {args.batch / seconds:.2f} | {peak} | {trainable / 1e6:.1f} M |")  # fmt: skip
    print(f"\n(mean of {len(measured)} iterations after {args.warmup} warm-up; model built in {build:.0f} s)")


if __name__ == "__main__":
    main()
