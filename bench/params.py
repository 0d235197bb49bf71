"""Parameter counts of the full-size networks (meta device: no weights, no downloads), next to the paper's 966.3 M.

    python bench/params.py            # Markdown tables on stdout

LoRA settings are read from conf/model/generator/sd21.yaml and conf/model/discriminator/{sdxl,sd21,sd15}.yaml.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from d3sr.evaluation.complexity import discriminator_params, generator_params, params_table

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def main() -> None:
    g = OmegaConf.load(CONF / "generator" / "sd21.yaml")
    generator = generator_params(lora_rank=g.lora_rank, lora_alpha=g.lora_alpha, lora_targets=list(g.lora_targets))
    discriminators = {}
    for arch in ("sdxl", "sd21", "sd15"):
        d = OmegaConf.load(CONF / "discriminator" / f"{arch}.yaml")
        discriminators[arch] = discriminator_params(
            arch, lora_rank=d.lora_rank, lora_alpha=d.lora_alpha, lora_targets=list(d.lora_targets),
            head_hidden=d.head_hidden,
        )  # fmt: skip
    print(params_table(generator, discriminators))


if __name__ == "__main__":
    main()
