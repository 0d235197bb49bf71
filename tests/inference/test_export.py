"""d3sr.export: bundle contents, the diffusers LoRA format, merged UNets, atomic writing and overwrite refusal."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from d3sr.errors import D3SRError
from d3sr.models.loading import tiny
from d3sr.models.saved_generator import export_bundle


def test_bundle_holds_lora_embedding_and_description(trained):
    files = {p.name for p in trained.bundle.iterdir()}
    assert files == {"d3sr_bundle.json", "pytorch_lora_weights.safetensors", "prompt_embeds.safetensors", "README.md"}
    info = json.loads((trained.bundle / "d3sr_bundle.json").read_text())
    gen = trained.generator
    spec = info["generator"]
    assert info["weights"] == "lora" and info["format_version"] == 2
    assert spec["backbone"] == {"_target_": "d3sr.models.loading.tiny", "kind": "sd", "seed": 0}
    assert spec["timestep"] == gen.timestep == 399 and spec["scaling_factor"] == gen.scaling_factor
    assert spec["lora_rank"] == 16 and spec["lora_alpha"] == 16 and info["lora_scale"] == 1.0
    assert spec["lora_targets"] == gen.lora_targets
    assert info["source"]["iteration"] == 1 and info["d3sr_version"]
    torch.testing.assert_close(load_file(trained.bundle / "prompt_embeds.safetensors")["prompt_embeds"],
                               gen.prompt_embeds, rtol=0, atol=0)  # fmt: skip


def test_lora_file_is_what_diffusers_loaders_read(trained):
    path = trained.bundle / "pytorch_lora_weights.safetensors"
    with safe_open(str(path), "pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
    assert keys and all(k.startswith("unet.") and (".lora_A." in k or ".lora_B." in k) for k in keys)
    config = json.loads(metadata["lora_adapter_metadata"])
    assert config["unet.r"] == 16 and config["unet.lora_alpha"] == 16
    # A plain UNet given the file by diffusers' own loader computes what the trained generator computes.
    unet = tiny("sd", seed=0).unet.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unet.load_lora_adapter(trained.bundle, weight_name="pytorch_lora_weights.safetensors", prefix="unet")
    z, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([399])
    context = trained.generator.prompt_embeds
    with torch.no_grad():
        expected = trained.generator.unet(z, t, encoder_hidden_states=context).sample
        base = tiny("sd", seed=0).unet.eval()(z, t, encoder_hidden_states=context).sample
        torch.testing.assert_close(unet(z, t, encoder_hidden_states=context).sample, expected, rtol=0, atol=1e-5)
    assert (expected - base).abs().max() > 1e-2  # the LoRA is not a no-op, so the check above means something


def test_merged_bundle_holds_a_diffusers_unet(trained):
    from diffusers import UNet2DConditionModel

    assert {p.name for p in trained.merged.iterdir()} == {"d3sr_bundle.json", "prompt_embeds.safetensors", "unet",
                                                          "README.md"}  # fmt: skip
    unet = UNet2DConditionModel.from_pretrained(trained.merged / "unet").eval()
    assert not any("lora" in name for name, _ in unet.named_parameters())
    z, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([399])
    context = trained.generator.prompt_embeds
    with torch.no_grad():
        expected = trained.generator.unet(z, t, encoder_hidden_states=context).sample
        torch.testing.assert_close(unet(z, t, encoder_hidden_states=context).sample, expected, rtol=0, atol=1e-4)


def test_refuses_non_empty_output_unless_overwrite(trained, tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    with pytest.raises(D3SRError, match="not empty"):
        export_bundle(trained.checkpoint, out)
    assert (out / "keep.txt").read_text() == "user file"
    export_bundle(trained.checkpoint, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "d3sr_bundle.json").is_file()
    # Written through a hidden staging folder that is gone afterwards; an empty existing folder is fine.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    (tmp_path / "empty").mkdir()
    export_bundle(trained.checkpoint, tmp_path / "empty")
    assert (tmp_path / "empty" / "pytorch_lora_weights.safetensors").is_file()


def test_export_command_line_config(trained, tmp_path, compose):
    from d3sr.export import run

    cfg = compose([f"ckpt={trained.checkpoint}", f"output={tmp_path / 'b'}", "merge=true"], config_name="export")
    assert (run(cfg) / "unet" / "config.json").is_file()
    with pytest.raises(D3SRError, match="usage"):
        run(compose([], config_name="export"))
    with pytest.raises(D3SRError, match="does not exist"):
        export_bundle(tmp_path / "missing.ckpt", tmp_path / "c")


def test_bundle_model_card_has_hub_metadata_and_the_training_summary(trained, tmp_path):
    import yaml

    text = (trained.bundle / "README.md").read_text()
    _, header, body = text.split("---\n", 2)
    meta = yaml.safe_load(header)
    assert meta["library_name"] == "diffusers" and "super-resolution" in meta["tags"]
    assert meta["license"] == "apache-2.0" and "base_model" not in meta  # a random test preset, no hub base
    assert "iteration: 1" in body and "T_L = 399" in body and "Not evaluated at export" in body
    # A pretrained SD 2.1 base names its hub id and its licence; an evaluation summary is listed.
    from d3sr.models.model_card import model_card

    bundle = json.loads((trained.bundle / "d3sr_bundle.json").read_text())
    bundle["generator"]["backbone"] = {"_target_": "d3sr.models.loading.pretrained",
                                       "model": "stabilityai/stable-diffusion-2-1-base"}  # fmt: skip
    summary = {"means": {"psnr_y": 24.11, "lpips": 0.2961}, "protocol": {"color": "y", "images": "whole"}}
    card = model_card(bundle, {"loss": {"lambda_adv": 0.005}, "model": {"discriminator": None}}, summary)
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    assert meta["base_model"] == "stabilityai/stable-diffusion-2-1-base" and meta["license"] == "openrail++"
    assert "| psnr_y | 24.1100 |" in card and "λ1 (adversarial) 0.005" in card and "discriminator: none" in card

    (tmp_path / "summary.json").write_text(json.dumps(summary))
    out = export_bundle(trained.checkpoint, tmp_path / "evaluated", evaluation=tmp_path / "summary.json")
    assert "| lpips | 0.2961 |" in (out / "README.md").read_text()
    with pytest.raises(D3SRError, match="not a readable summary.json"):
        export_bundle(trained.checkpoint, tmp_path / "other", evaluation=tmp_path / "missing.json")
