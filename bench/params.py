"""Parameter counts of the full-size networks (meta device: no weights, no downloads), next to the paper's 966.3 M.

    python bench/params.py            # Markdown tables on stdout

The LoRA settings and the head width are the defaults of d3sr/evaluation/model_complexity.py, which
tests/evaluation/test_complexity.py keeps equal to conf/model/generator/sd21.yaml and conf/model/discriminator/*.yaml.
"""

from __future__ import annotations

from d3sr.evaluation.model_complexity import discriminator_params, generator_params, params_table


def main() -> None:
    discriminators = {arch: discriminator_params(arch) for arch in ("sdxl", "sd21", "sd15")}
    print(params_table(generator_params(), discriminators))


if __name__ == "__main__":
    main()
