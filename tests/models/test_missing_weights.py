"""A run whose weights are missing says everything that is missing in one message (VGG16, SD, SDXL together)."""

from __future__ import annotations

import pytest

from d3sr.errors import D3SRError
from d3sr.models import D3SRModule


def test_every_missing_weight_source_in_one_message(compose, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose(["experiment=sdxl_disc", f"paths.output_dir={tmp_path}", f"paths.sd21={tmp_path / 'no_sd21'}",
                   f"paths.sdxl={tmp_path / 'no_sdxl'}"])  # fmt: skip
    with pytest.raises(D3SRError) as raised:
        D3SRModule.from_config(cfg)
    message = str(raised.value)
    # The loss network's VGG16 first (TORCH_HOME is empty in tests), then SD 2.1's and SDXL's folders.
    assert message.startswith("ImageNet VGG16 weights for DISTS not found") and "vgg16-397923af.pth" in message
    assert "2 more part(s) of this run cannot be built:\n[model.generator] " in message
    assert "\n[model.discriminator] " in message
    assert f"{tmp_path / 'no_sd21'} does not exist" in message
    assert f"{tmp_path / 'no_sdxl'} does not exist" in message


def test_one_missing_source_keeps_its_own_message(compose, tmp_path):
    cfg = compose(
        ["experiment=demo", f"paths.output_dir={tmp_path}", "loss.perceptual.dists.pretrained_backbone=true"]
    )
    with pytest.raises(D3SRError) as raised:
        D3SRModule.from_config(cfg)
    assert str(raised.value).startswith("ImageNet VGG16 weights for DISTS not found")


def test_built_parts_are_the_modules_parts(compose, tmp_path):
    module = D3SRModule.from_config(compose(["experiment=demo", f"paths.output_dir={tmp_path}"]))
    assert type(module.discriminator).__name__ == "DiffusionDiscriminator"
    assert module.config["model"]["generator"]["lora_rank"] == module.generator.lora_rank
