"""Loading real diffusers folders (written here from tiny models of the real classes) and the missing-weights error."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from d3sr.errors import D3SRError
from d3sr.models import architectures as arch
from d3sr.models.discriminator import DiffusionDiscriminator
from d3sr.models.generator import OneStepGenerator
from d3sr.models.loading import pretrained


def tiny_tokenizer(folder):
    """A CLIP BPE tokenizer with a minimal vocabulary (enough for the empty prompt)."""
    folder.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2, "a</w>": 3}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!", model_max_length=77
    )
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def text_config(hidden: int, projection: int | None = None) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=4, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                          pad_token_id=2, projection_dim=projection or hidden)  # fmt: skip


def write_diffusers_folder(root, kind: str):
    """A diffusers Stable Diffusion (kind='sd') or SDXL pipeline folder with tiny random weights."""
    torch.manual_seed(0)
    parts = {
        "unet": UNet2DConditionModel(**(arch.TINY_UNET_SDXL if kind == "sdxl" else arch.TINY_UNET_SD)),
        "vae": AutoencoderKL(**arch.TINY_VAE),
        "scheduler": DDPMScheduler(**arch.SCHEDULER),
        "tokenizer": tiny_tokenizer(root / "tokenizer_src"),
        "text_encoder": CLIPTextModel(text_config(32)),
    }
    if kind == "sd":
        pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)  # fmt: skip
    else:
        parts["tokenizer_2"] = parts["tokenizer"]
        parts["text_encoder_2"] = CLIPTextModelWithProjection(text_config(32, projection=32))
        pipe = StableDiffusionXLPipeline(**parts)
    pipe.save_pretrained(root)
    shutil.rmtree(root / "tokenizer_src")
    return root


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return write_diffusers_folder(tmp_path_factory.mktemp("tiny-sd"), "sd")


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    return write_diffusers_folder(tmp_path_factory.mktemp("tiny-sdxl"), "sdxl")


def test_sd_folder_loads_and_embeds_match_the_diffusers_pipeline(sd_folder, tmp_path):
    backbone = pretrained(str(sd_folder), kind="sd", embeds_cache=str(tmp_path), local_files_only=True)
    pipe = StableDiffusionPipeline.from_pretrained(str(sd_folder))
    expected, _ = pipe.encode_prompt("", "cpu", 1, do_classifier_free_guidance=False)
    torch.testing.assert_close(backbone.embeds["prompt_embeds"], expected)
    torch.testing.assert_close(backbone.alphas_cumprod, pipe.scheduler.alphas_cumprod)
    generator = OneStepGenerator(backbone)
    sr, _ = generator(torch.zeros(1, 3, 32, 32))
    assert sr.shape == (1, 3, 32, 32)


def test_sdxl_folder_embeds_match_the_diffusers_sdxl_pipeline(sdxl_folder, tmp_path):
    backbone = pretrained(str(sdxl_folder), kind="sdxl", with_vae=False, embeds_cache=str(tmp_path))
    assert backbone.vae is None
    pipe = StableDiffusionXLPipeline.from_pretrained(str(sdxl_folder))
    prompt_embeds, _, pooled, _ = pipe.encode_prompt("", device="cpu", do_classifier_free_guidance=False)
    torch.testing.assert_close(backbone.embeds["prompt_embeds"], prompt_embeds)
    torch.testing.assert_close(backbone.embeds["pooled_prompt_embeds"], pooled)
    logits = DiffusionDiscriminator(backbone)(torch.randn(2, 4, 16, 16))
    assert logits.shape == (2, 1, 8, 8) and torch.isfinite(logits).all()


def test_embeddings_are_cached_so_text_encoders_are_not_needed_again(sd_folder, tmp_path):
    first = pretrained(str(sd_folder), kind="sd", embeds_cache=str(tmp_path / "cache"))
    copy = tmp_path / "copy"
    shutil.copytree(sd_folder, copy)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    # The cache is keyed on the model path: a copy without text encoders fails until its own cache exists.
    shutil.rmtree(copy / "text_encoder")
    with pytest.raises(D3SRError):
        pretrained(str(copy), kind="sd", embeds_cache=str(tmp_path / "cache"))
    again = pretrained(str(sd_folder), kind="sd", embeds_cache=str(tmp_path / "cache"))
    torch.testing.assert_close(again.embeds["prompt_embeds"], first.embeds["prompt_embeds"])


def test_missing_weights_give_one_message_naming_what_and_how(tmp_path):
    with pytest.raises(D3SRError) as info:
        pretrained(str(tmp_path / "nowhere"), kind="sdxl", env_var="D3SR_SDXL", local_files_only=True)
    message = str(info.value)
    # A value that names a folder is reported as a missing folder, not looked up as a hub id.
    assert "SDXL" in message and "D3SR_SDXL" in message and "text_encoder_2" in message
    assert f"the local folder {tmp_path / 'nowhere'} does not exist" in message and "hub id '" not in message
    with pytest.raises(D3SRError, match="hub id 'someone/missing-model'.*\n.*\nFix: .*hf download"):
        pretrained("someone/missing-model", kind="sd", local_files_only=True)


@pytest.mark.parametrize(
    "value, is_path",
    [
        ("/models/sd21", True),
        ("./sd21", True),
        ("~/sd21", True),
        ("a/b/c", True),
        ("stabilityai/stable-diffusion-2-1-base", False),
    ],
)
def test_folder_values_are_told_from_hub_ids(value, is_path):
    from d3sr.models.loading import looks_like_path

    assert looks_like_path(value) == is_path


def test_v_prediction_base_is_refused(sd_folder, tmp_path):
    folder = tmp_path / "vpred"
    shutil.copytree(sd_folder, folder)
    DDPMScheduler(**arch.SCHEDULER, prediction_type="v_prediction").save_pretrained(folder / "scheduler")
    with pytest.raises(D3SRError, match="v_prediction"):
        pretrained(str(folder), kind="sd", embeds_cache=str(tmp_path / "cache"))


def test_demo_latent_channels_have_one_owner(tmp_path, compose):
    """The random demo-shaped UNet (Table 4b's demo_scratch row) takes the shipped backbone's latent channels, which
    pretrain_tiny takes from architectures.DEMO_LATENT_CHANNELS: no config writes the number again."""
    from hydra.utils import instantiate

    from d3sr.models.loading import demo_latent_channels, tiny

    assert demo_latent_channels() == arch.DEMO_LATENT_CHANNELS == 12
    unet = tiny("sd", with_vae=False, latent_channels="demo").unet
    assert unet.config.in_channels == unet.config.out_channels == arch.DEMO_LATENT_CHANNELS
    assert compose(config_name="pretrain_tiny").latent_channels is None  # null: DEMO_LATENT_CHANNELS
    disc = instantiate(compose(["model/discriminator=demo_scratch"]).model.discriminator)
    assert disc.backbone_source["latent_channels"] == arch.DEMO_LATENT_CHANNELS
    with pytest.raises(D3SRError, match="latent channels"):
        demo_latent_channels(tmp_path)
