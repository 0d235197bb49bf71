"""The README.md model card `d3sr.export` writes into every bundle (Hugging Face model-card metadata + a summary).

The YAML header carries what the Hub reads: `base_model`, `license` (of the base weights the bundle needs),
`library_name: diffusers`, `pipeline_tag` and `tags`. The body says how the bundle was trained (from the run config
stored in the checkpoint) and how to use and evaluate it.
"""

from __future__ import annotations

import json

# Licences of the base weights a bundle runs on (the bundle's LoRA is a derivative of them).
BASE_LICENSES = {
    "stabilityai/stable-diffusion-2-1-base": "openrail++",  # CreativeML Open RAIL++-M
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "creativeml-openrail-m",
}
TAGS = ["super-resolution", "image-to-image", "one-step-diffusion", "d3sr", "lora", "stable-diffusion"]


def _base_model(backbone: dict) -> tuple[str, str]:
    """(base model id or description, licence) of a GeneratorSpec's backbone node."""
    target = str(backbone.get("_target_", ""))
    if target.endswith(".pretrained"):
        model = str(backbone.get("model"))
        return model, BASE_LICENSES.get(model, "other")
    if target.endswith(".pretrained_tiny"):
        return "d3sr tiny demo backbone (d3sr/assets/tiny_backbone)", "apache-2.0"
    return f"random test preset ({target.rsplit('.', 1)[-1]})", "apache-2.0"


def _describe_discriminator(node: dict | None) -> str:
    """'none', 'PixelDiscriminator', or 'DiffusionDiscriminator on <base model id | builder (kind)>'."""
    if not node:
        return "none"
    name = str(node.get("_target_", "?")).rsplit(".", 1)[-1]
    backbone = node.get("backbone")
    if not backbone:
        return name
    builder = str(backbone.get("_target_", "?")).rsplit(".", 1)[-1]
    base = backbone.get("model") or f"{builder} ({backbone.get('kind', backbone.get('name', ''))})"
    return f"{name} on {base}"


def model_card(bundle: dict, config: dict | None, evaluation: dict | None = None) -> str:
    """Markdown with a YAML header for a bundle described by its d3sr_bundle.json content `bundle`.

    config: the resolved training config stored in the checkpoint (None if absent); evaluation: an optional
    `summary.json` of `python -m d3sr.evaluate` on this bundle, whose means are listed.
    """
    generator = bundle["generator"]
    base, license_ = _base_model(generator["backbone"])
    header = {"base_model": base if "/" in base and " " not in base else None, "license": license_,
              "library_name": "diffusers", "pipeline_tag": "image-to-image", "tags": TAGS}  # fmt: skip
    lines = ["---"] + [f"{k}: {json.dumps(v)}" for k, v in header.items() if v is not None] + ["---", ""]
    source = bundle["source"]
    lines += [
        "# D³SR one-step ×4 super-resolution (d3sr bundle)",
        "",
        "One-step diffusion real-world super-resolution trained with a large diffusion discriminator and an "
        "edge-aware DISTS loss (Li et al., NeurIPS 2025, arXiv:2410.04224), exported by d3sr "
        f"{bundle['d3sr_version']}.",
        "",
        "## Training",
        "",
        f"- base model: {base} (licence of its weights: {license_})",
        f"- iteration: {source['iteration']}; weights: {bundle['weights']}"
        + ("; EMA of the trained weights" if source.get("ema") else ""),
        f"- T_L = {generator['timestep']}, LoRA r {generator['lora_rank']} / α {generator['lora_alpha']}, "
        f"VAE posterior: {generator.get('posterior', 'mode')}",
    ]
    if config:
        model, loss = config.get("model", {}), config.get("loss", {})
        lines += [
            f"- discriminator: {_describe_discriminator(model.get('discriminator'))}",
            f"- loss: λ_mse {loss.get('lambda_mse')}, λ2 (perceptual) {loss.get('lambda_ea_dists')}, "
            f"λ1 (adversarial) {loss.get('lambda_adv')}",
            f"- data: {config.get('data', {}).get('train', {}).get('_target_', '?').rsplit('.', 1)[-1]}, "
            f"crops {config.get('data', {}).get('crop_size')}², batch {config.get('data', {}).get('batch_size')}; "
            f"degradation: {str(config.get('degradation', {}).get('_target_', '?')).rsplit('.', 1)[-1]}",
            f"- iterations configured: {config.get('iterations')}, seed {config.get('seed')}",
        ]
    lines += ["", "## Evaluation", ""]
    if evaluation:
        means = evaluation.get("means", {})
        lines += [f"Protocol: {json.dumps(evaluation.get('protocol', {}))}", "", "| metric | mean |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in means.items()]
    else:
        lines += ["Not evaluated at export. Run `python -m d3sr.evaluate bundle=THIS_FOLDER lq=... hr=...` and "
                  "re-export with `evaluation=<its summary.json>` to list the results here."]  # fmt: skip
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from PIL import Image",
        "from d3sr.inference import D3SRPipeline",
        'pipe = D3SRPipeline.from_pretrained("THIS_FOLDER")   # needs the base model weights',
        'sr = pipe(Image.open("photo.jpg"))                    # ×4',
        "```",
        "",
    ]
    return "\n".join(lines)
