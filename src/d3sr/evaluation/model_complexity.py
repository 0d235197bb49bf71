"""Model complexity as in the paper's Table 3: steps, parameters and MACs of the generator at a 512×512 output.

Everything runs on the meta device (full-size architectures, no weights, no memory, about a second): parameters are
counted from the modules, MACs with `torch.utils.flop_counter.FlopCounterMode` (MACs = FLOPs / 2) on one forward
pass of the whole inference network: VAE encoder → UNet (with its unmerged LoRA, as at inference) → VAE decoder.
peft's LoRA layers and diffusers' attention run on meta tensors; attention is counted through its matrix products.

Two MAC totals are reported. `all` counts every matrix product, including attention's QKᵀ and attention·V
(batched matmuls). `conv+linear` counts only convolution and linear layers — what layer-hook counters (thop,
ptflops-style) report, and, at 512², exactly the paper's 2,132 G.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from d3sr.errors import ConfigError
from d3sr.evaluation import paper
from d3sr.models.lora import LORA_TARGETS
from d3sr.options import check_positive

# The defaults below are the paper's settings as configured in conf/model (tests/evaluation keep them equal):
# LoRA r=16, α=16 on LORA_TARGETS (the discriminator: inside its down/mid blocks), T_L=399, a 512-wide head.


@dataclass
class ParamCounts:
    """Parameter counts of one network, split by part (values are numbers of scalars)."""

    total: int
    trainable: int
    lora: int
    parts: dict[str, int] = field(default_factory=dict)  # frozen base weights of each part (LoRA excluded)


def count_params(module: nn.Module, parts: dict[str, nn.Module] | None = None) -> ParamCounts:
    """Total, trainable and LoRA parameters of `module`, and the non-LoRA parameters of each of `parts`."""
    params = dict(module.named_parameters())
    lora = sum(p.numel() for n, p in params.items() if "lora_" in n)
    split = {
        name: sum(p.numel() for n, p in part.named_parameters() if "lora_" not in n)
        for name, part in (parts or {}).items()
    }
    return ParamCounts(
        total=sum(p.numel() for p in params.values()),
        trainable=sum(p.numel() for p in params.values() if p.requires_grad),
        lora=lora,
        parts=split,
    )


def meta_generator(
    arch: str = "sd21",
    lora_rank: int = 16,
    lora_alpha: float = 16,
    lora_targets=LORA_TARGETS,
    timestep: int = 399,
):
    """The full-size OneStepGenerator on the meta device (no weights)."""
    from d3sr.models.generator import OneStepGenerator
    from d3sr.models.loading import meta

    generator = OneStepGenerator(meta(arch), timestep, lora_rank, lora_alpha, list(lora_targets))
    return generator.to("meta")


def meta_discriminator(
    arch: str = "sdxl",
    lora_rank: int = 16,
    lora_alpha: float = 16,
    lora_targets=LORA_TARGETS,
    head_hidden: int = 512,
):
    """The full-size DiffusionDiscriminator (down + mid blocks, LoRA, patch head) on the meta device."""
    from d3sr.models.discriminator import DiffusionDiscriminator
    from d3sr.models.loading import meta

    with torch.device("meta"):
        disc = DiffusionDiscriminator(
            meta(arch, with_vae=False), lora_rank, lora_alpha, list(lora_targets), head_hidden
        )
    return disc.to("meta")


def generator_params(**kwargs) -> ParamCounts:
    """Parameters of the full-size generator: total, trainable (LoRA), and the frozen UNet and VAE."""
    g = meta_generator(**kwargs)
    counts = count_params(g, {"unet": g.unet, "vae": g.vae})
    return counts


def discriminator_params(arch: str = "sdxl", **kwargs) -> ParamCounts:
    """Parameters of a full-size discriminator: the kept UNet part (frozen), its LoRA and the head (trainable)."""
    d = meta_discriminator(arch, **kwargs)
    return count_params(d, {"unet": d.unet, "head": d.head})


@dataclass
class MacCounts:
    """Multiply-accumulates (MACs = FLOPs/2) of one generator forward pass, by part and by kind."""

    size: int
    total: int
    conv_linear: int
    attention: int
    lora: int
    parts: dict[str, int]


def _is_attention_product(op) -> bool:
    name = str(op)
    return "bmm" in name or "scaled_dot_product" in name


def generator_macs(size: int = 512, **kwargs) -> MacCounts:
    """MACs of the full-size generator producing a `size`×`size` output (batch 1), counted on the meta device."""
    check_positive("size", size)
    if size % 8:
        raise ConfigError(f"size must be a multiple of 8 (the VAE's downscaling factor), got {size}")
    g = meta_generator(**kwargs)
    counter = FlopCounterMode(display=False, depth=None)
    lq = torch.zeros(1, 3, size, size, device="meta")
    with counter, torch.no_grad():
        g(lq)
    flops = counter.get_flop_counts()
    root = type(g).__name__
    total = counter.get_total_flops()
    attention = sum(v for op, v in flops["Global"].items() if _is_attention_product(op))
    lora = sum(
        sum(ops.values()) for name, ops in flops.items() if name.endswith((".lora_A.default", ".lora_B.default"))
    )
    parts = {part: sum(flops.get(f"{root}.{part}", {}).values()) for part in ("vae.encoder", "unet", "vae.decoder")}
    return MacCounts(
        size=size,
        total=total // 2,
        conv_linear=(total - attention) // 2,
        attention=attention // 2,
        lora=lora // 2,
        parts={k: v // 2 for k, v in parts.items()},
    )


def _m(n: int) -> str:
    return f"{n / 1e6:,.2f}"


def _g(n: int) -> str:
    return f"{n / 1e9:,.1f}"


def params_table(generator: ParamCounts, discriminators: dict[str, ParamCounts] | None = None) -> str:
    """Markdown tables of parameter counts (millions) next to the paper's 966.3 M."""
    g = generator
    lines = [
        "Generator (inference network; full size, counted on the meta device)",
        "",
        "| part | ours (M) | paper (M) |",
        "|---|---|---|",
        f"| UNet, SD 2.1-base (frozen) | {_m(g.parts['unet'])} | |",
        f"| VAE, SD (frozen; encoder + decoder) | {_m(g.parts['vae'])} | |",
        f"| LoRA r16 on the UNet (trainable) | {_m(g.lora)} | |",
        f"| **total** | **{_m(g.total)}** | **{paper.TABLE3['params_m']:,.1f}** |",
        f"| trainable | {_m(g.trainable)} | |",
    ]
    if discriminators:
        lines += [
            "",
            "Discriminators (training only; UNet conv_in, time embeddings, down blocks, mid block; LoRA; patch head)",
            "",
            "| variant | total (M) | frozen UNet part (M) | LoRA (M) | head (M) | trainable (M) |",
            "|---|---|---|---|---|---|",
        ]
        for name, d in discriminators.items():
            lines.append(
                f"| {name} | {_m(d.total)} | {_m(d.parts['unet'])} | {_m(d.lora)} | {_m(d.parts['head'])} "
                f"| {_m(d.trainable)} |"
            )
    return "\n".join(lines) + "\n"


def complexity_table(params: ParamCounts, macs: MacCounts) -> str:
    """The Table 3 columns for our generator next to the paper's D³SR column (Markdown)."""
    t3 = paper.TABLE3
    lines = [
        f"Complexity of the generator at {macs.size}×{macs.size} output (batch 1; paper: Table 3, D³SR column)",
        "",
        "| | ours | paper |",
        "|---|---|---|",
        f"| steps (UNet calls) | 1 | {t3['steps']:.0f} |",
        f"| parameters (M) | {_m(params.total)} | {t3['params_m']:,.1f} |",
        f"| MACs (G), conv + linear layers | {_g(macs.conv_linear)} | {t3['macs_g']:,.0f} |",
        f"| MACs (G), all incl. attention products | {_g(macs.total)} | |",
        "",
        "| MACs by part (G) | VAE encoder | UNet (incl. LoRA) | VAE decoder | of which LoRA | attention QKᵀ, AV |",
        "|---|---|---|---|---|---|",
        f"| ours | {_g(macs.parts['vae.encoder'])} | {_g(macs.parts['unet'])} | {_g(macs.parts['vae.decoder'])} "
        f"| {_g(macs.lora)} | {_g(macs.attention)} |",
        "",
        "Time is not counted here (see bench/; the paper: 0.11 s on one A100-40GB).",
    ]
    return "\n".join(lines) + "\n"


def complexity_report(size: int = 512, **kwargs) -> str:
    """Parameters and MACs of the generator as Markdown (what `python -m d3sr.complexity` prints)."""
    macs = generator_macs(size, **kwargs)  # first: it checks `size`
    return complexity_table(generator_params(**kwargs), macs)
